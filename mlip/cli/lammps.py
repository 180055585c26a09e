"""``mlip lammps MODEL INPUT``: run a LAMMPS input with an mlip model as the force field.

Run it on many ranks with the MPI of the ``mpich`` wheel (``pip install 'mlip[lammps]'``)::

    mpirun -np 4 mlip lammps model.mlip in.lammps --elements Si

The input defines ``fix ID all external pf/callback 1 1`` before its first run and
sets ``comm_modify cutoff`` to at least 2 x the model cutoff + the neighbour skin
(see :mod:`mlip.lammps.runner`).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.mlip)")
    parser.add_argument("input", help="LAMMPS input file (units metal, with `fix ID all external pf/callback 1 1`)")
    parser.add_argument("--elements", nargs="+", default=None,
                        help="element of each atom type, in type order (default: matched by the types' masses)")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--skin", type=float, default=0.3,
                        help="Verlet skin of each rank's own neighbour list, Å (default %(default)s)")
    parser.add_argument("--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="LAMMPS index variable, as lmp -var NAME VALUE (repeatable)")
    parser.add_argument("--log", default="log.lammps", help="LAMMPS log file, 'none' for none (default %(default)s)")
    parser.add_argument("--no-screen", action="store_true", help="no LAMMPS screen output")
    parser.add_argument("--showew", action="store_true",
                        help="print a line at every step with extrapolation warnings (n2p2's showew)")
    parser.add_argument("--showewsum", type=int, default=0,
                        help="every N steps print the extrapolation warnings counted since the last summary "
                             "(n2p2's showewsum; default 0: never)")
    parser.add_argument("--maxew", type=int, default=None,
                        help="stop once more extrapolation warnings than this were counted (n2p2's maxew; "
                             "default: never)")
    parser.add_argument("--resetew", action="store_true", help="count --maxew per step instead of in all")
    parser.add_argument("--model-devi", default=None, metavar="FILE",
                        help="ensemble models: write DeePMD's model_devi.out columns to FILE (rank 0)")
    parser.add_argument("--model-devi-every", type=int, default=100,
                        help="steps between model-deviation rows (DeePMD's out_freq, default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from mlip.lammps import Extrapolation, ModelDeviation, run_input

    extrapolation = Extrapolation(args.showew, args.showewsum, args.maxew, args.resetew)
    model_devi = None if args.model_devi is None else ModelDeviation(args.model_devi, args.model_devi_every)
    summary = run_input(args.model, args.input, elements=args.elements, dtype=args.dtype, skin=args.skin,
                        variables=dict(args.var), log=None if args.log == "none" else args.log,
                        screen=not args.no_screen, extrapolation=extrapolation, model_devi=model_devi)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"mlip lammps: {summary.atoms} atoms on {summary.ranks} rank(s), {summary.callbacks} force-field "
              f"calls, {1e3 * summary.seconds_per_call:.3g} ms per call after the first on rank 0 "
              f"({1e3 * summary.model_seconds_per_call:.3g} ms neighbour list + model), "
              f"{summary.neighbor_builds} neighbour-list builds, {summary.compilations} compiled shape(s), "
              f"{summary.extrapolation_warnings} extrapolation warning(s)")
    return 0
