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

from conftest import ase_pairs, canonical, random_neighbor_case


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


def test_verlet_list_rebuilds_only_past_half_skin():
    positions, cell, pbc, cutoff = random_neighbor_case(5)
    verlet = VerletNeighborList(cutoff, skin=0.4)
    verlet.pairs(positions, cell, pbc)
    rng = np.random.default_rng(1)
    moved = positions + rng.normal(size=positions.shape) * 0.05
    moved[0] = positions[0] + [0.19, 0.0, 0.0]
    i, j, shifts = verlet.pairs(moved, cell, pbc)
    assert verlet.n_builds == 1
    # the reused list still contains every pair within the cutoff
    within = canonical(*ase_pairs(moved, cell, pbc, cutoff))
    kept = {tuple(row) for row in canonical(i, j, shifts)}
    assert all(tuple(row) in kept for row in within)
    moved[0] = positions[0] + [0.21, 0.0, 0.0]
    verlet.pairs(moved, cell, pbc)
    assert verlet.n_builds == 2
    verlet.pairs(moved, cell * 1.01, pbc)
    assert verlet.n_builds == 3


def test_zero_volume_periodic_cell_is_rejected():
    with pytest.raises(ValueError, match="zero length"):
        host_pairs(np.zeros((2, 3)), np.diag([3.0, 3.0, 0.0]), np.ones(3, bool), 2.0)
    with pytest.raises(ValueError, match="zero volume"):
        host_pairs(np.zeros((2, 3)), np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]]), np.ones(3, bool), 2.0)
