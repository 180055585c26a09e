"""Compiled MD driver vs ASE's VelocityVerlet + MLIPCalculator, diamond Si, NVE 1 fs.

For each size the compiled driver runs two blocks (the first includes compilation;
the second is timed), ASE's VelocityVerlet with mlip's calculator runs a few steps
after a warm-up call, and the energy/force kernel alone (one jit-compiled
energy+forces+virial call on the same padded arrays) gives the share of a step
spent in it.  Prints a table and optionally writes JSON::

    python3 benchmarks/bench_md.py [--repeats 4 8] [--model run/model.mlip] [--json out.json]

Without ``--model`` the potential is :func:`mlip.training.linear.random_feature_si`
(cutoff 4 Å, 24 hidden units): a stable potential made in seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from mlip.calculator import MLIPCalculator
from mlip.md import MDSettings, run_md
from mlip.md.driver import maxwell_boltzmann_momenta, ns_per_day
from mlip.md.system import MDSystem
from mlip.model import cast_params, make_model_functions
from mlip.precision import DTYPES, float64_scope

from common import model_or_random_feature_si


def kernel_seconds(model, atoms, dtype, repeats: int = 5) -> float:
    """Median time of one jit-compiled energy+forces+virial call, s."""
    with float64_scope():
        system = MDSystem.from_atoms(model, atoms, 0.5, dtype)
        position, cell = jnp.asarray(system.position, dtype), jnp.asarray(system.cell, dtype)
        neighbors = system.allocate_neighbors(position, cell)
        evaluate = jax.jit(make_model_functions(model.config).energy_forces_virial)
        rows = None if system.element_rows is None else tuple(jnp.asarray(r) for r in system.element_rows)
        args = (cast_params(model.params, dtype), position, cell, jnp.asarray(system.species), neighbors.nl, rows)
        jax.block_until_ready(evaluate(*args))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(evaluate(*args))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, nargs="+", default=[4, 8], help="cubic repeats of the 8-atom cell")
    parser.add_argument("--block", type=int, default=100, help="steps per compiled block (one block is timed)")
    parser.add_argument("--ase-steps", type=int, default=10)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    model = model_or_random_feature_si(args.model)
    dtype = DTYPES[args.dtype]
    print(f"device: {jax.devices()[0].device_kind}, {args.dtype}, cutoff {model.cutoff} Å, "
          f"network {model.config.hidden_layers}, NVE 1 fs")
    header = (f"{'atoms':>6} {'compiled µs/atom/step':>22} {'ns/day':>8} {'ASE µs/atom/step':>17} "
              f"{'speed-up':>9} {'kernel share':>13} {'compile s':>10}")
    print(header)
    rows = []
    for repeat in args.repeats:
        atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(repeat)
        atoms.rattle(0.03, seed=1)
        atoms.set_momenta(maxwell_boltzmann_momenta(atoms.get_masses(), 300.0, 1))
        n = len(atoms)
        result = run_md(model, atoms, MDSettings("nve", timestep=1.0, steps=2 * args.block, block=args.block,
                                                 dtype=args.dtype))
        step_s = (result.seconds - result.compile_seconds) / args.block
        kernel_s = kernel_seconds(model, atoms, dtype)
        reference = atoms.copy()
        reference.calc = MLIPCalculator(model, dtype=args.dtype, skin=0.5)
        dynamics = VelocityVerlet(reference, timestep=1.0 * units.fs)
        dynamics.run(1)  # compile
        start = time.perf_counter()
        dynamics.run(args.ase_steps)
        ase_s = (time.perf_counter() - start) / args.ase_steps
        row = {"atoms": n, "compiled_us_per_atom_step": 1e6 * step_s / n, "ns_per_day": ns_per_day(1, 1.0, step_s),
               "ase_us_per_atom_step": 1e6 * ase_s / n, "speedup": ase_s / step_s, "kernel_share": kernel_s / step_s,
               "compile_s": result.compile_seconds, "neighbor_rebuilds": result.neighbor_rebuilds}
        rows.append(row)
        print(f"{n:>6} {row['compiled_us_per_atom_step']:>22.1f} {row['ns_per_day']:>8.3g} "
              f"{row['ase_us_per_atom_step']:>17.1f} {row['speedup']:>9.2f} {row['kernel_share']:>13.0%} "
              f"{row['compile_s']:>10.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": jax.devices()[0].device_kind, "jax": jax.__version__,
                                               "machine": platform.machine(), "dtype": args.dtype,
                                               "cutoff": model.cutoff, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
