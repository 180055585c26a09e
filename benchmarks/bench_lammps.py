"""Time per MD step: mlip in LAMMPS (fix external, and the compiled ``pair_style
mlip`` plugin) on 1 and 2 MPI ranks vs ASE's VelocityVerlet with mlip's calculator,
diamond Si, 1 fs.

LAMMPS runs ``examples/lammps/in.si`` (NVT then NVE, ``--steps`` steps each) through
``mlip lammps`` under the ``mpich`` wheel's ``mpirun``; its time per step is the mean
wall time of a force-field callback on rank 0 after the first (compilation), which
is nearly all of a LAMMPS step here.  The calculator runs ``--steps`` NVE steps after
a warm-up call.  The plugin (``mlip lammps-plugin``, model from ``mlip export
lammps``) runs the same cell at 600 K, NVE, ``--steps`` steps after 10 warm-up steps;
its time per step is the wall time of that ``run`` (everything LAMMPS does) on rank
0 (``--no-plugin`` skips it).  Prints a table and optionally writes JSON::

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


PLUGIN_RUN = r"""
import json, sys
from mpi4py import MPI
from lammps import lammps
plugin, model, cells, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
for line in ["units metal", "atom_style atomic", "boundary p p p", "lattice diamond 5.431",
             f"region box block 0 {cells} 0 {cells} 0 {cells}", "create_box 1 box", "create_atoms 1 box",
             "mass 1 28.0855", "velocity all create 600.0 87287 mom yes rot no dist gaussian",
             f"plugin load {plugin}", f"pair_style mlip {model}", "pair_coeff * * Si", "neighbor 1.0 bin",
             "fix nve all nve", "timestep 0.001", "thermo 0", "run 10"]:
    lmp.command(line)
MPI.COMM_WORLD.Barrier()
start = MPI.Wtime()
lmp.command(f"run {steps}")
seconds = (MPI.Wtime() - start) / steps
if MPI.COMM_WORLD.rank == 0:
    print(json.dumps({"seconds_per_step": seconds}))
"""


def plugin_seconds(plugin: Path, model_path: Path, cells: int, steps: int, ranks: int) -> float:
    """Seconds per LAMMPS NVE step with ``pair_style mlip`` on ``ranks`` ranks."""
    mpirun = Path(sysconfig.get_path("scripts")) / "mpirun"
    process = subprocess.run([str(mpirun), "-np", str(ranks), sys.executable, "-c", PLUGIN_RUN, str(plugin),
                              str(model_path), str(cells), str(steps)], capture_output=True, text=True, check=True)
    return json.loads(process.stdout.strip().splitlines()[-1])["seconds_per_step"]


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
    parser.add_argument("--no-plugin", action="store_true", help="skip the pair_style mlip plugin rows")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = model_or_random_feature_si(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "model.mlip"
        save_model(model, model_path)
        plugin = None
        if not args.no_plugin:
            from mlip.lammps.plugin import build, write_mlipff

            plugin, plugin_model = build(), write_mlipff(model, Path(folder) / "model.mlipff")
        for cells in args.cells:
            row = {"atoms": 8 * cells**3, "calculator_ms": 1e3 * calculator_seconds(model, cells, args.steps)}
            for ranks in (1, 2):
                summary = lammps_seconds(model_path, cells, args.steps, ranks, args.threads_per_rank)
                row[f"lammps_{ranks}_ms"] = 1e3 * summary["seconds_per_call"]
                row[f"lammps_{ranks}_model_ms"] = 1e3 * summary["model_seconds_per_call"]
                if plugin is not None:
                    row[f"plugin_{ranks}_ms"] = 1e3 * plugin_seconds(plugin, plugin_model, cells, args.steps, ranks)
            rows.append(row)
            text = (f"{row['atoms']:6d} atoms: calculator {row['calculator_ms']:.1f} ms/step, LAMMPS fix external "
                    f"1 rank {row['lammps_1_ms']:.1f} ms/step, 2 ranks {row['lammps_2_ms']:.1f} ms/step")
            if plugin is not None:
                text += (f"; pair_style mlip 1 rank {row['plugin_1_ms']:.1f} ms/step, 2 ranks "
                         f"{row['plugin_2_ms']:.1f} ms/step")
            print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                               "cpus": os.cpu_count(), "steps": args.steps,
                                               "threads_per_rank": args.threads_per_rank, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
