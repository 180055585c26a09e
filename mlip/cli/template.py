"""``mlip template train``: print a commented default training config."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["train"], help="which config")


def run(args: argparse.Namespace) -> int:
    from mlip.training.config import template

    print(template())
    return 0
