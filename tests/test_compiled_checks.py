"""Physical checks on the compiled path: the cell list's error bitmask.

Atoms closer than ``r_min`` and non-finite positions are flagged inside jitted
``CellList.update`` (and ``lax.scan`` loops of it), stay flagged, and the host-side
``CellListState.check`` names the atoms; buffer overflow is reported distinctly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from mlip.kernels.cell_list import CellList, CellListError, CellListOverflowError, build_cell_list
from mlip.model import make_model_functions

from conftest import random_structure

SKIN = 0.6  # one moving atom: rebuild once it moved more than 0.6 Å
STEP = 0.25  # Å per step: a rebuild every third step
N_STEPS = 14


@pytest.fixture(scope="module")
def silicon():
    """64-atom diamond Si (nearest neighbours 2.35 Å) and a neighbour pair (0, b)."""
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(2)
    positions, cell = atoms.positions.copy(), atoms.cell.array.copy()
    distances = atoms.get_distances(0, range(1, len(atoms)), mic=True)
    b = 1 + int(np.argmin(distances))
    return positions, cell, b


_compiled = {}  # one jitted update and scan per CellList (compiling dominates these tests)


def jitted(cell_list):
    """``(update, scan)``: jitted ``cell_list.update`` and a ``lax.scan`` of it."""
    if id(cell_list) not in _compiled:

        def step(carry, positions):
            state, cell = carry
            state = cell_list.update(state, positions, cell)
            return (state, cell), (state.error, state.n_rebuilds)

        scan = jax.jit(lambda state, cell, trajectory: jax.lax.scan(step, (state, cell), trajectory))
        _compiled[id(cell_list)] = (jax.jit(cell_list.update), scan, cell_list)  # keeps the id alive
    return _compiled[id(cell_list)][:2]


def scan_updates(cell_list, state, trajectory, cell):
    """``CellList.update`` over ``trajectory`` inside one jitted ``lax.scan``;
    returns the final state and each step's error bits and rebuild count."""
    (state, _), (errors, rebuilds) = jitted(cell_list)[1](state, jnp.asarray(cell), jnp.asarray(trajectory))
    return state, np.asarray(errors), np.asarray(rebuilds)


@pytest.fixture(scope="module")
def checked():
    """The cell list most tests share: 4 Å cutoff, r_min = 1.2 Å."""
    return CellList(4.0, skin=SKIN, r_min=1.2)


def approach(positions, cell, b, n_steps, step=STEP, back_from=None):
    """Atom 0 walks ``step`` Å per step along the bond onto atom ``b`` (its periodic
    image nearest to 0) and sits on it; from step ``back_from`` on it walks back."""
    target = positions[b] - np.round((positions[b] - positions[0]) @ np.linalg.inv(cell)) @ cell
    bond = target - positions[0]
    length = np.linalg.norm(bond)
    trajectory = np.repeat(positions[None], n_steps, axis=0)
    for k in range(n_steps):
        travelled = min((k + 1) * step, length)
        if back_from is not None and k >= back_from:
            travelled = max(min(back_from * step, length) - (k + 1 - back_from) * step, 0.0)
        trajectory[k, 0] = target if travelled == length else positions[0] + travelled * bond / length
    return trajectory


def test_atom_moved_onto_neighbour_in_scan_raises_sticky_too_close(silicon, checked):
    positions, cell, b = silicon
    cell_list = checked
    state = cell_list.allocate(positions, cell)
    assert state.errors == CellListError.NONE and not state.did_overflow
    trajectory = approach(positions, cell, b, N_STEPS)
    final, errors, rebuilds = scan_updates(cell_list, state, trajectory, cell)
    # distances 2.10, 1.85, 1.60, 1.35, 1.10 (< r_min at step 4), ..., then 0 from step 9 on
    np.testing.assert_array_equal(errors[:4], 0)
    np.testing.assert_array_equal(errors[4:], int(CellListError.TOO_CLOSE))
    assert rebuilds[4] == rebuilds[3]  # first caught between rebuilds (bound, then exact list check)
    assert rebuilds[-1] >= 3  # ... and the rebuilds (2.35 Å of travel) keep it flagged
    assert final.errors == CellListError.TOO_CLOSE and not final.did_overflow
    with pytest.raises(ValueError, match=rf"atoms 0 and {b} are 0\.0000 Å apart, closer than r_min = 1\.2 Å"):
        final.check(trajectory[-1])
    # the first flagged step, checked with its own positions, names the same pair and distance
    with pytest.raises(ValueError, match=rf"atoms 0 and {b} are 1\.101\d Å apart"):
        final.check(trajectory[4])


