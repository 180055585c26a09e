"""``mlip export n2p2 MODEL DIR``: write a model as an n2p2 potential directory;
``mlip export lammps MODEL OUT.mlipff``: write it for mlip's compiled LAMMPS pair
style (``pair_style mlip``, built by ``mlip lammps-plugin``)."""

from __future__ import annotations

import argparse

FORMATS = ("n2p2", "lammps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="target format")
    parser.add_argument("model", help="model file (.mlip)")
    parser.add_argument("directory", help="n2p2: output folder (input.nn, scaling.data, weights.ZZZ.data); "
                                          "lammps: the model file to write (.mlipff)")
    parser.add_argument("--range-from", nargs="+", default=None, metavar="DATA",
                        help="structure files (e.g. the training set) whose symmetry-function range is written to "
                             "scaling.data for n2p2's extrapolation warnings (default: no warnings)")
    parser.add_argument("--data-format", default=None, help="ASE format of the --range-from files (default: guessed)")


def run(args: argparse.Namespace) -> int:
    from mlip.io import load_model
    from mlip.n2p2 import feature_range_from_structures, write_n2p2
    from mlip.training.data import read_samples

    model = load_model(args.model)
    if args.format == "lammps":
        return _run_lammps(model, args)
    feature_range = None
    if args.range_from:
        structures = [s.atoms for path in args.range_from for s in read_samples(path, format=args.data_format)]
        feature_range = feature_range_from_structures(model, structures)
        print(f"symmetry-function range from {len(structures)} structures")
    written = write_n2p2(model, args.directory, feature_range)
    print("wrote " + ", ".join(str(p) for p in written))
    print(f"LAMMPS: pair_style hdnnp {model.cutoff:g} dir {args.directory} cflength 1.0 cfenergy 1.0\n"
          f"        pair_coeff * * {' '.join(model.elements)}   (one element per atom type, in type order)")
    return 0


def _run_lammps(model, args: argparse.Namespace) -> int:
    from mlip.lammps.plugin import write_mlipff

    if args.range_from:
        raise ValueError("--range-from applies to the n2p2 format only")
    path = write_mlipff(model, args.directory)
    print(f"wrote {path}")
    print(f"LAMMPS: plugin load $(mlip lammps-plugin)\n"
          f"        pair_style mlip {path}\n"
          f"        pair_coeff * * {' '.join(model.elements)}   (one element per atom type, in type order)\n"
          f"        (newton on; model cutoff {model.cutoff:g} Å)")
    return 0
