"""Frenkel-Ladd free energy of diamond Si vs the harmonic free energy of the same model.

At low temperature the classical free energy of a crystal approaches the harmonic
one, ``F_harm = U_0 + kT sum_(3N-3 modes) ln(hbar omega / kT)``, with the phonon
frequencies of the same model from ASE's finite-displacement ``Phonons`` (Γ point
of the simulation cell: exactly the modes its MD samples).  This script relaxes the
64-atom cell, computes both, and prints them per atom::

    python3 benchmarks/ti_frenkel_ladd_si.py [--temperature 50] [--model run/model.mlip] [--json out.json]

Without ``--model`` the potential is :func:`mlip.training.linear.random_feature_si`.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from mlip.calculator import MLIPCalculator
from mlip.ti import frenkel_ladd, harmonic_crystal

from common import model_or_random_feature_si


def relaxed_diamond(model, repeat: int = 2):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(repeat)
    atoms.calc = MLIPCalculator(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-5, steps=200)
    return atoms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=50.0, help="K")
    parser.add_argument("--points", type=int, default=6, help="Gauss-Legendre nodes in λ")
    parser.add_argument("--production", type=int, default=4000, help="steps per node")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--model", default=None)
    parser.add_argument("--plot", default=None, help="write <dU/dλ> vs λ to this PNG")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    model = model_or_random_feature_si(args.model)
    atoms = relaxed_diamond(model)
    n = len(atoms)
    reference = harmonic_crystal(model, atoms, args.temperature)
    started = time.perf_counter()
    result = frenkel_ladd(model, atoms, args.temperature, n_points=args.points, production=args.production,
                          timestep=args.timestep, progress=True)
    seconds = time.perf_counter() - started
    difference = result.free_energy - reference["F_harmonic"]
    print(f"diamond Si, {n} atoms, a = {atoms.cell[0, 0] / 2:.4f} Å, T = {args.temperature} K")
    print(f"harmonic (ASE phonons):  F = {reference['F_harmonic'] / n:.6f} eV/atom "
          f"(U0 = {reference['U0'] / n:.6f}, modes {reference['lowest_mode_meV']:.1f}-"
          f"{reference['highest_mode_meV']:.1f} meV)")
    print(f"Frenkel-Ladd (mlip.ti):  F = {result.per_atom:.6f} ± {result.free_energy_error / n:.6f} eV/atom "
          f"(Einstein omega = {result.omega:.4f} 1/fs, <u^2> = {result.mean_square_displacement:.5f} Å^2, "
          f"{seconds:.0f} s)")
    print(f"difference: {1e3 * difference / n:.3f} meV/atom "
          f"({difference / max(result.free_energy_error, 1e-300):.1f} standard errors)")
    if args.plot:
        result.ti.plot(args.plot, "Einstein → model")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "n_atoms": n, "temperature": args.temperature, "F_harmonic_per_atom": reference["F_harmonic"] / n,
            "F_frenkel_ladd_per_atom": result.per_atom, "error_per_atom": result.free_energy_error / n,
            "lambdas": result.ti.lambdas.tolist(), "mean_dudl": result.ti.mean_dudl.tolist(),
            "error_dudl": result.ti.error_dudl.tolist(), "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
