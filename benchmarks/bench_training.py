"""Training speed and accuracy on the mlearn Si set (../shared/data/si_mlearn).

Prints, for float32 and float64: featurisation time (descriptors and their
derivatives, once per data set), seconds per epoch and structures per second
(median over epochs after the first, which includes compilation), compiled
train-step shapes, and peak memory.  With ``--full`` it also runs the whole
benchmark config (benchmarks/mlearn_si/config.toml) and compares the test MAEs
with the targets of the training issue and PyXtal_FF's published BP numbers.

    python3 benchmarks/bench_training.py [--full] [--json results/training.json]

Skips (exit 0 with a message) when the data set is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "mlearn_si" / "config.toml"
TARGET = {"E MAE meV/atom": 4.0, "F MAE meV/Å": 80.0, "S MAE GPa": 0.5}
PYXTAL_BP = {"E MAE meV/atom": 5.97, "F MAE meV/Å": 115.0, "S MAE GPa": 0.72}


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def with_training(config, **changes):
    return dataclasses.replace(config, training=dataclasses.replace(config.training, **changes))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--timing-epochs", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="also train the full benchmark config")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import jax

    from mlip.training.config import load_config
    from mlip.training.trainer import prepare, train

    config = load_config(args.config)
    if not config.path(config.data.train).exists():
        print(f"skipped: {config.path(config.data.train)} not found (the mlearn Si set lives in ../shared/data)")
        return 0
    quiet = dataclasses.replace(config, output=dataclasses.replace(config.output, plots=False, progress=False))
    started = time.perf_counter()
    prepared = prepare(quiet, log=lambda line: None)
    featurize_s = time.perf_counter() - started
    n_train = len(prepared.train)
    print(f"device: {jax.devices()[0].platform}, {jax.device_count()} device(s); jax {jax.__version__}")
    print(f"featurised {n_train} training + {len(prepared.validation)} validation structures in {featurize_s:.1f} s "
          f"({prepared.train_features.nbytes() / 1e6:.0f} MB cache, buckets {prepared.train_features.shapes})")
    rows = []
    for dtype in ("float32", "float64"):
        run = with_training(quiet, epochs=args.timing_epochs, dtype=dtype, refit_offsets=False)
        with tempfile.TemporaryDirectory() as directory:
            run = dataclasses.replace(run, output=dataclasses.replace(run.output, directory=directory))
            result = train(run, log=lambda line: None, prepared=prepared)
        seconds = [b["seconds"] - a["seconds"] for a, b in zip(result.history, result.history[1:])]
        per_epoch = statistics.median(seconds) if seconds else float("nan")
        rows.append({"dtype": dtype, "s_per_epoch": per_epoch, "structures_per_s": n_train / per_epoch,
                     "first_epoch_s": result.history[0]["seconds"], "compilations": result.n_compilations,
                     "peak_memory_mb": peak_memory_mb()})
    print(f"\n{'dtype':8s} {'s/epoch':>8s} {'structures/s':>13s} {'1st epoch s':>12s} {'compiles':>9s} {'peak MB':>8s}")
    for r in rows:
        print(f"{r['dtype']:8s} {r['s_per_epoch']:8.3f} {r['structures_per_s']:13.0f} {r['first_epoch_s']:12.1f} "
              f"{r['compilations']:9d} {r['peak_memory_mb']:8.0f}")
    report = {"featurize_s": featurize_s, "timing": rows, "config": str(args.config)}

    if args.full:
        with tempfile.TemporaryDirectory() as directory:
            run = dataclasses.replace(quiet, output=dataclasses.replace(quiet.output, directory=directory))
            started = time.perf_counter()
            result = train(run, log=lambda line: None, prepared=prepared)
            total = time.perf_counter() - started + featurize_s
        test = result.metrics["test"]["all"]
        print(f"\nfull run: {config.training.epochs} epochs ({config.training.dtype}), {total / 60:.1f} min "
              f"including featurisation")
        print(f"{'test metric':16s} {'mlip':>8s} {'target':>8s} {'PyXtal_FF BP':>13s}")
        for key in TARGET:
            print(f"{key:16s} {test.get(key, float('nan')):8.2f} {TARGET[key]:8.2f} {PYXTAL_BP[key]:13.2f}")
        for entry in result.eos:
            print(f"EOS: P(V0) = {entry['pressure_gpa']:.2f} GPa, B(V0) = {entry['bulk_modulus_gpa']:.1f} GPa "
                  f"(data: V0 {entry['v0']:.3f} Å^3/atom, B0 {entry['b0']:.1f} GPa)")
        report["full"] = {"minutes": total / 60, "test": test, "metrics": result.metrics, "eos": result.eos}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
