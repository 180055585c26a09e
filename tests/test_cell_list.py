"""Jit-compiled cell list against ASE's neighbour list; Verlet skin; overflow and growth."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlip.kernels.cell_list import CellList, build_cell_list
from mlip.kernels.neighbor_list import host_pairs, pairs_from_dense
from mlip.model import make_model_functions
from mlip.batch import pad_structure

from conftest import ase_pairs, canonical, deformed, random_neighbor_case, random_structure, within_cutoff


def face_distances(cell):
    """Distances between opposite faces of the cell, Å."""
    volume = abs(np.linalg.det(cell))
    return [volume / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)]


def assert_same_pairs(nl, positions, cell, pbc, cutoff):
    reference = canonical(*ase_pairs(positions, cell, pbc, cutoff))
    np.testing.assert_array_equal(canonical(*pairs_from_dense(nl)), reference)
    return len(reference)


_build = jax.jit(build_cell_list, static_argnums=0)


def jit_built(state, positions, cell, atom_mask=None):
    """The list of the jit build for ``state``'s sizes (allocation packs host pairs)."""
    mask = jnp.ones(len(positions), bool) if atom_mask is None else jnp.asarray(atom_mask)
    nl, error = _build(state.spec, jnp.asarray(positions), jnp.asarray(cell), mask)
    assert int(error) == 0
    assert nl.idx.dtype == state.nl.idx.dtype and nl.shifts.dtype == state.nl.shifts.dtype
    return nl


@pytest.mark.parametrize("seed", range(8))
def test_cell_list_equals_ase_on_random_triclinic_cells(seed):
    """Triclinic, open, partially periodic and thin cells (several images of an atom)."""
    positions, cell, pbc, cutoff = random_neighbor_case(seed)
    state = CellList(cutoff, skin=0.0, pbc=pbc).allocate(positions, cell)
    assert not state.did_overflow
    assert assert_same_pairs(state.nl, positions, cell, pbc, cutoff) > 0
    assert_same_pairs(jit_built(state, positions, cell), positions, cell, pbc, cutoff)


def test_cell_much_thinner_than_cutoff_enumerates_images():
    cell = np.array([[1.1, 0.0, 0.0], [0.3, 1.3, 0.0], [0.2, -0.1, 0.9]])
    positions = np.array([[0.1, 0.2, 0.3], [0.6, 0.7, 0.4]])
    state = CellList(3.0, skin=0.0).allocate(positions, cell)
    assert state.spec.grid == (1, 1, 1) and min(state.spec.reach) >= 3
    assert assert_same_pairs(state.nl, positions, cell, (True,) * 3, 3.0) > 100
    assert_same_pairs(jit_built(state, positions, cell), positions, cell, (True,) * 3, 3.0)


