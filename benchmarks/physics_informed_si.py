"""Effect of the equation-of-state loss terms on mlearn Si.

Trains the benchmark config (benchmarks/mlearn_si/config.toml) twice on the same
featurised data, with and without its ``[[eos]]`` terms, and reports for each model
the diamond-Si equilibrium volume and bulk modulus from a Birch-Murnaghan fit of
the model's own E(V) (ASE calculator, 13 volumes; independent of the loss term's
autodiff), the pressure at the data's V0, and the test MAEs.  The targets V0 and
B0 come from the DFT data's pressure-volume points (Elastic group).

    python3 benchmarks/physics_informed_si.py [--epochs N] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def model_eos(model, volume_per_atom: float) -> tuple[float, float, float]:
    """``(V0 Å^3/atom, B0 GPa, P(volume_per_atom) GPa)`` of diamond Si from the model."""
    from ase.eos import EquationOfState
    from ase.units import GPa

    from mlip.calculator import MLIPCalculator
    from mlip.training.eos import reference_crystal

    calc = MLIPCalculator(model)
    volumes, energies = [], []
    for factor in np.linspace(0.94, 1.06, 13):
        atoms = reference_crystal("Si", "diamond", volume_per_atom * factor)
        atoms.calc = calc
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    v0, _, b0 = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    at_target = reference_crystal("Si", "diamond", volume_per_atom)
    at_target.calc = calc
    pressure = -np.mean(at_target.get_stress()[:3]) / GPa
    return float(v0), float(b0 / GPa), float(pressure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "mlearn_si" / "config.toml"))
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from mlip.training.config import load_config
    from mlip.training.trainer import prepare, train

    config = load_config(args.config)
    if not config.path(config.data.train).exists():
        print(f"skipped: {config.path(config.data.train)} not found")
        return 0
    if not config.eos:
        print("the config has no [[eos]] entry")
        return 1
    if args.epochs is not None:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=args.epochs))
    config = dataclasses.replace(config, output=dataclasses.replace(config.output, plots=False, progress=False))
    prepared = prepare(config, log=lambda line: None)
    target = prepared.eos_targets[0]
    rows = {}
    for name, data in (("without EOS terms", dataclasses.replace(prepared, eos_terms=[])), ("with EOS terms", prepared)):
        with tempfile.TemporaryDirectory() as directory:
            run = dataclasses.replace(config, output=dataclasses.replace(config.output, directory=directory))
            result = train(run, log=lambda line: None, prepared=data)
        v0, b0, pressure = model_eos(result.model, target["v0"])
        rows[name] = {"V0": v0, "B0": b0, "P(V0_data)": pressure, **result.metrics["test"]["all"]}
    print(f"DFT data (Elastic group P-V fit): V0 = {target['v0']:.3f} Å^3/atom, B0 = {target['b0']:.1f} GPa\n")
    print(f"{'model':20s} {'V0 Å^3':>8s} {'B0 GPa':>8s} {'P(V0) GPa':>10s} {'E meV/at':>9s} {'F meV/Å':>8s} {'S GPa':>6s}")
    for name, r in rows.items():
        print(f"{name:20s} {r['V0']:8.3f} {r['B0']:8.1f} {r['P(V0_data)']:10.3f} {r['E MAE meV/atom']:9.2f} "
              f"{r['F MAE meV/Å']:8.1f} {r.get('S MAE GPa', float('nan')):6.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"target": target, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
