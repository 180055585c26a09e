"""Energy + forces of large diamond Si systems in float32 through the ASE
calculator: time per atom and peak memory, 32768 to 1,000,000 atoms.

Each size runs in a fresh Python process (so the peak resident memory, VmHWM
from ``/proc/self/status``, belongs to that size alone), with the model of
``bench_energy_forces.py`` (8 type-2 + 16 type-9 symmetry functions, 6 Å tanh
cutoff, network 24-25-25-1)::

    python3 benchmarks/bench_scale.py [--atoms 32768 131072 1000000] [--json out.json]

Columns: the first call (neighbour list, padding, compilation, evaluation), the
median of the following calls after small displacements (the Verlet list is
reused: padding and the compiled energy/forces/stress), and the peak memory
after the first call and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

# run in the child process: prints one JSON line
CHILD = r"""
import json, sys, time
import numpy as np
from ase.build import bulk
from mlip import Model
from mlip.calculator import MLIPCalculator

def peak_gb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")

repeat, rattle, calls, chunk_size = json.loads(sys.argv[1])
atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
atoms.rattle(rattle, seed=0)
model = Model.create(elements=["Si"], r_cut=6.0, hidden_layers=(25, 25))
kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
atoms.calc = MLIPCalculator(model, dtype="float32", compilation_cache=False, **kwargs)
start = time.perf_counter()
atoms.get_forces()
first = time.perf_counter() - start
peak_first = peak_gb()
rng = np.random.default_rng(1)
times = []
for _ in range(calls):
    atoms.positions = atoms.positions + rng.normal(scale=1e-3, size=atoms.positions.shape)
    start = time.perf_counter()
    forces = atoms.get_forces()
    times.append(time.perf_counter() - start)
print(json.dumps({"atoms": len(atoms), "first_call_s": first, "call_s": float(np.median(times)),
                  "peak_first_gb": peak_first, "peak_gb": peak_gb(),
                  "neighbor_capacity": atoms.calc.neighbor_capacity,
                  "max_force_sum": float(np.abs(forces.sum(axis=0)).max())}))
"""


def repeat_for(n_atoms: int) -> tuple[int, int, int]:
    """Repeats of the 8-atom cubic cell giving exactly ``n_atoms`` (as cubic as possible)."""
    if n_atoms % 8:
        raise ValueError(f"{n_atoms} is not a multiple of 8 (the cubic diamond cell)")
    cells = n_atoms // 8
    best = None
    for a in range(1, round(cells ** (1 / 3)) + 2):
        for b in range(a, int((cells / a) ** 0.5) + 2):
            if cells % (a * b) == 0 and cells // (a * b) >= b:
                shape = (a, b, cells // (a * b))
                if best is None or shape[2] - shape[0] < best[2] - best[0]:
                    best = shape
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[32768, 131072, 262144, 1000000])
    parser.add_argument("--rattle", type=float, default=0.05, help="random displacement, Å")
    parser.add_argument("--calls", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--chunk-size", type=int, help="MLIPCalculator chunk_size (default: its own)")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()

    print(f"diamond Si, float32, {os.cpu_count()} CPUs, load {open('/proc/loadavg').read().split()[:3]}")
    header = f"{'atoms':>8} {'repeat':>12} {'first call s':>13} {'call s':>8} {'µs/atom':>8} " \
             f"{'peak GB (1st)':>14} {'peak GB':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for n_atoms in args.atoms:
        repeat = repeat_for(n_atoms)
        payload = json.dumps([repeat, args.rattle, args.calls, args.chunk_size])
        done = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True)
        if done.returncode:
            print(f"{n_atoms:>8} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            rows.append({"atoms": n_atoms, "error": done.stderr[-2000:], "returncode": done.returncode})
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["repeat"] = list(repeat)
        row["us_per_atom"] = 1e6 * row["call_s"] / n_atoms
        row["load"] = open("/proc/loadavg").read().split()[:3]
        rows.append(row)
        print(f"{n_atoms:>8} {'x'.join(map(str, repeat)):>12} {row['first_call_s']:>13.1f} {row['call_s']:>8.2f} "
              f"{row['us_per_atom']:>8.2f} {row['peak_first_gb']:>14.2f} {row['peak_gb']:>8.2f}", flush=True)
    if args.json:
        import pathlib

        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "scale_si_diamond_float32", "machine": platform.machine(),
                                    "cpus": os.cpu_count(), "rows": rows}, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
