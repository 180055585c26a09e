"""Inputs of the active-learning demo on Stillinger-Weber Si (written next to this file).

* ``seed.extxyz``: 10 labelled structures, 8-atom diamond cells with a random
  symmetric strain (up to 3 %) and Gaussian displacements (0.03-0.12 Å), labelled
  with matscipy's Stillinger-Weber potential (the loop's oracle);
* ``start.extxyz``: the starting points of exploration, a 64-atom diamond cell and
  the same cell with one vacancy (63 atoms), unlabelled;
* ``test.extxyz``: the held-out test set, 60 frames of Stillinger-Weber Langevin MD
  of the 64-atom cell, 12 at each of 300, 600, 900, 1200 and 1500 K, taken every 50
  steps of 2 fs (100 fs apart) after 200 steps of equilibration; never trained on.

Deterministic (seed 2026).  ``python examples/learn_si/make_inputs.py`` then
``mlip learn examples/learn_si/config.toml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.io import write

from mlip.training.generate import md_snapshots, rattle, label, stillinger_weber_si

HERE = Path(__file__).resolve().parent
SEED = 2026
TEST_TEMPERATURES = (300.0, 600.0, 900.0, 1200.0, 1500.0)


def seed_structures(rng: np.random.Generator, n: int = 10) -> list:
    cell = bulk("Si", "diamond", a=5.431, cubic=True)
    structures = []
    for k in range(n):
        atoms = cell.copy()
        strain = rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        amplitude = (0.03, 0.06, 0.09, 0.12)[k % 4]
        structures.append(rattle(atoms, amplitude, rng, min_distance=0.8 * 2.35))
    return structures


def start_structures() -> list:
    cell = bulk("Si", "diamond", a=5.431, cubic=True).repeat((2, 2, 2))
    vacancy = cell.copy()
    del vacancy[0]
    return [cell, vacancy]


def test_structures(calculator, rng: np.random.Generator, per_temperature: int = 12) -> list:
    cell = bulk("Si", "diamond", a=5.431, cubic=True).repeat((2, 2, 2))
    frames = []
    for temperature in TEST_TEMPERATURES:
        snapshots = md_snapshots(cell, calculator, temperature, per_temperature, rng, timestep=2.0, interval=50,
                                  equilibration=200, friction=0.02)
        for atoms in snapshots:
            atoms.info["config_type"] = f"md{temperature:g}K"
        frames += snapshots
    return frames


def main() -> None:
    calculator = stillinger_weber_si()
    rng = np.random.default_rng(SEED)
    write(HERE / "seed.extxyz", label(seed_structures(rng), calculator, "seed"), format="extxyz")
    write(HERE / "start.extxyz", start_structures(), format="extxyz")
    write(HERE / "test.extxyz", label(test_structures(calculator, np.random.default_rng(SEED + 1)), calculator),
          format="extxyz")
    print(f"wrote {HERE / 'seed.extxyz'} (10), {HERE / 'start.extxyz'} (2), {HERE / 'test.extxyz'} "
          f"({12 * len(TEST_TEMPERATURES)})")


if __name__ == "__main__":
    main()
