"""Shared fixtures: one small two-element model and its compiled calculator.

Compiling the energy function dominates test time, so the model, the jitted
functions and the calculator are created once per session and reused.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import primitive_neighbor_list

from mlip.calculator import MLIPCalculator
from mlip.kernels.symmetry_functions import SymmetryFunction, SymmetryFunctionSet
from mlip.model import Model, ModelConfig, init_params
from mlip.training import fit_feature_scaling

# The test session is the host application: it asks JAX for 64-bit types so the
# low-level functions tested directly run in float64 (mlip itself never sets this;
# tests/test_precision.py checks mlip's scoped float64 without it).
jax.config.update("jax_enable_x64", True)
# Tests compile in-process and do not write a persistent compilation cache (a cold
# cache only costs time here; tests/test_compilation_cache.py checks it directly).
os.environ["MLIP_COMPILATION_CACHE"] = "off"

R_CUT = 4.0
# random_feature_si() saved once (tests/data/make_si_random_feature.py): a stable Si
# potential (diamond minimum near 5.42 Å, 4 Å cutoff) loaded instead of refitted
SI_RANDOM_FEATURE = os.path.join(os.path.dirname(__file__), "data", "si_random_feature.mlip")


def random_structure(seed: int, n_atoms: int = 10, symbols=("Si", "C"), pbc=(True, True, True),
                     size: float = 5.5, min_distance: float = 1.2) -> Atoms:
    """Random triclinic structure with no two atoms closer than ``min_distance`` Å."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(0.85, 1.15, 3) * size) + rng.uniform(-0.12, 0.12, (3, 3)) * size
    atoms = Atoms(cell=cell, pbc=pbc)
    while len(atoms) < n_atoms:
        candidate = Atoms([symbols[rng.integers(len(symbols))]], positions=[rng.random(3) @ cell],
                          cell=cell, pbc=pbc)
        trial = atoms + candidate
        if len(atoms) == 0 or trial.get_distances(len(atoms), range(len(atoms)), mic=any(pbc)).min() > min_distance:
            atoms = trial
    return atoms


def canonical(i, j, shifts):
    """Pair list ``(i, j, S)`` as sorted rows, for exact comparison."""
    rows = np.column_stack([i, j, shifts]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def ase_pairs(positions, cell, pbc, cutoff):
    """Reference pair list from ASE's neighbour list."""
    return primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False)


def within_cutoff(pairs, positions, cell, cutoff):
    """Canonical rows of the pairs in ``pairs`` that are closer than ``cutoff`` now."""
    i, j, shifts = pairs
    distances = np.linalg.norm(positions[j] + shifts @ cell - positions[i], axis=1)
    keep = distances < cutoff
    return canonical(i[keep], j[keep], shifts[keep])


def deformed(positions, cell, strain):
    """Positions and cell under the homogeneous deformation ``1 + strain`` (rows: r -> r F)."""
    deformation = np.eye(3) + strain
    return positions @ deformation, cell @ deformation


def wrapped(positions, cell, pbc):
    """Positions wrapped into the cell along periodic directions (as ``Atoms.wrap``)."""
    fractional = positions @ np.linalg.inv(cell)
    fractional[:, pbc] -= np.floor(fractional[:, pbc])
    return fractional @ cell


def random_neighbor_case(seed):
    """Random triclinic cell, pbc, positions (some outside the cell) and cutoff."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(1.5, 6.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3))
    pbc = rng.random(3) < 0.7
    positions = rng.uniform(-0.3, 1.3, (int(rng.integers(2, 25)), 3)) @ cell  # some outside the cell
    return positions, cell, pbc, float(rng.uniform(2.0, 6.0))


def small_sf_set() -> SymmetryFunctionSet:
    """Radial (type 2), narrow (3) and wide (9) angular functions for Si and C."""
    functions = []
    for center in ("Si", "C"):
        for neighbor in ("Si", "C"):
            functions += [SymmetryFunction(2, center, (neighbor,), eta, R_CUT, r_s)
                          for eta, r_s in [(0.5, 0.0), (2.0, 2.0), (2.0, 3.0)]]
        for pair in (("Si", "Si"), ("C", "Si"), ("C", "C")):
            functions.append(SymmetryFunction(3, center, pair, 0.1, R_CUT, 0.0, 1.0, 2.0))
            functions.append(SymmetryFunction(9, center, pair, 0.2, R_CUT, 0.5, -1.0, 1.0))
            functions.append(SymmetryFunction(9, center, pair, 0.05, R_CUT, 0.0, 1.0, 4.5))
    return SymmetryFunctionSet(("Si", "C"), tuple(functions), cutoff_type="tanh")


@pytest.fixture(scope="session")
def model() -> Model:
    """Two-element model with feature scaling fitted to random structures."""
    config = ModelConfig(small_sf_set(), hidden_layers=(8, 8), activation="tanh", r_min=0.8)
    raw = Model(config, init_params(config, seed=1))
    return fit_feature_scaling(raw, [random_structure(s) for s in range(3)])


@pytest.fixture(scope="session")
def calc(model) -> MLIPCalculator:
    """One calculator (one compiled function) shared by the physics tests."""
    return MLIPCalculator(model, skin=0.0)


@pytest.fixture(scope="session")
def structure() -> Atoms:
    return random_structure(seed=7)


def evaluate(calc: MLIPCalculator, atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` with ``calc`` attached (results are computed on demand)."""
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


@pytest.fixture(scope="session")
def si_model() -> Model:
    """The stored random-feature Stillinger-Weber Si model (see ``SI_RANDOM_FEATURE``)."""
    from mlip.io import load_model

    return load_model(SI_RANDOM_FEATURE)
