"""``mlip md MODEL STRUCTURE``: compiled molecular dynamics (NVE, NVT, NPT)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlip.md.settings import COUPLING_NAMES, ENSEMBLE_NAMES, MDSettings, Outputs

    d, o = MDSettings(), Outputs()
    parser.add_argument("model", help="model file (.mlip)")
    parser.add_argument("structure", help="starting structure, any file ASE reads (last frame is used)")
    parser.add_argument("--ensemble", default=d.ensemble, choices=ENSEMBLE_NAMES,
                        help="nvt = langevin; npt = stochastic cell rescaling with Langevin (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=d.temperature, help="K (default %(default)s)")
    parser.add_argument("--timestep", type=float, default=d.timestep, help="fs (default %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps, help="total steps (default %(default)s)")
    parser.add_argument("--pressure", type=float, default=d.pressure, help="NPT target, GPa (default %(default)s)")
    parser.add_argument("--tau", type=float, default=d.tau, help="thermostat time, fs (default %(default)s)")
    parser.add_argument("--tau-p", type=float, default=d.tau_p, help="barostat time, fs (default %(default)s)")
    parser.add_argument("--compressibility", type=float, default=d.compressibility,
                        help="NPT compressibility guess, 1/GPa (default %(default)s)")
    parser.add_argument("--coupling", default=d.coupling, choices=COUPLING_NAMES,
                        help="NPT cell coupling (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--keep-velocities", action="store_true",
                        help="use the structure's momenta instead of Maxwell-Boltzmann ones")
    parser.add_argument("--skin", type=float, default=d.skin, help="neighbour-list skin, Å (default %(default)s)")
    parser.add_argument("--dtype", default=d.dtype, choices=["float64", "float32"])
    parser.add_argument("--block", type=int, default=d.block, help="steps per compiled block (default %(default)s)")
    parser.add_argument("--thermo", default="md_thermo.csv", help="thermo log CSV (default %(default)s)")
    parser.add_argument("--thermo-every", type=int, default=o.thermo_every)
    parser.add_argument("--trajectory", default=None, help="frames file (.extxyz or .traj)")
    parser.add_argument("--trajectory-every", type=int, default=o.trajectory_every)
    parser.add_argument("--restart", default=None, help="restart file (written every --restart-every steps)")
    parser.add_argument("--restart-every", type=int, default=o.restart_every)
    parser.add_argument("--resume", action="store_true", help="continue from --restart if it exists")
    parser.add_argument("--extrapolation-every", type=int, default=None,
                        help="steps between extrapolation checks of the frame against the model's training "
                             "range; 0: off (default: every --block steps when the model stores its range)")
    parser.add_argument("--max-extrapolation-warnings", type=int, default=None,
                        help="stop once more symmetry-function values than this were outside the training "
                             "range, summed over the checks (n2p2's maxew; default: never)")
    parser.add_argument("--extrapolation-frames", default=None,
                        help="append the frames that extrapolate to this file (.extxyz or .traj)")
    parser.add_argument("--model-devi", default=None, metavar="FILE",
                        help="ensemble models: write DeePMD's model_devi.out columns (step max_devi_v min_devi_v "
                             "avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e; eV/Å, eV/atom) to FILE")
    parser.add_argument("--model-devi-every", type=int, default=None,
                        help="steps between model-deviation rows (default: --block when any model-deviation "
                             "option is given)")
    parser.add_argument("--stop-above", type=float, default=None, metavar="SIGMA",
                        help="ensemble models: end the run once max_devi_f exceeds SIGMA eV/Å (the frame goes "
                             "to the --dump-above file if given)")
    parser.add_argument("--dump-above", nargs=2, default=None, metavar=("SIGMA", "FILE"),
                        help="ensemble models: append frames with max_devi_f >= SIGMA eV/Å to FILE "
                             "(.extxyz or .traj): candidates for labelling")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ase.io import read

    from mlip.io import load_model
    from mlip.md.driver import run_md, thermo_table
    from mlip.md.settings import ExtrapolationChecks, MDSettings, ModelDeviationChecks, Outputs

    model = load_model(args.model)
    every = args.extrapolation_every
    if every is None:
        every = args.block if model.feature_range is not None else 0
    checks = ExtrapolationChecks(every, args.max_extrapolation_warnings, args.extrapolation_frames)
    dump_above, dump_file = (None, None) if args.dump_above is None else (float(args.dump_above[0]), args.dump_above[1])
    wanted = args.model_devi is not None or args.stop_above is not None or dump_above is not None
    devi_every = args.model_devi_every if args.model_devi_every is not None else (args.block if wanted else 0)
    deviation = ModelDeviationChecks(devi_every, args.model_devi, args.stop_above, dump_above, dump_file)
    atoms = read(args.structure, index=-1)
    if not args.keep_velocities and atoms.has("momenta"):
        del atoms.arrays["momenta"]  # Maxwell-Boltzmann momenta at --temperature instead
    settings = MDSettings(args.ensemble, args.temperature, args.timestep, args.steps, args.pressure, args.tau,
                          args.tau_p, args.compressibility, args.coupling, seed=args.seed, skin=args.skin, dtype=args.dtype,
                          block=args.block)
    outputs = Outputs(args.thermo, args.thermo_every, args.trajectory, args.trajectory_every, args.restart,
                      args.restart_every)
    result = run_md(model, atoms, settings, outputs, resume=args.resume, progress=not args.no_progress,
                    extrapolation=checks, deviation=deviation)
    print(thermo_table(result))
    if checks.every:
        flagged = result.extrapolation
        print(f"extrapolation: {len(flagged)} of {result.steps // checks.every} checks (every {checks.every} steps) "
              "found atoms outside the training range"
              + (f", first at step {flagged[0].step}, largest excursion {max(r.excursion for r in flagged):.3g} "
                 "x the range" if flagged else ""))
    print(f"{result.steps} steps in {result.seconds:.1f} s ({result.ns_per_day:.3g} ns/day incl. "
          f"{result.compile_seconds:.1f} s for the first block), {result.neighbor_rebuilds} neighbour-list "
          f"rebuilds, {result.replays} replayed block(s); thermo log {args.thermo}")
    return 0
