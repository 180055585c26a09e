"""Host neighbour-list rebuilds and wall time of ASE cell relaxations (FrechetCellFilter + BFGS).

Strained, rattled diamond-Si cells are relaxed with :class:`~mlip.calculator.MLIPCalculator`
once with ``skin=0`` (the list is rebuilt on every call) and once with a Verlet skin; the
table lists optimiser steps, neighbour-list builds, compilations, wall time (compilation
excluded: one warm-up call per calculator), the time spent in the host neighbour list
(``list ms``) and the final energies::

    python benchmarks/bench_cell_relaxation.py --json benchmarks/results/cell_relaxation.json
    python benchmarks/bench_cell_relaxation.py --model run/model.mlip   # a trained model

Without ``--model`` the potential is a small random-feature network whose output layer is
fitted by linear least squares to Stillinger-Weber energies, forces and virials of strained
and rattled cells (a few seconds, nothing downloaded): it has a stable diamond minimum near
a = 5.42 Å, which is all a relaxation benchmark needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import jax
import numpy as np
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from mlip import Model
from mlip.calculator import MLIPCalculator

from common import model_or_random_feature_si

jax.config.update("jax_enable_x64", True)  # this script is the host application: float64 throughout

STRAINS = {
    "iso+3%": 0.03 * np.eye(3),
    "sheared": np.array([[0.02, 0.03, 0.0], [0.0, -0.01, 0.02], [0.0, 0.0, 0.01]]),
}


def strained_cell(repeat: int, strain: np.ndarray, a: float = 5.431, rattle: float = 0.02) -> "ase.Atoms":  # noqa: F821
    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(repeat)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.rattle(rattle, seed=3)
    return atoms


def relax(model: Model, atoms, skin: float, fmax: float, steps: int) -> dict:
    calc = MLIPCalculator(model, skin=skin)
    warm = atoms.copy()
    warm.calc = calc
    warm.get_forces()  # compile for this size outside the timing
    calc.reset()  # forget the cached results and the list: the relaxation starts cold
    calc.neighbors = type(calc.neighbors)(model.cutoff, skin)
    list_seconds = 0.0
    pairs = calc.neighbors.pairs

    def timed_pairs(*args):
        nonlocal list_seconds
        start = time.perf_counter()
        result = pairs(*args)
        list_seconds += time.perf_counter() - start
        return result

    calc.neighbors.pairs = timed_pairs
    atoms = atoms.copy()
    atoms.calc = calc
    compilations0 = calc.n_compilations
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    start = time.perf_counter()
    converged = optimizer.run(fmax=fmax, steps=steps)
    seconds = time.perf_counter() - start
    return {
        "skin": skin, "converged": bool(converged), "steps": int(optimizer.nsteps),
        "calls": int(optimizer.nsteps) + 1, "builds": calc.neighbors.n_builds,
        "compilations": calc.n_compilations - compilations0, "seconds": seconds,
        "neighbor_list_seconds": list_seconds,
        "energy": float(atoms.get_potential_energy()), "volume_per_atom": atoms.get_volume() / len(atoms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: random-feature fit to Stillinger-Weber)")
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 3],
                        help="cubic repeats of the 8-atom Si cell (n^3 * 8 atoms)")
    parser.add_argument("--skins", type=float, nargs="+", default=[0.0, 0.3], help="Verlet skins, Å")
    parser.add_argument("--fmax", type=float, default=1e-4, help="force/stress convergence, eV/Å")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    # FrechetCellFilter's matrix logarithm warns about ~1e-12 inaccuracies near the identity
    warnings.filterwarnings("ignore", message="logm result may be inaccurate")

    model = model_or_random_feature_si(args.model)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), cutoff {model.cutoff} Å, "
          f"network {model.config.hidden_layers}, model {args.model or 'random-feature SW fit'}")
    header = (f"{'atoms':>6} {'strain':>8} {'skin':>5} {'conv':>5} {'steps':>6} {'builds':>7} {'compiles':>9} "
              f"{'time s':>8} {'ms/call':>8} {'list ms':>8} {'energy eV':>18}")
    print(header)
    print("-" * len(header))
    rows = []
    for repeat in args.repeats:
        for name, strain in STRAINS.items():
            atoms = strained_cell(repeat, strain)
            for skin in args.skins:
                row = {"atoms": len(atoms), "strain": name, **relax(model, atoms, skin, args.fmax, args.steps)}
                rows.append(row)
                print(f"{row['atoms']:>6} {name:>8} {skin:>5.2f} {str(row['converged']):>5} {row['steps']:>6} "
                      f"{row['builds']:>7} {row['compilations']:>9} {row['seconds']:>8.2f} "
                      f"{1e3 * row['seconds'] / row['calls']:>8.2f} {1e3 * row['neighbor_list_seconds']:>8.1f} "
                      f"{row['energy']:>18.10f}")
    if args.json:
        import pathlib

        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "benchmark": "cell_relaxation_si_diamond", "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "cutoff": model.cutoff, "hidden_layers": list(model.config.hidden_layers), "fmax": args.fmax,
            "model": args.model or "random-feature Stillinger-Weber fit", "jax": jax.__version__, "rows": rows,
        }, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
