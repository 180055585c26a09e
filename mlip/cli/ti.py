"""``mlip ti MODEL STRUCTURE``: Frenkel-Ladd free energy of a crystal by thermodynamic
integration, or with ``--from OTHER`` the free-energy difference F(MODEL) - F(OTHER)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.mlip)")
    parser.add_argument("structure", help="crystal whose positions are the lattice sites (relaxed), any ASE file")
    parser.add_argument("--from", dest="reference", default=None, metavar="OTHER",
                        help="integrate from this model file to MODEL instead of from an Einstein crystal")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default %(default)s)")
    parser.add_argument("--points", type=int, default=6, help="Gauss-Legendre nodes in λ (default %(default)s)")
    parser.add_argument("--equilibration", type=int, default=500, help="steps per node (default %(default)s)")
    parser.add_argument("--production", type=int, default=2000, help="steps per node (default %(default)s)")
    parser.add_argument("--msd-steps", type=int, default=2000,
                        help="NVT steps that fix the Einstein frequency (default %(default)s)")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs (default %(default)s)")
    parser.add_argument("--tau", type=float, default=50.0, help="Langevin damping time, fs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="write <dU/dλ> vs λ to this PNG")
    parser.add_argument("--json", default=None, help="write the result as JSON")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ase.io import read

    from mlip.io import load_model
    from mlip.ti import frenkel_ladd

    model = load_model(args.model)
    atoms = read(args.structure, index=-1)
    if args.reference:
        return _model_to_model(args, load_model(args.reference), model, atoms)
    result = frenkel_ladd(model, atoms, args.temperature, n_points=args.points, equilibration=args.equilibration,
                          production=args.production, msd_steps=args.msd_steps, timestep=args.timestep,
                          tau=args.tau, seed=args.seed, progress=not args.no_progress)
    n = result.n_atoms
    _print_nodes(result.ti)
    print(f"F = {result.per_atom:.6f} ± {result.free_energy_error / n:.6f} eV/atom at {args.temperature} K "
          f"(Einstein reference {result.einstein / n:.6f} eV/atom, omega {result.omega:.4f} 1/fs; "
          f"centre-of-mass motion excluded)")
    if args.plot:
        print(f"wrote {result.ti.plot(args.plot, 'Einstein → model')}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "free_energy_per_atom_eV": result.per_atom, "error_per_atom_eV": result.free_energy_error / n,
            "einstein_per_atom_eV": result.einstein / n, "omega_per_fs": result.omega,
            "temperature_K": args.temperature, "lambdas": result.ti.lambdas.tolist(),
            "mean_dudl_eV": result.ti.mean_dudl.tolist(), "error_dudl_eV": result.ti.error_dudl.tolist()}, indent=1))
    return 0


def _print_nodes(ti) -> None:
    print(f"{'λ':>8} {'<dU/dλ> eV':>16} {'± eV':>10}")
    for lam, mean, error in zip(ti.lambdas, ti.mean_dudl, ti.error_dudl):
        print(f"{lam:8.4f} {mean:16.6f} {error:10.6f}")


def _model_to_model(args, model_a, model_b, atoms) -> int:
    import json
    from pathlib import Path

    from mlip.ti import model_to_model

    ti = model_to_model(model_a, model_b, atoms, args.temperature, n_points=args.points,
                        equilibration=args.equilibration, production=args.production, timestep=args.timestep,
                        tau=args.tau, seed=args.seed, progress=not args.no_progress)
    _print_nodes(ti)
    n = len(atoms)
    print(f"F({args.model}) - F({args.reference}) = {ti.delta_f / n:.6f} ± {ti.delta_f_error / n:.6f} eV/atom "
          f"at {args.temperature} K")
    if args.plot:
        print(f"wrote {ti.plot(args.plot, f'{Path(args.reference).name} → {Path(args.model).name}')}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "delta_f_per_atom_eV": ti.delta_f / n, "error_per_atom_eV": ti.delta_f_error / n,
            "temperature_K": args.temperature, "lambdas": ti.lambdas.tolist(), "mean_dudl_eV": ti.mean_dudl.tolist(),
            "error_dudl_eV": ti.error_dudl.tolist()}, indent=1))
    return 0
