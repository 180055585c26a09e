"""Exact physics: finite-difference forces and stress, invariances, extensivity."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.stress import voigt_6_to_full_3x3_stress

from mlip.calculator import MLIPCalculator

from conftest import evaluate, random_structure


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, False, False)])
def test_forces_equal_minus_finite_difference_gradient(calc, pbc):
    atoms = evaluate(calc, random_structure(seed=11, pbc=pbc))
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 1e-3  # a non-trivial test
    np.testing.assert_allclose(forces, numerical, atol=1e-7)


def test_stress_equals_strain_derivative(calc, structure):
    atoms = evaluate(calc, structure)
    numerical = voigt_6_to_full_3x3_stress(calculate_numerical_stress(atoms, eps=1e-6))
    stress = atoms.get_stress(voigt=False)
    assert np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(stress, numerical, atol=1e-9)
    np.testing.assert_allclose(stress, stress.T, atol=1e-14)


def test_forces_sum_to_zero(calc, structure):
    forces = evaluate(calc, structure).get_forces()
    assert np.abs(forces.sum(axis=0)).max() < 1e-12 * max(1.0, np.abs(forces).sum())


def test_per_atom_energies_sum_to_energy(calc, structure):
    atoms = evaluate(calc, structure)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()


def test_translation_rotation_permutation_invariance(calc, structure):
    reference = evaluate(calc, structure)
    energy, forces = reference.get_potential_energy(), reference.get_forces()

    shifted = structure.copy()
    shifted.translate([0.37, -1.3, 2.1])
    assert evaluate(calc, shifted).get_potential_energy() == pytest.approx(energy, abs=1e-11)

    wrapped = structure.copy()
    wrapped.positions += 3.0 * wrapped.cell[0]  # a lattice translation of every atom
    wrapped.wrap()
    assert evaluate(calc, wrapped).get_potential_energy() == pytest.approx(energy, abs=1e-11)

    rotated = structure.copy()
    rotation = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
    rotated.set_cell(structure.cell.array @ rotation.T, scale_atoms=False)
    rotated.positions = structure.positions @ rotation.T
    rotated_atoms = evaluate(calc, rotated)
    assert rotated_atoms.get_potential_energy() == pytest.approx(energy, abs=1e-11)
    np.testing.assert_allclose(rotated_atoms.get_forces(), forces @ rotation.T, atol=1e-11)

    order = np.random.default_rng(6).permutation(len(structure))
    permuted = evaluate(calc, structure[order])
    assert permuted.get_potential_energy() == pytest.approx(energy, abs=1e-11)
    np.testing.assert_allclose(permuted.get_forces(), forces[order], atol=1e-11)
    np.testing.assert_allclose(permuted.get_potential_energies(), reference.get_potential_energies()[order],
                               atol=1e-12)


def test_swapping_unlike_atoms_changes_energy(calc, structure):
    """Guard against a permutation test that passes because elements are ignored."""
    symbols = structure.get_chemical_symbols()
    a = symbols.index("Si")
    b = symbols.index("C")
    swapped = structure.copy()
    swapped.positions[[a, b]] = swapped.positions[[b, a]]
    delta = evaluate(calc, swapped).get_potential_energy() - evaluate(calc, structure).get_potential_energy()
    assert abs(delta) > 1e-6


@pytest.mark.parametrize("size", [5.5, 2.6])
def test_supercell_energy_is_extensive(calc, size):
    """E(2x1x3 supercell) = 6 E(cell), also for a cell thinner than the cutoff."""
    cell_atoms = random_structure(seed=21, n_atoms=3 if size < 3 else 8, size=size, min_distance=1.0)
    energy = evaluate(calc, cell_atoms).get_potential_energy()
    supercell = evaluate(calc, cell_atoms.repeat((2, 1, 3)))
    assert supercell.get_potential_energy() == pytest.approx(6 * energy, rel=1e-11, abs=1e-10)
    np.testing.assert_allclose(supercell.get_stress(), evaluate(calc, cell_atoms).get_stress(), atol=1e-11)


def test_float32_agrees_with_float64(model, calc, structure):
    atoms64 = evaluate(calc, structure)
    atoms32 = evaluate(MLIPCalculator(model, dtype="float32"), structure)
    assert atoms32.get_potential_energy() == pytest.approx(atoms64.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(atoms32.get_forces(), atoms64.get_forces(), atol=1e-4)
    np.testing.assert_allclose(atoms32.get_stress(), atoms64.get_stress(), atol=1e-5)
