"""Symmetry functions against a brute-force implementation and analytic values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

from mlip.kernels.cutoff import CUTOFF_TYPES, cutoff_function
from mlip.kernels.symmetry_functions import (
    SymmetryFunction,
    SymmetryFunctionSet,
    default_symmetry_functions,
)
from mlip.model import ModelConfig, make_model_functions
from mlip.batch import pad_structure
from mlip.kernels.neighbor_list import host_pairs

from conftest import R_CUT, random_structure, small_sf_set
from reference_symmetry_functions import cutoff_reference, reference_symmetry_functions


@pytest.mark.parametrize("kind", sorted(CUTOFF_TYPES))
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_cutoff_functions_match_formulas(kind, alpha):
    r = np.linspace(0.0, 5.5, 113)
    ours = np.asarray(cutoff_function(jnp.asarray(r), 5.0, kind, alpha))
    reference = np.array([cutoff_reference(x, 5.0, kind, alpha) for x in r])
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["cos", "tanh", "tanhu", "exp", "poly1", "poly2", "poly3", "poly4"])
def test_cutoff_functions_vanish_smoothly_at_cutoff(kind):
    derivative = jax.grad(lambda r: cutoff_function(r, 5.0, kind))
    assert float(cutoff_function(jnp.asarray(5.0 - 1e-9), 5.0, kind)) == pytest.approx(0.0, abs=1e-7)
    assert float(derivative(jnp.asarray(5.0 - 1e-6))) == pytest.approx(0.0, abs=1e-4)
    assert float(cutoff_function(jnp.asarray(0.0), 5.0, kind)) == pytest.approx(1.0 if kind != "tanhu" else math.tanh(1) ** 3)


def _kernel_values(sf_set, atoms):
    config = ModelConfig(sf_set, hidden_layers=(2,))
    from mlip.model import Model, init_params

    model = Model(config, init_params(config))
    pairs = host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, sf_set.max_cutoff)
    padded = pad_structure(model, atoms, pairs)
    union = np.asarray(make_model_functions(config, chunk_size=4).descriptors(*padded.as_jax()))
    symbols = atoms.get_chemical_symbols()
    return [union[i, sf_set.feature_columns(s)] for i, s in enumerate(symbols)]


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, False)])
def test_symmetry_functions_match_brute_force(pbc):
    sf_set = small_sf_set()
    atoms = random_structure(seed=3, n_atoms=9, pbc=pbc, size=4.6)
    ours = _kernel_values(sf_set, atoms)
    reference = reference_symmetry_functions(atoms, sf_set)
    for mine, theirs in zip(ours, reference):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    assert max(v.max() for v in reference) > 0.1  # the structure actually has neighbours


@pytest.mark.parametrize("cutoff_type,alpha", [("cos", 0.2), ("poly2", 0.0), ("exp", 0.1)])
def test_other_cutoffs_match_brute_force(cutoff_type, alpha):
    base = small_sf_set()
    sf_set = SymmetryFunctionSet(base.elements, base.functions, cutoff_type, alpha)
    atoms = random_structure(seed=4, n_atoms=8, size=4.8)
    for mine, theirs in zip(_kernel_values(sf_set, atoms), reference_symmetry_functions(atoms, sf_set)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)


def test_dimer_and_trimer_analytic_values():
    """G2 of a dimer and G9 of a right-angled trimer, written out by hand."""
    r, eta, r_s = 2.1, 0.7, 1.5
    radial = SymmetryFunction(2, "Si", ("Si",), eta, R_CUT, r_s)
    angular = SymmetryFunction(9, "Si", ("Si", "Si"), eta, R_CUT, 0.0, 1.0, 2.0)
    sf_set = SymmetryFunctionSet(("Si",), (radial, angular))
    fc = math.tanh(1 - r / R_CUT) ** 3 / math.tanh(1) ** 3
    trimer = Atoms("Si3", positions=[[0, 0, 0], [r, 0, 0], [0, r, 0]])
    values = _kernel_values(sf_set, trimer)[0]
    # centre atom 0 sees two neighbours at distance r with cos(theta) = 0
    assert values[0] == pytest.approx(2 * math.exp(-eta * (r - r_s) ** 2) * fc, rel=1e-12)
    assert values[1] == pytest.approx(2 ** (1 - 2) * 1.0 * math.exp(-eta * 2 * r**2) * fc**2, rel=1e-12)


def test_n2p2_lines_round_trip():
    sf_set = small_sf_set()
    for function in sf_set.functions:
        assert SymmetryFunction.from_n2p2(function.to_n2p2()) == function
    line = "symfunction_short Si 3 C Si 1.0E-02 -1 4.0 6.0 0.5"
    parsed = SymmetryFunction.from_n2p2(line)
    assert (parsed.kind, parsed.neighbors, parsed.eta, parsed.lam, parsed.zeta, parsed.r_cut, parsed.r_shift) == (
        3, ("C", "Si"), 0.01, -1.0, 4.0, 6.0, 0.5)
    assert SymmetryFunctionSet.from_dict(sf_set.to_dict()) == sf_set
    assert sf_set.to_n2p2().startswith("cutoff_type 3 0.0")


def test_n2p2_lines_are_lossless():
    """Model files store symmetry functions as these lines: every float comes back exactly,
    and values that 7 significant digits represent keep the short form."""
    sf_set = default_symmetry_functions(("Si", "O"), r_cut=5.3, n_radial=7, n_angular=3)
    assert any(len(f.to_n2p2()) > 80 for f in sf_set.functions)  # some values need more digits
    assert SymmetryFunctionSet.from_dict(sf_set.to_dict()) == sf_set
    odd = SymmetryFunction(9, "Si", ("O", "Si"), 1 / 3, 2**0.5 * 4, 0.1 + 0.2, -1.0, 2.5)
    assert SymmetryFunction.from_n2p2(odd.to_n2p2()) == odd
    assert SymmetryFunction(2, "Si", ("Si",), 0.5, 6.0, 1.5).to_n2p2().split()[4:] == [
        "5.000000E-01", "1.500000E+00", "6.000000E+00"]


def test_bad_symmetry_function_definitions_are_rejected():
    with pytest.raises(ValueError, match="type 5"):
        SymmetryFunction(5, "Si", ("Si",), 1.0, 5.0)
    with pytest.raises(ValueError, match="lambda"):
        SymmetryFunction(9, "Si", ("Si", "Si"), 1.0, 5.0, lam=0.5)
    with pytest.raises(ValueError, match="unknown element"):
        SymmetryFunctionSet(("Si",), (SymmetryFunction(2, "Si", ("O",), 1.0, 5.0),))
    with pytest.raises(ValueError, match="unknown cutoff"):
        cutoff_function(1.0, 5.0, "gaussian")


def test_default_grid():
    sf_set = default_symmetry_functions(("Si", "O"), r_cut=6.0, n_radial=6, n_angular=3, zetas=(1, 4))
    # per centre: 2 neighbour elements x 6 radial + 3 pairs x 3 eta x 2 zeta x 2 lambda angular
    assert sf_set.n_features("Si") == 2 * 6 + 3 * 3 * 2 * 2
    radial = [f for f in sf_set.functions_of("Si") if f.kind == 2 and f.neighbors == ("O",)]
    shifts = [f.r_shift for f in radial]
    np.testing.assert_allclose(shifts, np.linspace(1.0, 6.0, 6))
    np.testing.assert_allclose([f.eta for f in radial], 0.5 / (shifts[1] - shifts[0]) ** 2)
    centered = default_symmetry_functions(("Si",), grid="centered", n_radial=4)
    assert all(f.r_shift == 0.0 for f in centered.functions)
    assert max(f.r_cut for f in centered.functions) == 6.0


def test_moment_expansion_matches_brute_force_for_integer_zetas():
    """Wide angular functions with integer zeta (evaluated in O(M) by the moment
    expansion) against the explicit double sum, zeta up to the expansion's limit."""
    functions = [SymmetryFunction(2, c, (c,), 0.5, R_CUT) for c in ("Si", "C")]
    for center in ("Si", "C"):
        for pair in (("Si", "Si"), ("C", "Si"), ("C", "C")):
            for zeta, lam in [(1, 1.0), (2, -1.0), (3, 1.0), (5, -1.0), (8, 1.0), (8, -1.0)]:
                functions.append(SymmetryFunction(9, center, pair, 0.1, R_CUT, 0.3, lam, zeta))
    sf_set = SymmetryFunctionSet(("Si", "C"), tuple(functions))
    atoms = random_structure(seed=8, n_atoms=10, size=4.8)
    reference = reference_symmetry_functions(atoms, sf_set)
    for mine, theirs in zip(_kernel_values(sf_set, atoms), reference):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    assert min(v[2:].max() for v in reference) > 1e-3  # every atom has angular terms


