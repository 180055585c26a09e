"""``mlip evaluate MODEL DATA``: MAE/RMSE per config_type and parity plots."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.mlip)")
    parser.add_argument("data", nargs="+", help="labelled data files (extxyz, traj, db, input.data, ...)")
    parser.add_argument("--format", default=None, help="ASE format name (default: guessed)")
    parser.add_argument("--energy-key", default=None, help="info key of the energy (default: calculator results)")
    parser.add_argument("--forces-key", default=None, help="arrays key of the forces")
    parser.add_argument("--stress-key", default=None, help="info key of the stress")
    parser.add_argument("--plot", default=None, help="write a parity plot per data file with this prefix")
    parser.add_argument("--json", default=None, help="write the metrics as JSON")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mlip.io import load_model
    from mlip.training.data import LabelKeys, read_samples, validate_samples
    from mlip.training.evaluate import metrics_by_group, predict_samples, write_parity_plot
    from mlip.training.plots import metrics_table

    model = load_model(args.model)
    keys = LabelKeys(args.energy_key, args.forces_key, args.stress_key)
    results, rows = {}, {}
    for path in args.data:
        samples = read_samples(path, keys, args.format)
        validate_samples(samples, model.elements, model.config.r_min)
        predictions = predict_samples(model, samples, args.dtype)
        name = Path(path).name
        results[name] = metrics_by_group(predictions)
        rows.update({name if group == "all" else f"{name}/{group}": v for group, v in results[name].items()})
        if args.plot:
            written = write_parity_plot(f"{args.plot}_{Path(path).stem}.png", predictions, name)
            print(f"wrote {written}")
    print(metrics_table(rows, "data/config_type"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
