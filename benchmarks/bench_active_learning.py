"""Active learning against random selection on Stillinger-Weber Si (examples/learn_si).

Both curves start from the same 10 SW-labelled structures (seed.extxyz) and are
scored on the same held-out SW MD test set (test.extxyz, 300-1500 K):

* curve A, active learning: ``mlip learn examples/learn_si/config.toml`` (run here,
  or reused with ``--resume`` when its directory holds a finished loop); the test
  force MAE of each iteration's ensemble against the structures it was trained on
  (report.csv: ``labels - new_labels``, the seed set included);
* curve B, random selection: the pool is every frame the loop explored (the union of
  all iterations' ``explored.extxyz``, i.e. MD driven by the loop's own ensembles);
  one seeded random permutation of it, and for each curve-A point the first
  ``n - 10`` frames of it labelled by SW and added to the seed set (nested sets;
  frames the oracle fails on are skipped).  Training is the loop's own step
  (mlip.learn.loop.train_iteration): the same [train] config, the first point is the
  loop's iteration-0 model (the same 10 structures), every later one fine-tuned
  from the previous random model, as the loop fine-tunes from its previous iteration.

Prints both curves as a table and how many structures each needs to reach the
target force MAE (default 60 meV/Å); writes JSON and a PNG plot.

    python3 benchmarks/bench_active_learning.py [--iterations N] [--epochs N] [--per-iteration N]
        [--output DIR] [--directory DIR] [--resume]

``--directory examples/learn_si/learn --resume`` reuses the demo's finished loop
(same config) as curve A and only computes curve B.

Default output: benchmarks/results/active_learning/ (loop in learn/, random runs in
random/, active_learning.json, active_learning.png).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import runpy
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "learn_si"


def _needed(curve: list[dict], target: float) -> int | None:
    """Structures trained on at the first point with force MAE <= target (None if never)."""
    for point in curve:
        if point["test_F_MAE_meV_per_A"] <= target:
            return point["structures"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(EXAMPLE / "config.toml"))
    parser.add_argument("--iterations", type=int, default=None, help="loop iterations (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument("--per-iteration", type=int, default=None,
                        help="labels per iteration, select.max_per_iteration (default: the config's); smaller "
                             "gives a finer curve near the target")
    parser.add_argument("--output", default=str(HERE / "results" / "active_learning"))
    parser.add_argument("--directory", default=None, help="the loop's directory (default OUTPUT/learn)")
    parser.add_argument("--resume", action="store_true", help="continue or reuse the loop in --directory")
    parser.add_argument("--target", type=float, default=60.0, help="force MAE target, meV/Å")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    args = parser.parse_args(argv)

    import numpy as np
    from ase.io import read

    from mlip.files import save_figure, write_text_atomic
    from mlip.io import load_model
    from mlip.learn import learn
    from mlip.learn.config import learn_config_from_dict
    from mlip.learn.loop import DataStore, train_iteration, label, make_oracle
    from mlip.plots import new_figure
    from mlip.training.data import read_samples
    from mlip.training.evaluate import metrics_by_group, predict_samples

    config_path = Path(args.config).resolve()
    base = config_path.parent
    data = tomllib.loads(config_path.read_text())
    if not all((base / name).exists() for name in ("seed.extxyz", "start.extxyz", "test.extxyz")):
        print("writing the demo inputs (make_inputs.py)", flush=True)
        runpy.run_path(str(base / "make_inputs.py"), run_name="__main__")
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    directory = Path(args.directory).resolve() if args.directory else output / "learn"
    data.setdefault("learn", {})["directory"] = str(directory)
    if args.iterations is not None:
        data["learn"]["iterations"] = args.iterations
    if args.per_iteration is not None:
        data.setdefault("select", {})["max_per_iteration"] = args.per_iteration
    if args.epochs is not None:
        data["train"].setdefault("training", {})["epochs"] = args.epochs
    config = learn_config_from_dict(data, base_dir=base)

    started = time.perf_counter()
    learn(config, resume=args.resume, log=lambda line: print(line, flush=True))
    loop_seconds = time.perf_counter() - started
    with open(directory / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    active = [{"iteration": int(r["iteration"]), "structures": int(r["labels"]) - int(r["new_labels"]),
               "test_F_MAE_meV_per_A": float(r["test_F_MAE_meV_per_A"]),
               "test_E_MAE_meV_per_atom": float(r["test_E_MAE_meV_per_atom"]),
               "seconds": float(r["seconds"])} for r in rows]

    # curve B: random selection from every frame the loop explored
    started = time.perf_counter()
    seed_frames = read(config.path(config.learn.initial), index=":")
    for n, atoms in enumerate(seed_frames):
        atoms.info["learn_id"] = f"initial-{n}"
    pool = [frame for r in rows
            for frame in read(directory / f"iter_{int(r['iteration']):03d}" / "explored.extxyz", index=":")]
    order = list(np.random.default_rng(args.seed).permutation(len(pool)))
    oracle = make_oracle(config)
    test = read_samples(config.path(config.learn.test))
    chosen: list = []
    random_curve = []
    previous = None
    for point in active:
        step_started = time.perf_counter()
        want = point["structures"] - len(seed_frames)
        while len(chosen) < want and order:
            labelled = label(pool[int(order.pop(0))], oracle)
            if labelled is not None:
                chosen.append(labelled)
        if len(chosen) < want:
            print(f"random: the pool ({len(pool)} frames) cannot give {want} labels; stopping")
            break
        if point["iteration"] == 0:  # the same 10 structures, the same config: the loop's own model
            model_path = directory / "iter_000" / "train" / config.train.output.model_name
        else:
            folder = output / "random" / f"n_{point['structures']:04d}"
            store = DataStore(folder)
            folder.mkdir(parents=True, exist_ok=True)
            if not store.data.exists():
                store.add(seed_frames + chosen)
            model_path = train_iteration(config, store, folder, previous, log=lambda line: None, progress=False)
        previous = model_path
        metrics = metrics_by_group(predict_samples(load_model(model_path), test))["all"]
        random_curve.append({"structures": point["structures"], "test_F_MAE_meV_per_A": metrics["F MAE meV/Å"],
                             "test_E_MAE_meV_per_atom": metrics["E MAE meV/atom"],
                             "seconds": time.perf_counter() - step_started})
        print(f"random: {point['structures']} structures, test F MAE {metrics['F MAE meV/Å']:.1f} meV/Å", flush=True)
    random_seconds = time.perf_counter() - started

    need_a, need_b = _needed(active, args.target), _needed(random_curve, args.target)
    header = f"{'structures':>10} {'active F MAE':>13} {'random F MAE':>13}   (meV/Å, {len(test)} test frames)"
    lines = [header]
    by_n = {p["structures"]: p for p in random_curve}
    for p in active:
        b = by_n.get(p["structures"])
        lines.append(f"{p['structures']:>10} {p['test_F_MAE_meV_per_A']:>13.1f} "
                     f"{b['test_F_MAE_meV_per_A'] if b else math.nan:>13.1f}")
    lines.append(f"structures to reach F MAE <= {args.target:g} meV/Å: active {need_a or 'not reached'}, "
                 f"random {need_b or 'not reached'} (oracle labels: minus the {len(seed_frames)} seed structures)")
    if need_a and need_b:
        lines.append(f"active / random = {need_a / need_b:.2f} (goal <= 0.5: {'met' if need_a <= 0.5 * need_b else 'not met'})")
    lines.append(f"wall time: loop {loop_seconds:.0f} s{' (resumed/reused)' if args.resume else ''}, "
                 f"random curve {random_seconds:.0f} s; pool {len(pool)} explored frames")
    print("\n".join(lines))

    result = {"config": str(config_path), "overrides": {"iterations": args.iterations, "epochs": args.epochs,
                                                           "max_per_iteration": args.per_iteration},
              "target_F_MAE_meV_per_A": args.target, "random_seed": args.seed,
              "pool": "union of the loop's explored frames (all iterations)", "pool_frames": len(pool),
              "test_frames": len(test), "active": active, "random": random_curve,
              "structures_needed": {"active": need_a, "random": need_b},
              "oracle_labels_needed": {"active": need_a and need_a - len(seed_frames),
                                       "random": need_b and need_b - len(seed_frames)},
              "seconds": {"loop": loop_seconds, "random": random_seconds, "loop_resumed": args.resume},
              "python": sys.version.split()[0]}
    write_text_atomic(output / "active_learning.json", json.dumps(result, indent=1))
    figure = new_figure(5.5, 4.0)
    axes = figure.subplots()
    axes.plot([p["structures"] for p in active], [p["test_F_MAE_meV_per_A"] for p in active], marker="o",
              label="active learning (mlip learn)")
    axes.plot([p["structures"] for p in random_curve], [p["test_F_MAE_meV_per_A"] for p in random_curve],
              marker="s", label="random from the explored pool")
    axes.axhline(args.target, color="grey", linestyle="--", linewidth=1, label=f"{args.target:g} meV/Å")
    axes.set_xlabel("structures trained on (10 seed + oracle labels)")
    axes.set_ylabel("test force MAE (meV/Å)")
    axes.legend()
    save_figure(figure, output / "active_learning.png")
    print(f"wrote {output / 'active_learning.json'} and {output / 'active_learning.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
