"""ASE calculator: compiled-function reuse, ASE dynamics and optimisers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from mlip.calculator import MLIPCalculator
from mlip.batch import atom_bucket

from conftest import evaluate, random_structure


def test_no_recompilation_within_a_bucket(model):
    calc = MLIPCalculator(model, skin=0.5)
    structures = [random_structure(seed=s, n_atoms=n) for s, n in [(30, 9), (31, 10), (32, 12)]]
    assert len({atom_bucket(len(a)) for a in structures}) == 1
    evaluate(calc, structures[0]).get_forces()
    compiled = calc.n_compilations  # shared with the other calculators of this model
    for atoms in structures[1:]:
        evaluate(calc, atoms).get_forces()
    assert calc.n_compilations == compiled
    atoms = evaluate(calc, structures[0])
    for step in range(5):  # small MD-like moves reuse the neighbour list and the compiled code
        atoms.positions += 0.01
        atoms.get_forces()
    assert calc.n_compilations == compiled
    assert calc.neighbors.n_builds <= 5


def test_verlet_skin_gives_same_results_as_rebuilding(model, calc):
    skinned = MLIPCalculator(model, skin=1.0)
    atoms = random_structure(seed=33)
    a, b = evaluate(skinned, atoms), evaluate(calc, atoms)
    a.get_forces()
    builds = skinned.neighbors.n_builds
    rng = np.random.default_rng(0)
    for _ in range(3):
        step = rng.normal(scale=0.1, size=atoms.positions.shape)
        a.positions += step
        b.positions += step
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-12)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
    assert skinned.neighbors.n_builds == builds  # the skin was never exceeded


def test_nve_molecular_dynamics_conserves_energy(calc):
    atoms = evaluate(calc, random_structure(seed=40, n_atoms=10, min_distance=1.6))
    masses = atoms.get_masses()[:, None]
    kT = 300 * units.kB
    atoms.set_momenta(np.random.default_rng(1).normal(size=(len(atoms), 3)) * np.sqrt(masses * kT))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies = []
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(40)
    kinetic = atoms.get_kinetic_energy()
    assert kinetic > 0
    drift = max(energies) - min(energies)
    assert drift < 1e-3 * max(kinetic, 1e-2)


def test_bfgs_relaxation_reduces_forces(calc):
    atoms = evaluate(calc, random_structure(seed=41, n_atoms=8, min_distance=1.6, pbc=(False,) * 3))
    start = np.linalg.norm(atoms.get_forces(), axis=1).max()
    energy0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=start / 10, steps=200)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < start / 10
    assert atoms.get_potential_energy() < energy0


def test_unknown_element_is_rejected(calc):
    atoms = random_structure(seed=50, symbols=("Si", "O"))
    with pytest.raises(ValueError, match=r"unknown element.*'O'"):
        evaluate(calc, atoms).get_potential_energy()


def test_nan_positions_are_rejected(calc):
    atoms = random_structure(seed=51)
    atoms.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"atoms \[3\] are NaN"):
        evaluate(calc, atoms).get_potential_energy()


def test_overlapping_atoms_are_rejected(calc, model):
    atoms = random_structure(seed=52)
    atoms.positions[4] = atoms.positions[2] + [0.3, 0.0, 0.0]
    with pytest.raises(ValueError, match=f"closer than the model's trained range.*{model.config.r_min}"):
        evaluate(calc, atoms).get_potential_energy()


def test_degenerate_periodic_cell_is_rejected(calc):
    atoms = random_structure(seed=53)
    atoms.cell[2] = 0.0
    with pytest.raises(ValueError, match="zero length"):
        evaluate(calc, atoms).get_potential_energy()


def test_stress_of_open_system_is_not_implemented(calc):
    atoms = evaluate(calc, random_structure(seed=54, pbc=(True, True, False)))
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_bad_dtype_is_rejected(model):
    with pytest.raises(ValueError, match="dtype"):
        MLIPCalculator(model, dtype="float16")


def test_neighbor_capacity_grows_when_the_structure_densifies(model):
    calc = MLIPCalculator(model, skin=0.3)
    atoms = evaluate(calc, random_structure(seed=34, n_atoms=10, min_distance=1.5))
    atoms.get_potential_energy()
    capacity = calc.neighbor_capacity
    atoms.set_cell(atoms.cell * 0.75, scale_atoms=True)  # denser: more neighbours than the old capacity
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert calc.neighbor_capacity > capacity
    fresh = evaluate(MLIPCalculator(model, skin=0.0), atoms)
    assert energy == pytest.approx(fresh.get_potential_energy(), abs=1e-11)
    np.testing.assert_allclose(forces, fresh.get_forces(), atol=1e-11)
