"""``mlip learn CONFIG``: active learning (train an ensemble -> explore with MD ->
select by force deviation and diversity -> label with an oracle -> repeat)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="learn TOML config ([train] table + [learn], [oracle], [explore], [select], "
                                       "[stop]; see mlip.learn.config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed loop: finished steps are skipped, no structure is labelled twice")


def run(args: argparse.Namespace) -> int:
    from mlip.learn import learn, load_learn_config

    config = load_learn_config(args.config)
    records = learn(config, resume=args.resume)
    print(f"{len(records)} iteration(s); report {config.path(config.learn.directory) / 'report.csv'}")
    return 0
