"""Ensemble uncertainty on the mlearn Si set (../shared/data/si_mlearn).

Trains an ensemble (default 8 members, one process, one compiled step per bucket)
with the benchmark config (benchmarks/mlearn_si/config.toml); the trainer fits
the calibration factors on its validation split (10 % of train.xyz) and the
script reports, on test.xyz: Spearman rank correlations of the spread with the
error (per-atom devi_f vs |F error|, per-structure maxima, energy sigma vs |E
error| per atom), the fraction of force components and energies within ±1 sigma
raw and calibrated (0.683 for well-calibrated Gaussian errors), and the test MAEs
of the ensemble mean against member 0's alone; as a table and, with --json, JSON.

    python3 benchmarks/bench_uncertainty.py [--members 8] [--epochs 100] [--bootstrap] [--json FILE]

Skips (exit 0 with a message) when the data set is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "mlearn_si" / "config.toml"
MAE_KEYS = ("E MAE meV/atom", "F MAE meV/Å", "S MAE GPa")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--members", type=int, default=8, help="ensemble members")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (the config's 800 take long)")
    parser.add_argument("--bootstrap", action="store_true", help="train each member on a bootstrap resample")
    parser.add_argument("--json", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    import jax

    from mlip.training.calibration import uncertainty_metrics
    from mlip.training.config import check_config, load_config
    from mlip.training.evaluate import metrics_by_group, predict_samples
    from mlip.training.trainer import load_splits, train

    config = load_config(args.config)
    if not config.path(config.data.train).exists() or not config.data.test:
        print(f"skipped: {config.path(config.data.train)} not found (the mlearn Si set lives in ../shared/data)")
        return 0
    with tempfile.TemporaryDirectory() as directory:
        config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, ensemble=args.members, bootstrap=args.bootstrap),
            training=dataclasses.replace(config.training, epochs=args.epochs),
            output=dataclasses.replace(config.output, directory=directory, plots=False, progress=False),
        )
        check_config(config)
        lines: list[str] = []
        started = time.perf_counter()
        result = train(config, log=lines.append)
        seconds = time.perf_counter() - started
    print(f"device: {jax.devices()[0].platform}; {args.members} members, {args.epochs} epochs"
          f"{', bootstrap' if args.bootstrap else ''}: {seconds:.0f} s in all, {result.n_compilations} compiled "
          f"train-step shape(s)")
    print("\n".join(line for line in lines if line.startswith(("ensemble", "uncertainty calibration", "train:",
                                                                 "validation:", "test:"))))
    model = result.model
    _, _, test = load_splits(config)
    predictions = predict_samples(model, test, uncertainty=True)
    metrics = uncertainty_metrics(predictions, model.calibration)
    mean_mae = metrics_by_group(predictions)["all"]
    member_mae = metrics_by_group(predict_samples(model.member(0), test))["all"]
    print(f"\ntest set ({len(test)} structures, {sum(s.n_atoms for s in test)} atoms)")
    print(f"{'metric':28s} {'value':>9s}")
    for key, value in metrics.items():
        print(f"{key:28s} {value:9.3f}")
    print(f"\n{'test MAE':16s} {'ensemble mean':>14s} {'member 0':>10s}")
    for key in MAE_KEYS:
        if key in mean_mae:
            print(f"{key:16s} {mean_mae[key]:14.3f} {member_mae[key]:10.3f}")
    summary = {"members": args.members, "epochs": args.epochs, "bootstrap": args.bootstrap, "seconds": seconds,
               "compilations": result.n_compilations, "calibration": model.calibration, "test": metrics,
               "test_mae_mean": {k: mean_mae[k] for k in MAE_KEYS if k in mean_mae},
               "test_mae_member0": {k: member_mae[k] for k in MAE_KEYS if k in member_mae},
               "device": jax.devices()[0].platform}
    print("\n" + json.dumps(summary, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