def test_forces_on_lattice_directions_are_finite_and_exact():
    """Neighbours along the axes give unit-vector components of exactly 0 (u^0 terms)."""
    from ase.build import bulk
    from ase.calculators.fd import calculate_numerical_forces

    from mlip.calculator import MLIPCalculator
    from mlip.model import Model

    sf_set = SymmetryFunctionSet(("Si",), (
        SymmetryFunction(2, "Si", ("Si",), 0.5, R_CUT),
        SymmetryFunction(9, "Si", ("Si", "Si"), 0.1, R_CUT, 0.0, 1.0, 4.0),
        SymmetryFunction(9, "Si", ("Si", "Si"), 0.1, R_CUT, 0.0, -1.0, 2.0),
    ))
    atoms = bulk("Si", "sc", 2.6)  # simple cubic: every neighbour on an axis or diagonal
    atoms = atoms.repeat((2, 1, 1))
    atoms.positions[0, 0] += 0.1
    atoms.calc = MLIPCalculator(Model.create(symmetry_functions=sf_set, hidden_layers=(4,)), skin=0.0)
    forces = atoms.get_forces()
    assert np.all(np.isfinite(forces)) and np.abs(forces).max() > 1e-4
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=1e-8)


def _narrow_set() -> SymmetryFunctionSet:
    """Type-3 functions sharing and not sharing radial groups, shapes and cutoffs:
    r_s != 0, non-integer zeta, two cutoffs, mixed and equal element pairs."""
    functions = []
    for center in ("Si", "C"):
        for pair in (("Si", "Si"), ("C", "Si"), ("C", "C")):
            for eta, r_cut, r_s in [(0.1, R_CUT, 0.0), (0.03, R_CUT, 0.0), (0.2, R_CUT, 1.2), (0.1, 3.9, 0.0)]:
                for lam, zeta in [(1.0, 1.0), (-1.0, 4.0), (1.0, 2.5)]:
                    functions.append(SymmetryFunction(3, center, pair, eta, r_cut, r_s, lam, zeta))
    return SymmetryFunctionSet(("Si", "C"), tuple(functions), cutoff_type="cos", cutoff_alpha=0.1)