def test_large_periodic_box_uses_many_bins():
    rng = np.random.default_rng(2)
    cell = np.diag([14.0, 15.0, 16.0]) + rng.uniform(-1, 1, (3, 3))
    positions = rng.uniform(0, 1, (400, 3)) @ cell
    for bins_per_cutoff in (1, 2, 3):
        state = CellList(3.5, skin=0.4, bins_per_cutoff=bins_per_cutoff).allocate(positions, cell)
        assert state.spec.grid == tuple(int(w * bins_per_cutoff // 3.9) for w in face_distances(cell))
        assert state.spec.reach == (bins_per_cutoff,) * 3 and state.spec.n_bins >= 27
        assert_same_pairs(state.nl, positions, cell, (True,) * 3, 3.9)
        assert_same_pairs(jit_built(state, positions, cell), positions, cell, (True,) * 3, 3.9)


def test_bins_holding_more_than_one_word_of_atoms(periodic_case):
    _, _, positions, cell = periodic_case
    state = CellList(3.0, skin=0.6, capacity_multiplier=6.0).allocate(positions, cell)
    assert state.spec.bin_capacity > 32  # hits of a bin span two 32-bit words
    assert_same_pairs(jit_built(state, positions, cell), positions, cell, (True,) * 3, 3.6)


def test_padding_rows_are_neither_atoms_nor_neighbours():
    positions, cell, pbc, cutoff = random_neighbor_case(3)
    n = len(positions)
    padded = np.concatenate([positions, np.zeros((5, 3))])
    mask = np.arange(n + 5) < n
    state = CellList(cutoff, skin=0.0, pbc=pbc).allocate(padded, cell, atom_mask=mask)
    for nl in (state.nl, jit_built(state, padded, cell, mask)):
        idx = np.asarray(nl.idx)
        assert np.all(idx[n:] == n + 5)
        assert not np.any((idx >= n) & (idx < n + 5))
        assert_same_pairs(nl, positions, cell, pbc, cutoff)  # padding rows hold no pairs


@pytest.fixture(scope="module")
def periodic_case():
    rng = np.random.default_rng(7)
    cell = np.diag([9.0, 9.5, 10.0]) + rng.uniform(-0.8, 0.8, (3, 3))
    positions = rng.uniform(0, 1, (60, 3)) @ cell
    cell_list = CellList(3.0, skin=0.6)
    return cell_list, jax.jit(cell_list.update), positions, cell


def assert_holds_cutoff_pairs(nl, positions, cell, pbc, cutoff):
    """Every pair now within ``cutoff`` is listed (the list may hold more)."""
    np.testing.assert_array_equal(within_cutoff(pairs_from_dense(nl), positions, cell, cutoff),
                                  canonical(*ase_pairs(positions, cell, pbc, cutoff)))


def test_skin_reuses_list_under_jit_until_two_atoms_used_it_up(periodic_case):
    cell_list, update, positions, cell = periodic_case
    pbc = (True,) * 3
    state = cell_list.allocate(positions, cell)
    rng = np.random.default_rng(0)
    step = rng.normal(size=positions.shape)
    step *= 0.29 / np.linalg.norm(step, axis=1).max()  # any two atoms together move less than the skin
    moved = positions + step
    state = update(state, moved, cell)
    assert int(state.n_rebuilds) == 0
    assert_holds_cutoff_pairs(state.nl, moved, cell, pbc, 3.0)  # the kept list (radius 3.6)
    moved[4] = positions[4] + [0.35, 0.0, 0.0]  # 0.35 + 0.29 > 0.6
    state = update(state, moved, cell)
    assert int(state.n_rebuilds) == 1
    assert_same_pairs(state.nl, moved, cell, pbc, 3.6)
    # affine deformations: expansion keeps the list; compression by e uses 3.0 e / (1 - e) Å of
    # the skin, so up to e = 1/6 the kept list is still complete
    for strain in (0.001, 0.05, -0.005, -0.16):
        new_positions, new_cell = deformed(moved, cell, strain * np.eye(3))
        state = update(state, new_positions, new_cell)
        assert int(state.n_rebuilds) == 1 and not state.did_overflow
        assert_holds_cutoff_pairs(state.nl, new_positions, new_cell, pbc, 3.0)
    new_positions[4] += [0.0, 0.1, 0.0]  # 3.571 + 0.1 > 3.6
    state = update(state, new_positions, new_cell)
    assert int(state.n_rebuilds) == 2
    if state.did_overflow:  # 69 % denser than at allocation
        state = cell_list.allocate(new_positions, new_cell)
    assert_same_pairs(state.nl, new_positions, new_cell, pbc, 3.6)


@pytest.mark.parametrize("seed", range(6))
def test_jit_list_reused_along_random_deformations_holds_every_pair(seed):
    """Random triclinic cells and pbc, small random cell deformations with atom moves
    (unwrapped, as in MD): whenever the jit list is reused it holds every pair within
    the cutoff, and it is reused on most steps."""
    positions, cell, pbc, cutoff = random_neighbor_case(seed)
    cell_list = CellList(cutoff, skin=0.5, pbc=pbc)
    update = jax.jit(cell_list.update)
    state = cell_list.allocate(positions, cell)
    rng = np.random.default_rng(200 + seed)
    for _ in range(40):
        positions, cell = deformed(positions, cell, rng.uniform(-0.004, 0.004, (3, 3)))
        positions = positions + rng.normal(0.0, 0.02, positions.shape)
        state = update(state, positions, cell)
        if state.did_overflow:
            state = cell_list.allocate(positions, cell)
        assert_holds_cutoff_pairs(state.nl, positions, cell, pbc, cutoff)
    assert int(state.n_rebuilds) <= 25, int(state.n_rebuilds)


def test_compression_overflows_and_reallocation_grows(periodic_case):
    cell_list, update, positions, cell = periodic_case
    state = cell_list.allocate(positions, cell)
    squeezed_cell, squeezed = 0.7 * cell, 0.7 * positions  # denser, and bins too narrow
    state = update(state, squeezed, squeezed_cell)
    assert state.did_overflow
    state = update(state, positions, cell)
    assert state.did_overflow  # the flag stays up until the host reallocates
    grown = cell_list.allocate(squeezed, squeezed_cell)
    assert grown.spec.neighbor_capacity > state.spec.neighbor_capacity
    assert not grown.did_overflow
    assert_same_pairs(grown.nl, squeezed, squeezed_cell, (True,) * 3, 3.6)


def test_each_kind_of_overflow_is_detected(periodic_case):
    cell_list, _, positions, cell = periodic_case
    spec = cell_list.allocate(positions, cell).spec
    mask = jnp.ones(len(positions), bool)
    args = (jnp.asarray(positions), jnp.asarray(cell), mask)

    def overflows(spec, scale=1.0):
        return bool(build_cell_list(spec, scale * args[0], scale * args[1], mask)[1])

    assert not overflows(spec)
    assert overflows(dataclasses.replace(spec, neighbor_capacity=spec.neighbor_capacity // 2))
    assert overflows(dataclasses.replace(spec, bin_capacity=1))
    # shrinking the cell by more than this makes bins narrower than 3.6 Å / reach
    critical = max(3.6 * g / (k * w) for g, k, w in zip(spec.grid, spec.reach, face_distances(cell)))
    roomy = dataclasses.replace(spec, neighbor_capacity=200, bin_capacity=60)
    assert not overflows(roomy, scale=1.01 * critical)
    assert overflows(roomy, scale=0.99 * critical)


def test_open_system_atoms_leaving_the_frame_stay_correct():
    rng = np.random.default_rng(4)
    positions = rng.uniform(0, 12, (40, 3))
    cell_list = CellList(3.0, skin=0.0, pbc=(False, False, False))
    state = cell_list.allocate(positions, np.zeros((3, 3)))
    moved = positions.copy()
    moved[:5] += [30.0, -25.0, 40.0]  # far outside the frame fixed at allocation
    state = jax.jit(cell_list.update)(state, moved, jnp.zeros((3, 3)))
    if not state.did_overflow:  # clipping into edge bins may only ever overflow, never drop
        assert_same_pairs(state.nl, moved, np.zeros((3, 3)), (False,) * 3, 3.0)
    else:
        state = cell_list.allocate(moved, np.zeros((3, 3)))
        assert_same_pairs(state.nl, moved, np.zeros((3, 3)), (False,) * 3, 3.0)


def test_float32_positions_give_the_same_list(periodic_case):
    cell_list, _, positions, cell = periodic_case
    state = cell_list.allocate(jnp.asarray(positions, jnp.float32), jnp.asarray(cell, jnp.float32))
    assert state.nl.idx.dtype == jnp.int32 and state.reference_positions.dtype == jnp.float32
    assert_same_pairs(state.nl, positions, cell, (True,) * 3, 3.6)
    nl = jit_built(state, jnp.asarray(positions, jnp.float32), jnp.asarray(cell, jnp.float32))
    assert_same_pairs(nl, positions, cell, (True,) * 3, 3.6)


def test_model_energy_with_cell_list_equals_host_list(model):
    atoms = random_structure(seed=60, n_atoms=12)
    pairs = host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    padded = pad_structure(model, atoms, pairs)
    positions, cell, species, host_nl = padded.as_jax()
    state = CellList(model.cutoff, skin=0.5).allocate(positions, cell, atom_mask=species >= 0)
    evaluate = jax.jit(make_model_functions(model.config).energy_forces_virial)
    with_host = evaluate(model.params, positions, cell, species, host_nl)
    with_cells = evaluate(model.params, positions, cell, species, jit_built(state, positions, cell, species >= 0))
    assert float(with_cells.energy) == pytest.approx(float(with_host.energy), abs=1e-12)
    np.testing.assert_allclose(with_cells.forces, with_host.forces, atol=1e-12)
    np.testing.assert_allclose(with_cells.virial, with_host.virial, atol=1e-12)