def test_too_close_stays_raised_after_the_atoms_separate(silicon, checked):
    positions, cell, b = silicon
    cell_list = checked
    trajectory = approach(positions, cell, b, N_STEPS, back_from=7)  # closest 0.60 Å at step 6
    assert np.linalg.norm(trajectory[-1, 0] - positions[0]) < 1e-12  # home again
    final, errors, _ = scan_updates(cell_list, cell_list.allocate(positions, cell), trajectory, cell)
    np.testing.assert_array_equal(errors[:4], 0)
    np.testing.assert_array_equal(errors[4:], int(CellListError.TOO_CLOSE))
    with pytest.raises(ValueError, match="came closer than r_min = 1.2 Å during the compiled steps"):
        final.check(trajectory[-1])  # back at 2.1 Å now: nothing to name, but still an error


def test_nan_coordinate_in_scan_raises_sticky_non_finite(silicon, checked):
    positions, cell, _ = silicon
    cell_list = checked
    rng = np.random.default_rng(0)
    trajectory = positions + rng.uniform(-0.05, 0.05, (N_STEPS,) + positions.shape)
    trajectory[5, 17, 1] = np.nan  # one coordinate of atom 17, one step; finite again afterwards
    final, errors, _ = scan_updates(cell_list, cell_list.allocate(positions, cell), trajectory, cell)
    np.testing.assert_array_equal(errors[:5], 0)
    np.testing.assert_array_equal(errors[5:], int(CellListError.NON_FINITE))
    with pytest.raises(ValueError, match=r"positions of atoms \[17\] are NaN or infinite"):
        final.check(trajectory[5])
    with pytest.raises(ValueError, match="NaN or infinite position or cell was seen during the compiled steps"):
        final.check(trajectory[-1])


def test_nan_and_coincident_atoms_under_jit_report_both(silicon, checked):
    positions, cell, b = silicon
    cell_list = checked
    state = cell_list.allocate(positions, cell)
    moved = positions.copy()
    moved[0] = positions[b]
    moved[9] = [np.inf, 0.0, 0.0]
    state = jitted(cell_list)[0](state, moved, cell)
    assert state.errors == CellListError.TOO_CLOSE | CellListError.NON_FINITE
    with pytest.raises(ValueError) as info:
        state.check(moved)
    assert "positions of atoms [9] are NaN or infinite" in str(info.value)
    assert f"atoms 0 and {b} are 0.0000 Å apart" in str(info.value)


def test_healthy_trajectory_raises_nothing(silicon):
    positions, cell, _ = silicon
    cell_list = CellList(4.0, skin=SKIN, r_min=1.5)  # bonds stay above 2.35 - 2 * 0.4 Å
    rng = np.random.default_rng(1)
    directions = rng.normal(size=positions.shape)
    amplitudes = 0.4 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    trajectory = positions + np.sin(0.7 * np.arange(1, N_STEPS + 1))[:, None, None] * amplitudes
    final, errors, rebuilds = scan_updates(cell_list, cell_list.allocate(positions, cell), trajectory, cell)
    np.testing.assert_array_equal(errors, 0)
    assert 0 < rebuilds[-1] < N_STEPS  # both the rebuild and the kept-list paths ran
    final.check(trajectory[-1])  # no exception
    assert final.errors == CellListError.NONE and not final.did_overflow


def test_bound_between_rebuilds_triggers_exact_check_only_when_needed(silicon):
    """Between rebuilds the shortest distance is bounded by the one at the rebuild
    minus twice the largest displacement; a pair inside the bound but outside
    r_min is not flagged, one that crossed r_min is."""
    positions, cell, b = silicon
    cell_list = CellList(4.0, skin=SKIN, r_min=2.2)
    state = cell_list.allocate(positions, cell)
    assert float(state.reference_min_distance) == pytest.approx(5.43 * np.sqrt(3) / 4)
    update = jitted(cell_list)[0]
    near, far = approach(positions, cell, b, 1, step=0.1), approach(positions, cell, b, 1, step=0.2)
    kept = update(state, near[0], cell)  # 2.25 Å: bound 2.15 < r_min, exact check passes
    assert int(kept.n_rebuilds) == 0 and kept.errors == CellListError.NONE
    kept = update(state, far[0], cell)  # 2.15 Å, still no rebuild
    assert int(kept.n_rebuilds) == 0 and kept.errors == CellListError.TOO_CLOSE
    with pytest.raises(ValueError, match=rf"atoms 0 and {b} are 2\.151\d Å apart"):
        kept.check(far[0])


def test_atom_closer_than_r_min_to_its_own_periodic_image():
    cell = np.diag([1.0, 6.0, 6.0])  # atom 0's images along x are 1.0 Å away
    positions = np.array([[0.2, 1.0, 1.0], [0.5, 4.0, 4.0]])
    with pytest.raises(ValueError) as info:
        CellList(3.0, skin=0.0, r_min=1.2).allocate(positions, cell)
    for atom in (0, 1):
        assert f"atom {atom} and its periodic image are 1.0000 Å apart" in str(info.value)
    CellList(3.0, skin=0.0, r_min=0.9).allocate(positions, cell)  # fine


