"""What every peer script of :mod:`bench_peers` shares: its command line, the
structure file, the timing rule and the one JSON line it prints.

Only numpy and the standard library are used, so the scripts run in a peer's
own virtual environment (jax-md, TorchANI), where mlip and ASE are absent.
``bench_peers.py`` starts each script as its own process, with the thread
settings already in its environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import numpy as np

# the symmetry-function grid of issue 11 (what mlip's Model.create makes for Si with
# r_cut = 6 Å): 8 radial centres r_s on [1, 6] Å, width eta = 1 / (2 dr^2) with
# dr = 5/7 Å; angular eta_n = 1 / (2 r_n^2) for r_n = 2.25, 3.5, 4.75, 6 Å.
R_CUT = 6.0
RADIAL_SHIFTS = np.linspace(1.0, R_CUT, 8)
RADIAL_ETA = 1.0 / (2.0 * (RADIAL_SHIFTS[1] - RADIAL_SHIFTS[0]) ** 2)
ANGULAR_ETAS = 1.0 / (2.0 * np.linspace(1.0, R_CUT, 5)[1:] ** 2)  # 0.099, 0.041, 0.022, 0.014 Å^-2
ZETAS = (1.0, 4.0)
LAMBDAS = (1.0, -1.0)
HIDDEN = (25, 25)


def parse_args(workloads: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one peer benchmark run; prints one JSON line")
    parser.add_argument("--structure", required=True,
                        help=".npz with positions [N, 3] Å (wrapped into the cell), cell [3, 3] Å, numbers [N]")
    parser.add_argument("--workload", choices=workloads, required=True)
    parser.add_argument("--dtype", choices=["float64", "float32"], required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def load_structure(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions [N, 3] Å, cell [3, 3] Å, atomic numbers [N])`` from the file."""
    with np.load(path) as data:
        return data["positions"], data["cell"], data["numbers"]


def time_calls(call: Callable[[], tuple[float, np.ndarray]], repeats: int) -> dict:
    """Time ``call`` (energy+forces, returning ``(energy eV, forces [N, 3] eV/Å)`` as
    host values, so the work is finished): the first call (compilation, tracing or
    warm-up) on its own, then the median of ``repeats`` further calls, seconds."""
    start = time.perf_counter()
    energy, forces = call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        energy, forces = call()
        times.append(time.perf_counter() - start)
    forces = np.asarray(forces, dtype=np.float64)
    return {"first_call_s": first, "median_s": float(np.median(times)), "times_s": times,
            "energy_eV": float(energy), "max_abs_force_eV_per_A": float(np.abs(forces).max()),
            "net_force_eV_per_A": float(np.abs(forces.sum(axis=0)).max())}


def emit(record: dict) -> None:
    """Print the result as the one line starting with ``{`` that bench_peers reads."""
    record = {"python": sys.version.split()[0], **record}
    print(json.dumps(record), flush=True)
