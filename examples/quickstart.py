"""Quick start: build a Si model, save it, and use it from ASE (energy, forces, stress, MD).

    python examples/quickstart.py

The network weights are random (no training here): the point is the workflow and
the physics checks, which hold for any weights.  Units: eV, Å, fs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces
from ase.md.verlet import VelocityVerlet

from mlip import Model
from mlip.calculator import MLIPCalculator
from mlip.io import save_model
from mlip.training import fit_feature_scaling


def main() -> None:
    model = Model.create(elements=["Si"], r_cut=5.0, hidden_layers=(16, 16), activation="tanh")
    training_like = [bulk("Si", "diamond", a, cubic=True) for a in (5.3, 5.43, 5.6)]
    for atoms in training_like:
        atoms.rattle(0.05, seed=1)
    model = fit_feature_scaling(model, training_like)
    path = save_model(model, Path(tempfile.mkdtemp()) / "si.mlip")
    print(f"model: {model.config.symmetry_functions.n_features('Si')} symmetry functions, saved to {path}")

    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=2)
    atoms.calc = MLIPCalculator(path, skin=0.5)
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    print(f"energy {atoms.get_potential_energy():.6f} eV, "
          f"max |F - F_fd| = {np.abs(forces - numerical).max():.2e} eV/Å, "
          f"|sum F| = {np.abs(forces.sum(axis=0)).max():.1e} eV/Å")
    print("stress (eV/Å^3):", np.array2string(atoms.get_stress(), precision=6))

    masses = atoms.get_masses()[:, None]
    kT = 300 * units.kB  # Maxwell-Boltzmann momenta at 300 K
    atoms.set_momenta(np.random.default_rng(3).normal(size=(len(atoms), 3)) * np.sqrt(masses * kT))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    start = atoms.get_total_energy()
    dynamics.run(50)
    print(f"NVE, 50 steps of 0.5 fs: total energy drift {atoms.get_total_energy() - start:+.2e} eV, "
          f"{atoms.calc.n_compilations} compiled shape(s), {atoms.calc.neighbors.n_builds} neighbour-list builds")


if __name__ == "__main__":
    main()
