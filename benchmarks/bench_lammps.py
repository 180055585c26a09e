"""Time per MD step: mlip in LAMMPS (fix external) on 1 and 2 MPI ranks vs ASE's
VelocityVerlet with mlip's calculator, diamond Si, 1 fs.

LAMMPS runs ``examples/lammps/in.si`` (NVT then NVE, ``--steps`` steps each) through
``mlip lammps`` under the ``mpich`` wheel's ``mpirun``; its time per step is the mean
wall time of a force-field callback on rank 0 after the first (compilation), which
is nearly all of a LAMMPS step here.  The calculator runs ``--steps`` NVE steps after
a warm-up call.  Prints a table and optionally writes JSON::

    python3 benchmarks/bench_lammps.py [--cells 4 8] [--steps 100] [--model si.mlip] [--json out.json]

Without ``--model`` the potential is :func:`mlip.training.linear.random_feature_si`
(cutoff 4 Å).  ``--threads-per-rank 1`` runs each rank's XLA single-threaded
(``XLA_FLAGS``), which avoids oversubscribing the cores with several ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from mlip.calculator import MLIPCalculator
from mlip.io import save_model
from mlip.md.driver import maxwell_boltzmann_momenta

from common import model_or_random_feature_si

INPUT = Path(__file__).parents[1] / "examples" / "lammps" / "in.si"
RUN = ("import json, sys; from mlip.lammps import run_input; from mpi4py import MPI; "
       "s = run_input(sys.argv[1], sys.argv[2], variables={'n': sys.argv[3], 'steps': sys.argv[4]}, log=None, "
       "screen=False); MPI.COMM_WORLD.rank or print(json.dumps(s.__dict__))")


def lammps_seconds(model_path: Path, cells: int, steps: int, ranks: int, threads: int | None) -> dict:
    """``mlip lammps`` on ``ranks`` ranks: the run summary of rank 0."""
    mpirun = Path(sysconfig.get_path("scripts")) / "mpirun"
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    start = time.perf_counter()
    process = subprocess.run([str(mpirun), "-np", str(ranks), sys.executable, "-c", RUN, str(model_path), str(INPUT),
                              str(cells), str(steps)], capture_output=True, text=True, env=env, check=True)
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - start
    return summary


def calculator_seconds(model, cells: int, steps: int) -> float:
    """Seconds per ASE VelocityVerlet step with MLIPCalculator (float64, skin 0.3 Å)."""
    atoms = bulk("Si", "diamond", 5.431, cubic=True).repeat(cells)
    atoms.set_momenta(maxwell_boltzmann_momenta(atoms.get_masses(), 300.0, 0))
    atoms.calc = MLIPCalculator(model, skin=0.3)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.run(2)  # compilation
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[4, 8], help="unit cells per axis (8 n^3 atoms)")
    parser.add_argument("--steps", type=int, default=100, help="steps of each LAMMPS stage and of ASE")
    parser.add_argument("--model", default=None, help="model file (default: random_feature_si)")
    parser.add_argument("--threads-per-rank", type=int, default=None, choices=[1],
                        help="1: single-threaded XLA in every rank")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = model_or_random_feature_si(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "model.mlip"
        save_model(model, model_path)
        for cells in args.cells:
            row = {"atoms": 8 * cells**3, "calculator_ms": 1e3 * calculator_seconds(model, cells, args.steps)}
            for ranks in (1, 2):
                summary = lammps_seconds(model_path, cells, args.steps, ranks, args.threads_per_rank)
                row[f"lammps_{ranks}_ms"] = 1e3 * summary["seconds_per_call"]
                row[f"lammps_{ranks}_model_ms"] = 1e3 * summary["model_seconds_per_call"]
            rows.append(row)
            print(f"{row['atoms']:6d} atoms: calculator {row['calculator_ms']:.1f} ms/step, LAMMPS 1 rank "
                  f"{row['lammps_1_ms']:.1f} ms/step, 2 ranks {row['lammps_2_ms']:.1f} ms/step", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                               "cpus": os.cpu_count(), "steps": args.steps,
                                               "threads_per_rank": args.threads_per_rank, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
