"""Each element's network on its own atoms only (``element_rows``) gives the same
energies, forces and virial as every network on every row selected by species."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mlip import Model
from mlip.kernels.neighbor_list import host_pairs
from mlip.model import make_model_functions
from mlip.batch import element_row_lengths, element_rows, pad_structure

from conftest import random_structure


def test_element_rows_list_each_elements_rows_padded_past_the_end():
    species = np.array([1, 0, 1, 1, -1, -1, 0, -1], dtype=np.int32)  # 8 rows, element 2 absent
    rows = element_rows(species, 3)
    assert [len(r) for r in rows] == [8, 8, 0]  # bucket 16, capped at the row count
    np.testing.assert_array_equal(rows[0], [1, 6, 8, 8, 8, 8, 8, 8])
    np.testing.assert_array_equal(rows[1], [0, 2, 3, 8, 8, 8, 8, 8])
    assert element_rows(species, 1) is None
    assert element_row_lengths([20, 0, 3], 64) == (24, 0, 16)
    with pytest.raises(ValueError, match="exceed"):
        element_rows(species, 3, lengths=(8, 2, 0))


@pytest.fixture(scope="module")
def three_elements():
    model = Model.create(elements=["Si", "C", "Ge"], r_cut=4.0, n_radial=3, n_angular=2, hidden_layers=(6, 5),
                         seed=2)
    return model, jax.jit(make_model_functions(model.config).energy_forces_virial)


@pytest.mark.parametrize("symbols", [("Si", "C", "Ge"), ("Si", "Ge")], ids=["all", "one-absent"])
def test_own_rows_equal_every_row_selected_by_species(three_elements, symbols):
    model, evaluate = three_elements
    atoms = random_structure(11, n_atoms=21, symbols=symbols, size=7.0)
    padded = pad_structure(model, atoms, host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff))
    assert padded.positions.shape[0] > len(atoms)  # padding rows present
    *inputs, rows = padded.as_jax(with_element_rows=True)
    assert rows is not None and (len(rows[1]) == 0) == ("C" not in symbols)
    grouped = evaluate(model.params, *inputs, rows)
    everywhere = evaluate(model.params, *inputs, None)
    for a, b in zip(grouped, everywhere):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)
    assert np.all(np.asarray(grouped.energies)[len(atoms):] == 0.0)
