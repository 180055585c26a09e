"""Host neighbour lists against ASE's reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from mlip.kernels.neighbor_list import (
    VerletNeighborList,
    build_neighbor_list,
    dense_from_pairs,
    host_pairs,
    pairs_from_dense,
)

from conftest import ase_pairs, canonical, deformed, random_neighbor_case, within_cutoff, wrapped


@pytest.mark.parametrize("seed", range(12))
def test_host_list_equals_ase_on_random_triclinic_cells(seed):
    positions, cell, pbc, cutoff = random_neighbor_case(seed)
    ours = canonical(*pairs_from_dense(build_neighbor_list(positions, cell, pbc, cutoff)))
    reference = canonical(*ase_pairs(positions, cell, pbc, cutoff))
    assert len(reference) > 0
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("cell,pbc", [
    (np.zeros((3, 3)), (False, False, False)),
    (np.diag([2.0, 0.0, 0.0]), (True, False, False)),
    (np.array([[2.5, 0.0, 0.0], [1.0, 2.2, 0.0], [0.0, 0.0, 0.0]]), (True, True, False)),
    (np.array([[3.0, 0, 0], [0, 0, 0], [0.5, 0, 1.8]]), (True, False, True)),
])
def test_open_directions_with_degenerate_cell_vectors(cell, pbc):
    positions = np.random.default_rng(0).uniform(-1, 6, (20, 3))
    ours = canonical(*host_pairs(positions, cell, np.array(pbc), 3.0))
    np.testing.assert_array_equal(ours, canonical(*ase_pairs(positions, cell, pbc, 3.0)))


def test_cell_much_thinner_than_cutoff_sees_many_images():
    cell = np.diag([1.1, 1.3, 0.9])
    positions = np.array([[0.1, 0.2, 0.3]])
    i, j, shifts = host_pairs(positions, cell, np.ones(3, bool), 3.0)
    assert np.all(i == 0) and np.all(j == 0)
    assert len(i) > 50 and not np.any(np.all(shifts == 0, axis=1))
    np.testing.assert_array_equal(canonical(i, j, shifts), canonical(*ase_pairs(positions, cell, (True,) * 3, 3.0)))


def test_dense_capacity_grows_instead_of_dropping():
    positions, cell, pbc, cutoff = random_neighbor_case(3)
    i, j, shifts = host_pairs(positions, cell, pbc, cutoff)
    needed = np.bincount(i).max()
    nl = dense_from_pairs(i, j, shifts, len(positions), capacity=max(1, needed // 2), n_padded=len(positions) + 5)
    assert nl.capacity >= needed
    assert nl.idx.shape[0] == len(positions) + 5 and np.all(nl.idx[len(positions):] == len(positions) + 5)
    np.testing.assert_array_equal(canonical(*pairs_from_dense(nl)), canonical(i, j, shifts))


def test_dense_shifts_are_int8_when_they_fit_and_int32_otherwise():
    positions = np.array([[0.1, 0.2, 0.3], [0.5, 0.4, 0.2]])
    i, j, shifts = host_pairs(positions, np.diag([0.3, 1.1, 0.9]), np.ones(3, bool), 2.0)
    order = np.random.default_rng(0).permutation(len(i))  # rows are filled in any input order
    for scale, dtype in [(1, np.int8), (40, np.int32)]:  # |S| up to 7 (fits int8) or 280 (does not)
        nl = dense_from_pairs(i[order], j[order], shifts[order] * scale, len(positions))
        assert nl.shifts.dtype == dtype and nl.shifts.shape == (2, nl.capacity, 3)
        np.testing.assert_array_equal(canonical(*pairs_from_dense(nl)), canonical(i, j, shifts * scale))


def assert_valid(verlet, pairs, positions, cell, pbc):
    """The list holds no duplicate and exactly the pairs of a fresh build within the cutoff."""
    rows = canonical(*pairs)
    assert len(np.unique(rows, axis=0)) == len(rows)
    np.testing.assert_array_equal(within_cutoff(pairs, positions, cell, verlet.cutoff),
                                  canonical(*host_pairs(positions, cell, pbc, verlet.cutoff)))


def test_verlet_list_rebuilds_only_when_two_atoms_used_up_the_skin():
    positions, cell, pbc, cutoff = random_neighbor_case(5)
    verlet = VerletNeighborList(cutoff, skin=0.4)
    verlet.pairs(positions, cell, pbc)
    moved = positions.copy()
    moved[0] += [0.35, 0.0, 0.0]  # one atom alone may use most of the skin
    assert_valid(verlet, verlet.pairs(moved, cell, pbc), moved, cell, pbc)
    moved[0] = positions[0] + [0.19, 0.0, 0.0]
    moved[1] = positions[1] + [0.0, 0.0, -0.2]  # two atoms together: 0.39 <= skin
    moved[2:] += np.random.default_rng(1).normal(size=moved[2:].shape) * 0.01
    assert not verlet.needs_rebuild(moved, cell, pbc)
    assert_valid(verlet, verlet.pairs(moved, cell, pbc), moved, cell, pbc)
    assert verlet.n_builds == 1
    moved[0] = positions[0] + [0.21, 0.0, 0.0]  # 0.41 > skin
    assert verlet.needs_rebuild(moved, cell, pbc)
    assert verlet.n_builds == 1  # asking does not rebuild
    verlet.pairs(moved, cell, pbc)
    assert verlet.n_builds == 2


def test_verlet_list_survives_small_cell_deformations():
    rng = np.random.default_rng(3)
    cell = np.array([[5.4, 0.0, 0.0], [0.8, 5.1, 0.0], [-0.6, 0.7, 5.7]])
    positions = rng.random((30, 3)) @ cell
    pbc = np.ones(3, bool)
    verlet = VerletNeighborList(4.0, skin=0.3)
    verlet.pairs(positions, cell, pbc)
    # expansion never uses up the skin; compression by 1 % uses about 0.04 Å of it
    for scale in (1.05, 1.2, 0.99):
        new_positions, new_cell = deformed(positions, cell, (scale - 1.0) * np.eye(3))
        assert_valid(verlet, verlet.pairs(new_positions, new_cell, pbc), new_positions, new_cell, pbc)
    shear = np.array([[0.0, 0.01, 0.0], [0.0, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    new_positions, new_cell = deformed(positions, cell, shear)
    new_positions += rng.normal(size=positions.shape) * 0.02
    assert_valid(verlet, verlet.pairs(new_positions, new_cell, pbc), new_positions, new_cell, pbc)
    assert verlet.n_builds == 1
    new_positions, new_cell = deformed(positions, cell, -0.1 * np.eye(3))  # 10 %: 0.44 Å > skin
    assert verlet.needs_rebuild(new_positions, new_cell, pbc)
    verlet.pairs(new_positions, new_cell, pbc)
    assert verlet.n_builds == 2


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_wrapped_atoms_keep_the_list_and_its_pair_vectors(pbc):
    positions, cell, _, cutoff = random_neighbor_case(2)
    pbc = np.array(pbc)
    verlet = VerletNeighborList(cutoff, skin=0.3)
    i, j, shifts = verlet.pairs(positions, cell, pbc)
    vectors = positions[j] + shifts @ cell - positions[i]
    translations = np.random.default_rng(0).integers(-2, 3, positions.shape) * pbc
    moved = positions + translations @ cell
    pairs = verlet.pairs(moved, cell, pbc)
    assert verlet.n_builds == 1
    np.testing.assert_array_equal(pairs[0], i)
    np.testing.assert_allclose(moved[pairs[1]] + pairs[2] @ cell - moved[pairs[0]], vectors, atol=1e-12)
    assert_valid(verlet, pairs, moved, cell, pbc)
    # translations along an open direction are real moves
    moved[0, 1] += 10.0
    verlet.pairs(moved, cell, pbc)
    assert verlet.n_builds == 2


@pytest.mark.parametrize("seed", range(12))
def test_reused_lists_equal_fresh_builds_along_random_deformations(seed):
    """Random triclinic cells with random pbc (mixed or periodic; open for the last
    seeds): small random cell deformations with atom moves and occasional wrapping;
    whenever the list is reused, its pairs within the cutoff are exactly those of a
    fresh build."""
    positions, cell, pbc, cutoff = random_neighbor_case(seed)
    if seed >= 10:
        pbc = np.zeros(3, bool)
    rng = np.random.default_rng(100 + seed)
    verlet = VerletNeighborList(cutoff, skin=0.5)
    reused = 0
    for step in range(60):
        if step:
            positions, cell = deformed(positions, cell, rng.uniform(-0.01, 0.01, (3, 3)))
            positions = positions + rng.normal(0.0, 0.03, positions.shape)
            if step % 7 == 0 and pbc.any():
                positions = wrapped(positions, cell, pbc)
        builds = verlet.n_builds
        pairs = verlet.pairs(positions, cell, pbc)
        reused += verlet.n_builds == builds
        assert_valid(verlet, pairs, positions, cell, pbc)
    assert reused >= 30 and verlet.n_builds >= 3, (reused, verlet.n_builds)


def test_open_system_ignores_the_cell():
    positions = np.random.default_rng(4).uniform(0.0, 8.0, (25, 3))
    pbc = np.zeros(3, bool)
    verlet = VerletNeighborList(3.0, skin=0.4)
    verlet.pairs(positions, np.zeros((3, 3)), pbc)
    moved = positions + [0.1, -0.05, 0.0]
    assert_valid(verlet, verlet.pairs(moved, np.diag([20.0, 15.0, 9.0]), pbc), moved, np.zeros((3, 3)), pbc)
    assert verlet.n_builds == 1
    verlet.pairs(moved * 1.1, np.zeros((3, 3)), pbc)  # an open system has no affine frame
    assert verlet.n_builds == 2


def test_verlet_list_rebuilds_on_new_pbc_atom_count_bad_cell_or_zero_skin():
    positions, cell, _, cutoff = random_neighbor_case(7)
    pbc = np.ones(3, bool)
    verlet = VerletNeighborList(cutoff, skin=0.3)
    verlet.pairs(positions, cell, pbc)
    verlet.pairs(positions, cell, np.array([True, True, False]))
    verlet.pairs(positions[:-1], cell, np.array([True, True, False]))
    assert verlet.n_builds == 3
    given = cell.copy()
    verlet.pairs(positions, given, pbc)
    given *= 0.8  # the caller's array changed in place: noticed
    verlet.pairs(positions * 0.8, given, pbc)
    assert verlet.n_builds == 5
    given[2] = 0.0
    with pytest.raises(ValueError, match="zero length"):
        verlet.pairs(positions, given, pbc)
    given[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        verlet.pairs(positions, given, pbc)
    never = VerletNeighborList(cutoff, skin=0.0)
    for _ in range(3):
        never.pairs(positions, cell, pbc)
    assert never.n_builds == 3


def test_zero_volume_periodic_cell_is_rejected():
    with pytest.raises(ValueError, match="zero length"):
        host_pairs(np.zeros((2, 3)), np.diag([3.0, 3.0, 0.0]), np.ones(3, bool), 2.0)
    with pytest.raises(ValueError, match="zero volume"):
        host_pairs(np.zeros((2, 3)), np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]]), np.ones(3, bool), 2.0)
