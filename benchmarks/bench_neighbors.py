"""Neighbour-list time per atom for rattled diamond Si (6 Å cutoff), 512 to 32768 atoms.

Rows per size: vesin and matscipy (the pair lists alone), ASE (small sizes only),
mlip's host path (``host_pairs``, then ``pad_structure`` into the dense padded
layout the model takes) and mlip's jit cell list (``CellList.allocate`` on the
host, compilation of ``jax.jit(CellList.update)``, and a rebuild)::

    python3 benchmarks/bench_neighbors.py [--repeats 4 8 16] [--json out.json]

Times are wall-clock medians (µs/atom) of repeated calls; allocation and
compilation are single first calls (s).  vesin runs on all cores it is given
(``OMP_NUM_THREADS``), like the rest of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np
from ase.build import bulk
from ase.neighborlist import primitive_neighbor_list
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

from mlip import Model
from mlip.kernels.cell_list import CellList
from mlip.kernels.neighbor_list import host_pairs
from mlip.batch import pad_structure

jax.config.update("jax_enable_x64", True)  # this script is the host application


def median_time(function, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``function``, s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def first_call(function) -> tuple[float, object]:
    """Wall time of one call (s) and its result."""
    start = time.perf_counter()
    result = jax.block_until_ready(function())
    return time.perf_counter() - start, result


def diamond_si(repeat: int, rattle: float):
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=0)
    return atoms


def measure(repeat: int, cutoff: float, rattle: float, ase_limit: int) -> dict:
    atoms = diamond_si(repeat, rattle)
    positions, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    n = len(atoms)
    n_repeat = 7 if n <= 4096 else 3
    row: dict = {"atoms": n}

    import vesin

    vesin_list = vesin.NeighborList(cutoff=cutoff, full_list=True)
    row["vesin_s"] = median_time(lambda: vesin_list.compute(positions, cell, True, "ijS"), n_repeat)
    row["matscipy_s"] = median_time(
        lambda: matscipy_neighbour_list("ijS", positions=positions, cell=cell, pbc=pbc, cutoff=cutoff), n_repeat)
    if n <= ase_limit:
        row["ase_s"] = median_time(
            lambda: primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False), 1)
    pairs = host_pairs(positions, cell, pbc, cutoff)
    row["pairs"] = len(pairs[0])
    row["host_pairs_s"] = median_time(lambda: host_pairs(positions, cell, pbc, cutoff), n_repeat)
    model = Model.create(elements=["Si"], r_cut=cutoff, hidden_layers=(25, 25))
    row["pad_structure_s"] = median_time(lambda: pad_structure(model, atoms, pairs), n_repeat)
    row["host_path_s"] = row["host_pairs_s"] + row["pad_structure_s"]

    cell_list = CellList(cutoff, skin=0.0)  # skin 0: every update rebuilds
    row["cell_allocate_s"], state = first_call(lambda: cell_list.allocate(positions, cell))
    rebuild = jax.jit(cell_list.update)
    row["cell_compile_s"], _ = first_call(lambda: rebuild(state, positions, cell))
    row["cell_rebuild_s"] = median_time(lambda: rebuild(state, positions, cell), n_repeat)
    return row


COLUMNS = [("vesin", "vesin_s"), ("matscipy", "matscipy_s"), ("ASE", "ase_s"), ("host_pairs", "host_pairs_s"),
           ("pad", "pad_structure_s"), ("host+pad", "host_path_s"), ("cell rebuild", "cell_rebuild_s")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, nargs="+", default=[4, 8, 16],
                        help="cubic repeats of the 8-atom Si cell (n^3 * 8 atoms)")
    parser.add_argument("--cutoff", type=float, default=6.0, help="cutoff, Å")
    parser.add_argument("--rattle", type=float, default=0.05, help="random displacement, Å")
    parser.add_argument("--ase-limit", type=int, default=4096, help="largest system ASE's list is timed on")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()

    print(f"cutoff {args.cutoff} Å, rattle {args.rattle} Å, {os.cpu_count()} CPUs, "
          f"load {open('/proc/loadavg').read().split()[:3]}; times in µs/atom")
    header = f"{'atoms':>7} {'pairs/atom':>10} " + " ".join(f"{name:>12}" for name, _ in COLUMNS) + \
        f" {'alloc s':>8} {'compile s':>9} {'host+pad/vesin':>15}"
    print(header)
    print("-" * len(header))
    rows = []
    for repeat in args.repeats:
        row = measure(repeat, args.cutoff, args.rattle, args.ase_limit)
        rows.append(row)
        n = row["atoms"]
        cells = " ".join(f"{1e6 * row[key] / n:>12.2f}" if key in row else f"{'-':>12}" for _, key in COLUMNS)
        print(f"{n:>7} {row['pairs'] / n:>10.1f} {cells} {row['cell_allocate_s']:>8.2f} "
              f"{row['cell_compile_s']:>9.2f} {row['host_path_s'] / row['vesin_s']:>15.2f}")
    if args.json:
        import pathlib

        import vesin

        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "benchmark": "neighbor_lists_si_diamond", "cutoff": args.cutoff, "rattle": args.rattle,
            "machine": platform.machine(), "cpus": os.cpu_count(), "load": open("/proc/loadavg").read().split()[:3],
            "jax": jax.__version__, "vesin": vesin.__version__, "rows": rows,
        }, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
