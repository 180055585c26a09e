"""NPT validation: mean pressure vs target, and volume fluctuations vs the bulk modulus
from an energy-volume curve of the same model.

In the isothermal-isobaric ensemble ``<δV^2> = kT V / B_T``.  The script fits a
Birch-Murnaghan equation of state to the model's static E(V) of diamond Si (its
bulk modulus ``B_0``), runs stochastic cell rescaling NPT at ``--temperature`` and
``--pressure``, and prints the mean pressure with its block-averaged error and the
bulk modulus implied by the volume fluctuations (at 300 K the thermal softening
of Si is a few percent)::

    python3 benchmarks/validate_npt.py [--steps 20000] [--coupling triclinic] [--model run/model.mlip] [--json out.json]

With ``--coupling anisotropic`` or ``triclinic`` it also prints the mean of every
pressure-tensor component (each should equal the target on the diagonal and zero
off it) and the drift of the effective energy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.eos import EquationOfState

from mlip.calculator import MLIPCalculator
from mlip.md import MDSettings, Outputs, run_md
from mlip.md.driver import PRESSURE_TENSOR_COLUMNS
from mlip.ti import block_average

from common import model_or_random_feature_si


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--pressure", type=float, default=0.0, help="GPa")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--tau-p", type=float, default=500.0, help="barostat time, fs")
    parser.add_argument("--repeat", type=int, default=2, help="cubic repeats of the 8-atom cell")
    parser.add_argument("--coupling", default="isotropic", choices=["isotropic", "anisotropic", "triclinic"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    model = model_or_random_feature_si(args.model)

    calc = MLIPCalculator(model)
    volumes, energies = [], []
    for a in np.linspace(5.30, 5.55, 11):
        atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(args.repeat)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, _, b0 = eos.fit()
    b0_gpa = b0 / units.GPa

    atoms = bulk("Si", "diamond", a=v0 ** (1 / 3) / args.repeat, cubic=True).repeat(args.repeat)
    atoms.rattle(0.02, seed=0)
    settings = MDSettings("npt", temperature=args.temperature, pressure=args.pressure, timestep=args.timestep,
                          steps=args.steps, tau=100.0, tau_p=args.tau_p, compressibility=1.0 / b0_gpa, block=1000,
                          coupling=args.coupling)
    result = run_md(model, atoms, settings, Outputs(thermo_every=1), progress=True)
    production = result.thermo[len(result.thermo) // 5:]
    pressure, volume = production[:, 7], production[:, 8]
    mean_p, error_p = block_average(pressure, 20)
    kT = units.kB * args.temperature
    b_fluct = kT * volume.mean() / volume.var() / units.GPa
    # error of the variance from blocks
    blocks = volume[: len(volume) - len(volume) % 20].reshape(20, -1)
    b_blocks = kT * blocks.mean(axis=1) / blocks.var(axis=1) / units.GPa
    error_b = b_blocks.std(ddof=1) / np.sqrt(20)
    print(f"{len(atoms)} atoms, {args.steps} steps of {args.timestep} fs at {args.temperature} K, "
          f"target {args.pressure} GPa, {result.ns_per_day:.3g} ns/day")
    print(f"mean pressure: {mean_p:.3f} ± {error_p:.3f} GPa")
    print(f"static E(V) fit: V0 = {v0 / len(atoms):.3f} Å^3/atom, B0 = {b0_gpa:.1f} GPa")
    print(f"volume fluctuations: <V> = {volume.mean() / len(atoms):.3f} Å^3/atom, B = kT<V>/<δV²> = "
          f"{b_fluct:.1f} ± {error_b:.1f} GPa")
    tensor = {}
    for column in PRESSURE_TENSOR_COLUMNS:
        tensor[column] = block_average(production[:, result.columns.index(column)], 20)
    print("pressure tensor (GPa): " + ", ".join(f"{c[:3]} {m:.3f} ± {e:.3f}" for c, (m, e) in tensor.items()))
    conserved = result.thermo[:, result.columns.index("conserved_eV")]
    drift = np.polyfit(result.thermo[:, 1], conserved, 1)[0] / len(atoms)
    print(f"effective-energy drift: {drift * 1e3:.3f} meV/atom/ps")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "atoms": len(atoms), "steps": args.steps, "temperature": args.temperature, "target_GPa": args.pressure,
            "mean_pressure_GPa": mean_p, "pressure_error_GPa": error_p, "B0_static_GPa": b0_gpa,
            "B_fluctuation_GPa": b_fluct, "B_fluctuation_error_GPa": error_b, "coupling": args.coupling,
            "pressure_tensor_GPa": tensor, "effective_energy_drift_eV_per_atom_ps": drift}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
