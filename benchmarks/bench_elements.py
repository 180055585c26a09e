"""Energy + forces time vs number of elements: every network on every row vs each
element's network on its own atoms (``element_rows``), in the same run.

Random-substitution diamond crystals of 1, 2 and 4 elements (the same atoms, only
the element labels differ), float64, cutoff 5 Å, default symmetry-function grids,
networks of ``--hidden`` widths; median of repeated jit-compiled energy+forces+virial
calls, and of the network half alone (energies and their gradient with respect to
precomputed descriptors).

    python3 benchmarks/bench_elements.py [--atoms 1728] [--hidden 25 25] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from ase import Atoms

from mlip import Model
from mlip.kernels.neighbor_list import host_pairs
from mlip.model import make_model_functions
from mlip.batch import pad_structure

jax.config.update("jax_enable_x64", True)  # this script is the host application: float64 throughout

ELEMENT_SETS = {1: ["Si"], 2: ["Si", "Ge"], 4: ["Si", "Ge", "C", "Sn"]}


def structure(n_atoms: int, symbols: list[str], seed: int = 0) -> Atoms:
    """Diamond-density random-substitution crystal (rattled diamond lattice)."""
    from ase.build import bulk

    repeat = max(1, round((n_atoms / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.rattle(0.05, seed=seed)
    atoms.set_chemical_symbols(rng.choice(symbols, len(atoms)))
    return atoms


def median_seconds(function, args, repeats: int) -> tuple[float, float]:
    """(compile + first call, median of ``repeats`` further calls), seconds."""
    started = time.perf_counter()
    jax.block_until_ready(function(*args))
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - started)
    return first, statistics.median(times)


def time_energy_forces(n_elements: int, n_atoms: int, repeats: int, hidden: tuple[int, ...]) -> dict:
    elements = ELEMENT_SETS[n_elements]
    model = Model.create(elements=elements, r_cut=5.0, n_radial=6, n_angular=3, hidden_layers=hidden)
    atoms = structure(n_atoms, elements)
    padded = pad_structure(model, atoms, host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff))
    functions = make_model_functions(model.config)
    *inputs, rows = padded.as_jax(with_element_rows=True)
    descriptors = jax.jit(functions.descriptors)(*inputs)
    evaluate = jax.jit(functions.energy_forces_virial)
    network = jax.jit(jax.value_and_grad(
        lambda params, g, species, rows: functions.energies_from_features(params, g, species, rows).sum(), argnums=1))
    row = {"elements": n_elements, "atoms": len(atoms), "padded_rows": int(padded.positions.shape[0]),
           "features": model.config.symmetry_functions.n_union, "hidden_layers": list(hidden)}
    for name, element_rows in (("every_row", None), ("own_rows", rows)):
        compile_s, seconds = median_seconds(evaluate, (model.params, *inputs, element_rows), repeats)
        _, network_seconds = median_seconds(network, (model.params, descriptors, inputs[2], element_rows), repeats)
        row[name] = {"seconds": seconds, "us_per_atom": 1e6 * seconds / len(atoms), "compile_s": compile_s,
                     "network_seconds": network_seconds}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=1728)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[25, 25], help="hidden layer widths")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind}, networks {args.hidden}, float64")
    rows = [time_energy_forces(n, args.atoms, args.repeats, tuple(args.hidden)) for n in (1, 2, 4)]
    print(f"{'elements':>8s} {'atoms':>6s} {'features':>8s} {'networks on':>11s} {'E+F ms':>8s} {'µs/atom':>8s} "
          f"{'networks ms':>11s} {'compile s':>9s}")
    for r in rows:
        for name in ("every_row", "own_rows"):
            t = r[name]
            print(f"{r['elements']:8d} {r['atoms']:6d} {r['features']:8d} {name.replace('_', ' '):>11s} "
                  f"{1e3 * t['seconds']:8.1f} {t['us_per_atom']:8.1f} {1e3 * t['network_seconds']:11.2f} "
                  f"{t['compile_s']:9.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": jax.devices()[0].device_kind, "jax": jax.__version__,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