def test_narrow_angular_variants_match_brute_force():
    sf_set = _narrow_set()
    atoms = random_structure(seed=5, n_atoms=9, size=4.6)
    reference = reference_symmetry_functions(atoms, sf_set)
    for mine, theirs in zip(_kernel_values(sf_set, atoms), reference):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    assert max(v.max() for v in reference) > 0.1


@pytest.mark.parametrize("extra_slots", [1, 2, 3])
def test_narrow_angular_independent_of_padding_width(extra_slots):
    """The type-3 pair offsets depend on the parity of the row width M."""
    from mlip.kernels.symmetry_functions import make_descriptor_kernel
    from mlip.model import Model, init_params, neighbor_species, pair_vectors

    sf_set = _narrow_set()
    config = ModelConfig(sf_set, hidden_layers=(2,))
    atoms = random_structure(seed=6, n_atoms=8, size=4.8)
    padded = pad_structure(Model(config, init_params(config)), atoms,
                           host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, sf_set.max_cutoff))
    positions, cell, species, nl = padded.as_jax()
    r_ij, mask = pair_vectors(positions, cell, nl)
    elements = neighbor_species(species, nl)
    kernel = make_descriptor_kernel(sf_set)
    wide = (jnp.pad(r_ij, ((0, 0), (0, extra_slots), (0, 0)), constant_values=0.7),
            jnp.pad(mask, ((0, 0), (0, extra_slots))),
            jnp.pad(elements, ((0, 0), (0, extra_slots)), constant_values=-1))
    np.testing.assert_allclose(np.asarray(kernel(*wide)), np.asarray(kernel(r_ij, mask, elements)),
                               rtol=1e-12, atol=1e-14)
