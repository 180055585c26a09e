"""``mlip evaluate MODEL DATA``: MAE/RMSE per config_type and parity plots; for an
ensemble model also how its uncertainties match its errors (Spearman rank
correlations, fractions within one sigma raw and calibrated, a calibration plot),
see :mod:`mlip.training.calibration`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.mlip)")
    parser.add_argument("data", nargs="+", help="labelled data files (extxyz, traj, db, input.data, ...)")
    parser.add_argument("--format", default=None, help="ASE format name (default: guessed)")
    parser.add_argument("--energy-key", default=None, help="info key of the energy (default: calculator results)")
    parser.add_argument("--forces-key", default=None, help="arrays key of the forces")
    parser.add_argument("--stress-key", default=None, help="info key of the stress")
    parser.add_argument("--plot", default=None, help="write a parity plot per data file with this prefix "
                        "(and, for an ensemble, PREFIX_STEM_calibration.png)")
    parser.add_argument("--json", default=None, help="write the metrics as JSON")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mlip.io import load_model
    from mlip.training.data import LabelKeys, read_samples, validate_samples
    from mlip.training.calibration import uncertainty_metrics, write_calibration_plot
    from mlip.training.evaluate import metrics_by_group, predict_samples, write_parity_plot
    from mlip.training.plots import metrics_table

    model = load_model(args.model)
    ensemble = model.config.ensemble > 1
    keys = LabelKeys(args.energy_key, args.forces_key, args.stress_key)
    results, rows, uncertainty = {}, {}, {}
    for path in args.data:
        samples = read_samples(path, keys, args.format)
        validate_samples(samples, model.elements, model.config.r_min)
        predictions = predict_samples(model, samples, args.dtype, uncertainty=ensemble)
        name = Path(path).name
        results[name] = metrics_by_group(predictions)
        rows.update({name if group == "all" else f"{name}/{group}": v for group, v in results[name].items()})
        if ensemble:
            uncertainty[name] = uncertainty_metrics(predictions, model.calibration)
        if args.plot:
            written = write_parity_plot(f"{args.plot}_{Path(path).stem}.png", predictions, name)
            print(f"wrote {written}")
            if ensemble:
                written = write_calibration_plot(f"{args.plot}_{Path(path).stem}_calibration.png", predictions,
                                                 model.calibration, name)
                print(f"wrote {written}")
    print(metrics_table(rows, "data/config_type"))
    if ensemble:
        factors = model.calibration or {}
        print(f"\nensemble of {model.config.ensemble}: uncertainty vs error (σ_F: per-atom devi_f; a component's σ "
              f"is σ_F/√3; calibration energy x{factors.get('energy', 1.0):.4g}, forces x{factors.get('forces', 1.0):.4g}"
              f"{'' if factors else ', none stored'})")
        print(metrics_table(uncertainty, "data"))
        results["uncertainty"] = uncertainty
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
