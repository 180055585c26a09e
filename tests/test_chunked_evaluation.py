"""Atom-chunked evaluation (pair vectors formed chunk by chunk, the path large
systems take) against the one-block evaluation of the shared calculator."""

from __future__ import annotations

import numpy as np

from mlip.calculator import MLIPCalculator

from conftest import evaluate, random_structure


def test_tiny_chunks_give_the_unchunked_energy_forces_and_stress(model, calc):
    # 14 atoms pad to 16 rows: chunks of 3 leave a partly empty last chunk
    atoms = random_structure(seed=12, n_atoms=14, size=6.5)
    chunked = MLIPCalculator(model, skin=0.0, chunk_size=3)  # the reference `calc`: one block of 1024
    a, b = evaluate(chunked, atoms), evaluate(calc, atoms)
    np.testing.assert_allclose(a.get_potential_energies(), b.get_potential_energies(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=1e-10)
    assert np.abs(b.get_forces()).max() > 1e-3  # a non-trivial comparison