def test_allocate_rejects_and_names_bad_atoms_but_not_padding_rows(silicon, checked):
    positions, cell, b = silicon
    cell_list = checked
    coincident = positions.copy()
    coincident[0] = positions[b]
    with pytest.raises(ValueError, match=rf"atoms 0 and {b} are 0\.0000 Å apart, closer than r_min = 1\.2 Å"):
        cell_list.allocate(coincident, cell)
    broken = positions.copy()
    broken[[3, 11], 2] = np.nan
    with pytest.raises(ValueError, match=r"positions of atoms \[3, 11\] are NaN or infinite"):
        cell_list.allocate(broken, cell)
    # padding rows may hold anything, in allocate and in update
    padded = np.concatenate([positions, np.zeros((4, 3)), np.full((2, 3), np.nan)])
    mask = np.arange(len(padded)) < len(positions)
    state = cell_list.allocate(padded, cell, atom_mask=mask)
    state = jax.jit(cell_list.update)(state, padded + 0.4 * mask[:, None], cell)  # other shapes: own jit
    assert int(state.n_rebuilds) == 1 and state.errors == CellListError.NONE


def test_r_min_zero_checks_only_finiteness(silicon):
    positions, cell, b = silicon
    cell_list = CellList(4.0, skin=SKIN)  # r_min = 0: no distance check
    state = cell_list.allocate(positions, cell)
    assert np.isinf(float(state.reference_min_distance))
    update = jitted(cell_list)[0]
    moved = positions.copy()
    moved[0] = positions[b]
    state = update(state, moved, cell)
    assert state.errors == CellListError.NONE
    moved[1, 0] = np.nan
    state = update(state, moved, cell)
    assert state.errors == CellListError.NON_FINITE
    with pytest.raises(ValueError, match=r"atoms \[1\]"):
        state.check(moved)
    with pytest.raises(ValueError, match="r_min"):
        CellList(4.0, r_min=4.5)


def test_overflow_is_reported_distinctly_and_still_reallocates():
    rng = np.random.default_rng(7)
    cell = np.diag([9.0, 9.5, 10.0]) + rng.uniform(-0.8, 0.8, (3, 3))
    positions = rng.uniform(0, 1, (60, 3)) @ cell
    cell_list = CellList(3.0, skin=0.6, r_min=0.1)
    state = cell_list.allocate(positions, cell)
    update = jax.jit(cell_list.update)
    squeezed = update(state, 0.7 * positions, 0.7 * cell)  # denser, and bins too narrow
    assert squeezed.did_overflow and bool(squeezed.overflow)
    assert squeezed.errors == CellListError.OVERFLOW
    with pytest.raises(CellListOverflowError, match="reallocate") as info:
        squeezed.check(0.7 * positions)
    assert not isinstance(info.value, ValueError)
    back = update(squeezed, positions, cell)
    assert back.did_overflow  # sticky
    grown = cell_list.allocate(0.7 * positions, 0.7 * cell)
    assert grown.spec.neighbor_capacity > state.spec.neighbor_capacity and not grown.did_overflow
    grown.check(0.7 * positions)
    # a physical problem wins over an overflow (reallocating would not cure it), and says both
    crushed = 0.7 * positions
    crushed[1] = crushed[0]
    both = update(state, crushed, 0.7 * cell)
    assert both.errors == CellListError.OVERFLOW | CellListError.TOO_CLOSE
    with pytest.raises(ValueError, match="atoms 0 and 1 are 0.0000 Å apart.*also overflowed"):
        both.check(crushed)
    # the pure build returns the same bits (falsy when all is well)
    build = jax.jit(build_cell_list, static_argnums=0)
    mask = jnp.ones(len(positions), bool)
    assert not build(state.spec, jnp.asarray(positions), jnp.asarray(cell), mask)[1]
    code = build(state.spec, jnp.asarray(crushed), jnp.asarray(0.7 * cell), mask)[1]
    assert int(code) == CellListError.OVERFLOW | CellListError.TOO_CLOSE


def test_coincident_atoms_through_cell_list_and_model_are_flagged(model):
    """The issue's reproduction: coincident atoms fed through CellList and the
    compiled model give no finite energy; the state says why and who."""
    atoms = random_structure(seed=61, n_atoms=10)
    positions, cell = atoms.positions.copy(), atoms.cell.array.copy()
    species = jnp.asarray(model.species_indices(atoms.get_chemical_symbols()))
    cell_list = CellList(model.cutoff, skin=0.5, r_min=model.config.r_min)
    functions = make_model_functions(model.config)

    @jax.jit
    def step(state, positions):
        state = cell_list.update(state, positions, cell)
        return state, functions.energy_forces_virial(model.params, positions, cell, species, state.nl).energy

    state = cell_list.allocate(positions, cell)
    state, energy = step(state, positions)
    assert np.isfinite(float(energy)) and state.errors == CellListError.NONE
    positions[4] = positions[7]
    state, energy = step(state, positions)
    assert state.errors == CellListError.TOO_CLOSE
    with pytest.raises(ValueError, match=r"atoms 4 and 7 are 0\.0000 Å apart, closer than r_min = 0\.8 Å"):
        state.check(positions)
