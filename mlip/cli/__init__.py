"""Command-line interface: ``mlip SUBCOMMAND ...``.

Each subcommand is a module with ``add_arguments(parser)`` and ``run(args)``;
heavy imports (JAX) happen inside ``run``.  Errors print one line (the full
traceback with ``--traceback``) and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

SUBCOMMANDS = {
    "train": "Train a potential from a TOML config",
    "evaluate": "Error metrics and parity plots of a model on labelled data",
    "template": "Print a commented default config",
    "validate": "Check a training config and its data without training",
    "md": "Compiled molecular dynamics (NVE, NVT, NPT) with a model",
    "ti": "Free energy of a crystal by Frenkel-Ladd thermodynamic integration",
    "learn": "Active learning: ensemble, MD exploration, selection by force deviation, oracle labels",
    "lammps": "Run a LAMMPS input with a model as its force field (fix external, MPI ranks)",
    "export": "Write a model in another code's format (n2p2 / LAMMPS pair_style hdnnp / pair_style mlip)",
    "lammps-plugin": "Build mlip's compiled LAMMPS pair style (pair_style mlip) and print the plugin path",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlip", description="Behler-Parrinello neural-network potentials in JAX")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"mlip.cli.{name.replace('-', '_')}")
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def _one_line_warnings(command: str):
    """Show mlip's own warnings as one line ``mlip COMMAND: warning: ...`` (others as
    Python does); returns the previous ``warnings.showwarning``."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("mlip"):
            return shown(message, category, filename, lineno, file, line)
        print(f"mlip {command}: warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show
    return shown


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlip`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    previous = _one_line_warnings(args.command)
    try:
        return _run(args)
    finally:
        warnings.showwarning = previous


def _run(args: argparse.Namespace) -> int:
    from mlip.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # a second run loads compiled code from disk (opt out: MLIP_COMPILATION_CACHE=off)
    try:
        status = args.run(args)
    except KeyboardInterrupt:
        print("mlip: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line unless --traceback
        if args.traceback:
            raise
        print(f"mlip {args.command}: error: {error}", file=sys.stderr)
        return 1
    return int(status or 0)
