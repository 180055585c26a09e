"""What an mlip model says about a vacancy in Si: per-atom energies, Shapley values
over symmetry-function groups, and the energy cost of removing motifs.

The potential is a quick random-feature fit (:func:`mlip.training.linear.random_feature_model`)
to matscipy's Stillinger-Weber energies and forces of rattled diamond cells with and
without a vacancy (nothing downloaded); the motif energies are compared with
Stillinger-Weber itself.

    python3 examples/analysis/atomic_energies.py [OUTDIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ase.build import bulk

from mlip.analysis.interpret import (
    atom_energy_shapley,
    atomic_energy_report,
    motif_importance,
    motif_indices,
    plot_atomic_energies,
    symmetry_function_groups,
)
from mlip.calculator import MLIPCalculator
from mlip.batch import compute_descriptors
from mlip.training.generate import label, stillinger_weber_si
from mlip.training.linear import random_feature_model


def training_structures(n: int = 6, seed: int = 0) -> list:
    """Rattled (0.05 Å) diamond cells, 8 atoms and 64 atoms minus one, labelled by Stillinger-Weber."""
    rng = np.random.default_rng(seed)
    structures = []
    for k in range(2 * n):
        atoms = bulk("Si", "diamond", a=5.431 * rng.uniform(0.98, 1.02), cubic=True)
        if k % 2:
            atoms = atoms.repeat(2)
            del atoms[int(rng.integers(len(atoms)))]
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        structures.append(atoms)
    return label(structures, stillinger_weber_si())


def main(outdir: str = "analysis_out") -> None:
    out = Path(outdir)
    model = random_feature_model(training_structures(), ["Si"], hidden=48)
    calc = MLIPCalculator(model)
    crystal = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    vacancy = crystal.copy()
    del vacancy[0]

    report = atomic_energy_report(vacancy, calc)
    print(report.table())
    print("plot:", plot_atomic_energies(out / "vacancy_energies.png", vacancy, report.energies, "Si vacancy"))

    neighbour = int(motif_indices(crystal, 0, 2.5)[1]) - 1  # a first neighbour of the vacancy (site 0 removed)
    groups = symmetry_function_groups(model, "Si")
    background = compute_descriptors(model, [crystal])["Si"]
    shapley = atom_energy_shapley(model, vacancy, neighbour, groups, background)
    print(f"atom {neighbour}: energy above the bulk atom by {sum(shapley.values()):.4f} eV, Shapley values (eV):",
          {k: round(v, 4) for k, v in shapley.items()})

    for name, motif in (("single atom", [0]), ("atom + first shell", motif_indices(crystal, 0, 2.5))):
        for potential, calculator in (("mlip", calc), ("Stillinger-Weber", stillinger_weber_si())):
            result = motif_importance(crystal, calculator, remove=motif, fmax=0.02)
            print(f"removing {name} ({len(motif)} atoms), {potential:<16s}: {result.unrelaxed_change:7.3f} eV "
                  f"unrelaxed, {result.energy_change:7.3f} eV relaxed")


if __name__ == "__main__":
    main(*sys.argv[1:])
