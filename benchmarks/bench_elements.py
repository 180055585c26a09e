"""Energy + forces time vs number of elements (each element's network on its own atoms).

Random dense structures of 2 and 4 elements (the same atoms, only the element
labels differ), float64, cutoff 5 Å, default symmetry-function grids, 
networks (``--hidden``); median of repeated jit-compiled energy+forces+virial calls.

    python3 benchmarks/bench_elements.py [--atoms 2000] [--json out.json]
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
from mlip.padding import pad_structure

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


def time_energy_forces(n_elements: int, n_atoms: int, repeats: int, hidden: tuple[int, ...]) -> dict:
    elements = ELEMENT_SETS[n_elements]
    model = Model.create(elements=elements, r_cut=5.0, n_radial=6, n_angular=3, hidden_layers=hidden)
    atoms = structure(n_atoms, elements)
    padded = pad_structure(model, atoms, host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff))
    evaluate = jax.jit(make_model_functions(model.config).energy_forces_virial)
    args = padded.as_jax()
    started = time.perf_counter()
    jax.block_until_ready(evaluate(model.params, *args))
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(evaluate(model.params, *args))
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    # the network half alone: energies and their gradient w.r.t. precomputed descriptors
    functions = make_model_functions(model.config)
    descriptors = jax.jit(functions.descriptors)(*args)
    network = jax.jit(jax.value_and_grad(
        lambda params, g, species: functions.energies_from_features(params, g, species).sum(), argnums=1))
    jax.block_until_ready(network(model.params, descriptors, args[2]))
    network_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(network(model.params, descriptors, args[2]))
        network_times.append(time.perf_counter() - started)
    return {"elements": n_elements, "atoms": len(atoms), "features": model.config.symmetry_functions.n_union,
            "seconds": median, "us_per_atom": 1e6 * median / len(atoms), "compile_s": compile_s,
            "network_seconds": statistics.median(network_times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=1728)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[25, 25], help="hidden layer widths")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = [time_energy_forces(n, args.atoms, args.repeats, tuple(args.hidden)) for n in (1, 2, 4)]
    print(f"{'elements':>8s} {'atoms':>6s} {'descriptors':>11s} {'E+F ms':>8s} {'µs/atom':>8s} "
          f"{'networks ms':>11s} {'compile s':>9s}")
    for r in rows:
        print(f"{r['elements']:8d} {r['atoms']:6d} {r['features']:11d} {1e3 * r['seconds']:8.1f} "
              f"{r['us_per_atom']:8.1f} {1e3 * r['network_seconds']:11.2f} {r['compile_s']:9.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
