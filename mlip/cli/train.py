"""``mlip train CONFIG.toml [--resume]``: train a potential (see mlip.training.config)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML training configuration")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--epochs", type=int, help="override training.epochs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from mlip.training.config import check_config, load_config
    from mlip.training.trainer import train

    config = load_config(args.config)
    if args.epochs is not None:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=args.epochs))
        check_config(config)
    train(config, resume=args.resume, progress=False if args.no_progress else None)
    return 0
