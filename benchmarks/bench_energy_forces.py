"""Energy + forces time per atom for diamond Si, 64 to 32768 atoms.

Prints a table and optionally writes JSON::

    python benchmarks/bench_energy_forces.py --json benchmarks/results/energy_forces.json

Times are wall-clock medians of repeated calls of the jit-compiled
energy/forces/virial function (compilation excluded, reported separately), and of
the host neighbour list (vesin) that the ASE calculator builds per call, and
of a rebuild of the jit-compiled cell list that compiled MD loops use.
``--backends native jax`` times the compiled descriptor kernel and the JAX one
(the code before it) in the same run and prints their ratio and energy
difference.  ``--extrapolation`` also times the same call with the per-atom
extrapolation flags (training range = the structure's own descriptor range) and
prints the cost ratio.  ``--ensemble K`` times a K-member ensemble of the same
architecture (descriptors computed once): its mean with the energy uncertainty
(``annotated``), and every member's energy, forces and virial (``member_results``,
what per-atom force uncertainties need), as ratios to the single model.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np
from ase.build import bulk

from mlip import Model
from mlip.kernels.cell_list import CellList
from mlip.kernels.neighbor_list import host_pairs
from mlip.batch import pad_structure

from common import WORKLOADS, benchmark_model

jax.config.update("jax_enable_x64", True)  # this script is the host application: float64 throughout


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, nargs="+", default=[2, 4, 6, 8, 10, 16],
                        help="cubic repeats of the 8-atom Si cell (n^3 * 8 atoms)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--cutoff", type=float, default=6.0, help="symmetry-function cutoff, Å")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--workload", choices=WORKLOADS, default="type9",
                        help="angular symmetry functions of the default grid (8 type 2 + 16 angular, "
                             "eta ~ 0.099, 0.041, 0.022, 0.014 Å^-2, zeta 1 and 4, lambda ±1): wide type 9 "
                             "with the tanh cutoff (the default model), or narrow type 3 with the cosine "
                             "cutoff (issue 11's type-3 set); mixed: types 2, 3 and 9 together with the "
                             "cosine cutoff, per element pair 8 type 2, 16 type 3 and 24 type 9 (6 etas), "
                             "like the Cu2S potential's 16 + 56 + 66 for two elements")
    parser.add_argument("--backends", nargs="+", choices=["native", "jax"], default=["native"],
                        help="descriptor kernels to time, in the same run: the compiled one and/or the "
                             "JAX one (before the compiled kernel existed)")
    parser.add_argument("--rattle", type=float, default=0.02, help="random displacement, Å (issue 11: 0.05)")
    parser.add_argument("--elements", nargs="+", default=["Si"],
                        help="elements of the model; with more than one, the diamond lattice's atoms are "
                             "substituted at random in equal shares (e.g. --elements Si Ge: element-resolved "
                             "functions, one network per element)")
    parser.add_argument("--extrapolation", action="store_true",
                        help="also time energy+forces with per-atom extrapolation flags, and the ratio")
    parser.add_argument("--ensemble", type=int, default=0,
                        help="also time a K-member ensemble: mean + energy sigma, and every member's forces")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()

    from mlip.batch import compute_descriptors
    from mlip.model import feature_bounds, make_model_functions
    from mlip.training.scaling import with_feature_range

    model = benchmark_model(args.workload, args.elements, args.cutoff)
    dtype = jax.numpy.dtype(args.dtype)
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), model.params)
    functions = {backend: make_model_functions(model.config, args.chunk_size, backend) for backend in args.backends}
    evaluators = {backend: jax.jit(f.energy_forces_virial) for backend, f in functions.items()}
    if args.ensemble:
        ensemble = Model.create(symmetry_functions=model.config.symmetry_functions, hidden_layers=(25, 25),
                                ensemble=args.ensemble)
        ensemble_params = jax.tree_util.tree_map(lambda x: x.astype(dtype), ensemble.params)
        ensemble_functions = {backend: make_model_functions(ensemble.config, args.chunk_size, backend)
                              for backend in args.backends}
    n_features = model.config.symmetry_functions.n_features(args.elements[0])
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), dtype {args.dtype}, "
          f"workload {args.workload}, elements {'-'.join(args.elements)}, "
          f"cutoff {args.cutoff} Å, {n_features} symmetry functions, network {model.config.hidden_layers}")
    header = (f"{'atoms':>7} {'neigh':>6} {'kernel':>7} {'compile s':>10} {'E+F ms':>10} {'µs/atom':>9} "
              f"{'NL ms':>8} {'NL µs/atom':>11} {'cells ms':>9} {'cells µs/atom':>14}")
    print(header)
    print("-" * len(header))
    rows = []
    for repeat in args.repeats:
        atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
        atoms.rattle(args.rattle, seed=0)
        if len(args.elements) > 1:
            atoms.symbols = np.random.default_rng(0).permutation(np.resize(args.elements, len(atoms)))
        pairs_fn = lambda: host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)  # noqa: E731
        padded = pad_structure(model, atoms, pairs_fn())
        inputs = padded.as_jax(dtype, with_element_rows=True)  # each element's network on its own atoms
        n_repeat = 5 if len(atoms) <= 4096 else 2
        nl_s = median_time(pairs_fn, n_repeat)
        cell_list = CellList(model.cutoff, skin=0.0)  # skin 0: every update rebuilds
        positions, cell, species = inputs[:3]
        state = cell_list.allocate(positions, cell, atom_mask=species >= 0)
        rebuild = jax.jit(cell_list.update)
        jax.block_until_ready(rebuild(state, positions, cell))
        cells_s = median_time(lambda: jax.block_until_ready(rebuild(state, positions, cell)), n_repeat)
        energies = {}
        for backend, evaluate in evaluators.items():
            start = time.perf_counter()
            energies[backend] = float(jax.block_until_ready(evaluate(params, *inputs)).energy)
            compile_s = time.perf_counter() - start
            run_s = median_time(lambda: jax.block_until_ready(evaluate(params, *inputs)), n_repeat)
            row = {
                "atoms": len(atoms), "padded_atoms": int(padded.positions.shape[0]), "kernel": backend,
                "neighbor_capacity": padded.nl.capacity, "compile_s": compile_s,
                "energy_forces_s": run_s, "us_per_atom": 1e6 * run_s / len(atoms),
                "neighbor_list_s": nl_s, "neighbor_list_us_per_atom": 1e6 * nl_s / len(atoms),
                "cell_list_s": cells_s, "cell_list_us_per_atom": 1e6 * cells_s / len(atoms),
            }
            if args.extrapolation:
                ranged = with_feature_range(model, compute_descriptors(model, [atoms]))
                bounds = feature_bounds(model.config, ranged.feature_range, dtype)
                flagged = jax.jit(functions[backend].annotated)
                jax.block_until_ready(flagged(params, *inputs, bounds))
                flagged_s = median_time(lambda: jax.block_until_ready(flagged(params, *inputs, bounds)), n_repeat)
                row.update({"with_flags_s": flagged_s, "flags_cost_ratio": flagged_s / run_s})
            if args.ensemble:
                for name in ("annotated", "member_results"):
                    timed = jax.jit(getattr(ensemble_functions[backend], name))
                    jax.block_until_ready(timed(ensemble_params, *inputs))
                    row[f"ensemble_{name}_s"] = median_time(
                        lambda: jax.block_until_ready(timed(ensemble_params, *inputs)), n_repeat)
            rows.append(row)
            print(f"{row['atoms']:>7} {row['neighbor_capacity']:>6} {backend:>7} {compile_s:>10.2f} "
                  f"{1e3 * run_s:>10.2f} {row['us_per_atom']:>9.2f} {1e3 * nl_s:>8.2f} "
                  f"{row['neighbor_list_us_per_atom']:>11.2f} {1e3 * cells_s:>9.2f} "
                  f"{row['cell_list_us_per_atom']:>14.2f}")
            if args.extrapolation:
                print(f"{'':>15} with extrapolation flags {1e6 * flagged_s / len(atoms):.2f} µs/atom, "
                      f"x{row['flags_cost_ratio']:.3f} of energy+forces")
            if args.ensemble:
                print(f"{'':>15} ensemble of {args.ensemble}: mean + energy sigma "
                      f"x{row['ensemble_annotated_s'] / run_s:.3f}, every member's forces (force sigma) "
                      f"x{row['ensemble_member_results_s'] / run_s:.3f} of one model")
        if len(energies) == 2:
            times = {row["kernel"]: row["us_per_atom"] for row in rows[-2:]}
            print(f"{'':>15} native/jax time ratio {times['native'] / times['jax']:.3f}, "
                  f"energy difference {abs(energies['native'] - energies['jax']):.2e} eV")
    if args.json:
        import pathlib

        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "benchmark": "energy_forces_si_diamond",
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "dtype": args.dtype, "workload": args.workload, "elements": args.elements, "rattle": args.rattle,
            "cutoff": args.cutoff, "n_features": n_features,
            "hidden_layers": list(model.config.hidden_layers), "jax": jax.__version__, "rows": rows,
        }, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
