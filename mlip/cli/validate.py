"""``mlip validate CONFIG.toml``: check a config and every structure of its data."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML training configuration")


def run(args: argparse.Namespace) -> int:
    from mlip.training.config import load_config
    from mlip.training.data import describe, validate_samples
    from mlip.training.trainer import initial_model, load_splits

    config = load_config(args.config)
    train, validation, test = load_splits(config)
    model = initial_model(config, train)
    validate_samples(train + validation + test, model.elements, model.config.r_min,
                     stress_required=config.loss.stress_weight != 0)
    for name, samples in (("train", train), ("validation", validation), ("test", test)):
        print(f"{name}: {describe(samples) if samples else 'none'}")
    print(f"config and data are valid (elements {list(model.elements)}, r_min {model.config.r_min} Å)")
    return 0
