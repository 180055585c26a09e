"""One prepared GPU benchmark: energy+forces, compiled MD and a training epoch.

Meant for one short job on one GPU (H100/H200 class, about 5 minutes)::

    pip install 'jax[cuda12]'
    python3 benchmarks/bench_gpu.py --json benchmarks/results/gpu.json

Sections (``--only`` picks some):

* ``energy_forces``: the jit-compiled energy+forces+virial function of the
  ``bench_energy_forces.py`` models (``benchmarks/common.py``: type-9 and type-3
  sets, 6 Å cutoff, network 25-25, random weights) on rattled diamond Si of 10^4,
  10^5 and 10^6 atoms, float32 and float64.  Inputs come from mlip's batch path
  (:func:`mlip.batch.prepare_structure`: vesin's host list, padding), built once per
  size.  Per row: compile time (``lower().compile()``), the median call, µs/atom,
  atom-steps/s (atoms / seconds per call), the energy (float32 against float64 of
  the same structure), peak memory.
* ``md``: compiled NVE MD (:func:`mlip.md.run_md`, 1 fs, 300 K, skin 0.5 Å; ``--smoke``: 0.1 Å) at 10^5
  and 10^6 atoms, float32, neighbour lists rebuilt inside the compiled loop (jit
  cell list).  The type-9 model, with feature scaling and output layer fitted to
  Stillinger-Weber cells so that the dynamics are physical.  Atom-steps/s exclude
  the first block (compilation); rebuilds and overflow replays are counted.
* ``training``: the mlearn Si config (``benchmarks/mlearn_si/config.toml``, data in
  ``../shared/data/si_mlearn`` or ``--mlearn-data DIR``; the row is skipped with a note
  when it is absent):
  featurisation once, then a few epochs; seconds per epoch after the first.

Guard rails: every row runs in its own ``try`` (an out-of-memory error or any
failure is recorded in the row and the script goes on), ``--max-atoms`` drops
larger sizes, ``--budget-s`` (default 280 s) skips the rows that would start after
it (recorded as skipped), progress lines carry timestamps.  Peak memory is the
device's ``peak_bytes_in_use`` where ``memory_stats()`` has it (the process peak so
far: rows run in increasing size), else the process's peak RSS (VmHWM); the
compiled executable's own temporaries (``memory_analysis``) are recorded as well.

``--smoke`` runs the same code paths tiny (216 and 512 atoms, a few MD steps, two
epochs on a small generated Stillinger-Weber Si set) in well under a minute on a
CPU; ``tests/test_bench_gpu.py`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the host application: float64 available, float32 chosen per row

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

from bench_scale import repeat_for  # noqa: E402
from bench_training import CONFIG as MLEARN_CONFIG, with_training  # noqa: E402
from common import benchmark_model  # noqa: E402

SECTIONS = ("energy_forces", "md", "training")
WORKLOADS = ("type9", "type3")
DTYPES = ("float32", "float64")
TARGETS = {  # issue 21, one H100-class GPU
    "energy_forces_float32_1e6_atom_steps_per_s": 1e7,
    "md_vs_energy_forces": 0.8,
    "energy_forces_float64_atom_steps_per_s": 2e6,
}
STARTED = time.perf_counter()


def log(message: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"[{now:%H:%M:%S} +{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def peak_memory() -> tuple[float | None, str]:
    """(bytes, what) : the device's peak_bytes_in_use, else the process's peak RSS."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024.0, "host peak RSS (VmHWM)"
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "host peak RSS (ru_maxrss)"


def compiled_memory(compiled) -> dict:
    try:
        analysis = compiled.memory_analysis()
        return {"compiled_temp_bytes": int(analysis.temp_size_in_bytes),
                "compiled_argument_bytes": int(analysis.argument_size_in_bytes),
                "compiled_output_bytes": int(analysis.output_size_in_bytes)}
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {}


def diamond(n_atoms: int, rattle: float, seed: int):
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat_for(n_atoms))
    atoms.rattle(rattle, seed=seed)
    return atoms


class Rows:
    """The rows of the run: each one timed, guarded and appended in order."""

    def __init__(self, budget_s: float, device: str):
        self.budget_s = budget_s
        self.device = device
        self.rows: list[dict] = []

    def run(self, row: dict, measure) -> dict:
        row.setdefault("device", self.device)
        label = " ".join(f"{row[k]}" for k in ("section", "atoms", "workload", "dtype") if row.get(k) is not None)
        elapsed = time.perf_counter() - STARTED
        if elapsed > self.budget_s:
            row.update(status="skipped", note=f"time budget of {self.budget_s:g} s spent ({elapsed:.0f} s)")
            log(f"{label}: skipped ({row['note']})")
        else:
            log(f"{label}: start")
            started = time.perf_counter()
            try:
                row.update(measure())
                row.setdefault("status", "ok")
            except Exception as error:  # noqa: BLE001 - out of memory or any failure: record, go on
                row.update(status="error", error=f"{type(error).__name__}: {error}"[:4000],
                           traceback=traceback.format_exc()[-4000:])
                log(f"{label}: ERROR {row['error'][:300]}")
            row["row_s"] = time.perf_counter() - started
            if row["status"] == "ok":
                log(f"{label}: done in {row['row_s']:.1f} s " + summary(row))
            elif row["status"] == "skipped":
                log(f"{label}: skipped ({row.get('note', '')})")
        self.rows.append(row)
        gc.collect()
        return row

    def skip(self, row: dict, note: str) -> None:
        row.update(device=self.device, status="skipped", note=note)
        log(f"{row['section']} {row.get('atoms', '')}: skipped ({note})")
        self.rows.append(row)


def summary(row: dict) -> str:
    parts = []
    for key, fmt in (("us_per_atom", "{:.3g} µs/atom"), ("atom_steps_per_s", "{:.3g} atom-steps/s"),
                     ("s_per_epoch", "{:.3g} s/epoch"), ("neighbor_rebuilds", "{} rebuilds")):
        if row.get(key) is not None:
            parts.append(fmt.format(row[key]))
    return ", ".join(parts)


def median_call(function, first_s: float, target_s: float) -> tuple[float, int]:
    """Median wall time of ``function()`` over 2-10 calls (about ``target_s`` in all)."""
    repeats = int(min(10, max(2, target_s / max(first_s, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), repeats


# ----------------------------------------------------------------------------- energy + forces


def energy_forces_section(args, rows: Rows) -> None:
    from mlip.batch import prepare_structure
    from mlip.model import cast_params, make_model_functions

    models = {workload: benchmark_model(workload, ["Si"], args.cutoff) for workload in WORKLOADS}
    structure = models["type9"]  # elements, cutoff and r_min of every workload's model
    assert len({m.cutoff for m in models.values()}) == 1
    for n_atoms in args.sizes:
        keys = [(w, d) for w in WORKLOADS for d in DTYPES]
        base = lambda w, d: {"section": "energy_forces", "atoms": n_atoms, "workload": w, "dtype": d}  # noqa: E731
        if n_atoms > args.max_atoms:
            for w, d in keys:
                rows.skip(base(w, d), f"above --max-atoms {args.max_atoms}")
            continue
        inputs: dict = {}

        def padded():
            """The padded structure of this size, built once (the error again if it failed)."""
            if "error" in inputs:
                raise RuntimeError(f"building the inputs failed: {inputs['error']}")
            if "padded" not in inputs:
                try:
                    start = time.perf_counter()
                    atoms = diamond(n_atoms, args.rattle, seed=0)
                    inputs["padded"] = prepare_structure(structure, atoms)
                    inputs["inputs_s"] = time.perf_counter() - start
                    log(f"energy_forces {n_atoms}: inputs (host list + padding) in {inputs['inputs_s']:.1f} s, "
                        f"{inputs['padded'].positions.shape[0]} rows x {inputs['padded'].nl.capacity} slots")
                except Exception as error:
                    inputs["error"] = f"{type(error).__name__}: {error}"
                    raise
            return inputs["padded"]

        for workload, dtype_name in keys:
            def measure(workload=workload, dtype_name=dtype_name):
                structure_arrays = padded()
                model = models[workload]
                dtype = jax.numpy.dtype(dtype_name)
                functions = make_model_functions(model.config, args.chunk_size)
                params = cast_params(model.params, dtype)
                arrays = structure_arrays.as_jax(dtype, with_element_rows=True)
                start = time.perf_counter()
                compiled = jax.jit(functions.energy_forces_virial).lower(params, *arrays).compile()
                compile_s = time.perf_counter() - start
                call = lambda: jax.block_until_ready(compiled(params, *arrays))  # noqa: E731
                start = time.perf_counter()
                result = call()
                first_s = time.perf_counter() - start
                energy = float(result.energy)
                forces = np.asarray(result.forces)[:n_atoms]
                if not (math.isfinite(energy) and np.isfinite(forces).all()):
                    raise FloatingPointError(f"non-finite energy {energy} or forces")
                call_s, repeats = median_call(call, first_s, args.repeat_s)
                memory, memory_kind = peak_memory()
                row = {"device": args.device, "compile_s": compile_s, "first_call_s": first_s, "call_s": call_s,
                       "repeats": repeats, "us_per_atom": 1e6 * call_s / n_atoms,
                       "atom_steps_per_s": n_atoms / call_s, "energy_eV": energy,
                       "energy_per_atom_eV": energy / n_atoms,
                       "max_force_sum_eV_per_A": float(np.abs(forces.sum(axis=0)).max()),
                       "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
                       "inputs_s": inputs["inputs_s"], "padded_atoms": int(structure_arrays.positions.shape[0]),
                       "neighbor_capacity": int(structure_arrays.nl.capacity), "chunk_size": args.chunk_size,
                       "n_features": model.config.symmetry_functions.n_features("Si"),
                       **compiled_memory(compiled)}
                return row

            rows.run(base(workload, dtype_name), measure)
        inputs.clear()
        # float32 against float64 on the same structure and model
        done = {(r["workload"], r["dtype"]): r for r in rows.rows
                if r["section"] == "energy_forces" and r["atoms"] == n_atoms and r["status"] == "ok"}
        for workload in WORKLOADS:
            if (workload, "float32") in done and (workload, "float64") in done:
                e32, e64 = done[workload, "float32"]["energy_eV"], done[workload, "float64"]["energy_eV"]
                done[workload, "float32"]["energy_rel_diff_vs_float64"] = abs(e32 - e64) / max(abs(e64), 1e-300)


# ----------------------------------------------------------------------------- MD


def sw_fitted(model, n_structures: int, seed: int = 0):
    """``model`` with feature scaling and output layer fitted (closed form) to
    Stillinger-Weber energies, forces and stresses of strained, rattled 8-atom
    diamond cells: the benchmark architecture with physical, stable dynamics."""
    from mlip.training.data import sample_from_atoms
    from mlip.training.generate import label, stillinger_weber_si, strained_diamond_cells
    from mlip.training.linear import fit_output_layers
    from mlip.training.scaling import fit_feature_scaling

    structures = strained_diamond_cells(n_structures, seed)
    samples = [sample_from_atoms(atoms) for atoms in label(structures, stillinger_weber_si())]
    return fit_output_layers(fit_feature_scaling(model, [s.atoms for s in samples]), samples)


def md_section(args, rows: Rows) -> None:
    from mlip.md import MDSettings, run_md
    from mlip.md.driver import maxwell_boltzmann_momenta

    fitted: dict = {}

    def model():
        if "model" not in fitted:
            start = time.perf_counter()
            fitted["model"] = sw_fitted(benchmark_model("type9", ["Si"], args.cutoff), args.fit_structures)
            fitted["fit_s"] = time.perf_counter() - start
            log(f"md: type-9 model fitted to Stillinger-Weber cells in {fitted['fit_s']:.1f} s")
        return fitted["model"]

    for n_atoms in args.md_sizes:
        row = {"section": "md", "atoms": n_atoms, "workload": "type9", "dtype": args.md_dtype}
        if n_atoms > args.max_atoms:
            rows.skip(row, f"above --max-atoms {args.max_atoms}")
            continue

        def measure(n_atoms=n_atoms):
            potential = model()
            block, block_from = args.md_block, "--md-block"
            if not block:  # about --md-block-s of steps per block, from this size's energy+forces time
                reference = [r for r in rows.rows if r["section"] == "energy_forces" and r["status"] == "ok"
                             and r["atoms"] == n_atoms and r["workload"] == "type9" and r["dtype"] == args.md_dtype]
                if reference:
                    block = int(min(200, max(10, round(args.md_block_s / reference[0]["call_s"]))))
                    block_from = "energy_forces call time"
                else:
                    block, block_from = 50, "default"
            atoms = diamond(n_atoms, 0.03, seed=1)
            atoms.set_momenta(maxwell_boltzmann_momenta(atoms.get_masses(), args.md_temperature, 1))
            settings = MDSettings("nve", temperature=args.md_temperature, timestep=1.0,
                                  steps=(1 + args.md_blocks) * block, block=block, dtype=args.md_dtype,
                                  skin=args.md_skin)
            start = time.perf_counter()
            result = run_md(potential, atoms, settings)
            total_s = time.perf_counter() - start
            timed_steps = result.steps - block
            timed_s = result.seconds - result.compile_seconds
            if timed_steps <= 0 or timed_s <= 0:
                raise RuntimeError(f"no timed blocks ({result.steps} steps, {timed_s} s)")
            memory, memory_kind = peak_memory()
            row = {"device": args.device, "block": block, "block_from": block_from, "steps": result.steps,
                   "timed_steps": timed_steps, "timed_s": timed_s, "compile_s": result.compile_seconds,
                   "setup_s": total_s - result.seconds, "step_s": timed_s / timed_steps,
                   "us_per_atom": 1e6 * timed_s / timed_steps / n_atoms,
                   "atom_steps_per_s": n_atoms * timed_steps / timed_s, "ns_per_day": 86400e-6 * timed_steps / timed_s,
                   "neighbor_rebuilds": int(result.neighbor_rebuilds), "replays": int(result.replays),
                   "temperature_K": args.md_temperature, "skin_A": args.md_skin, "fit_s": fitted.get("fit_s"),
                   "peak_memory_bytes": memory, "peak_memory_kind": memory_kind}
            energy = result.atoms.get_potential_energy()
            row["energy_eV"] = float(energy)
            if len(result.thermo):
                conserved = result.thermo[:, list(result.columns).index("conserved_eV")]
                row["conserved_drift_eV_per_atom"] = float(conserved[-1] - conserved[0]) / n_atoms
            if not math.isfinite(row["energy_eV"]):
                raise FloatingPointError(f"non-finite final energy {row['energy_eV']}")
            reference = [r for r in rows.rows if r["section"] == "energy_forces" and r["status"] == "ok"
                         and r["atoms"] == n_atoms and r["workload"] == "type9" and r["dtype"] == args.md_dtype]
            if reference:
                row["md_vs_energy_forces"] = row["atom_steps_per_s"] / reference[0]["atom_steps_per_s"]
            return row

        rows.run(row, measure)


# ----------------------------------------------------------------------------- training


def smoke_training_config(directory: Path):
    """A tiny generated Stillinger-Weber Si set (12 8-atom cells: a volume scan and MD
    snapshots) and the training config of ``tests/test_training.py`` (r_cut 4 Å, one
    hidden layer of 8)."""
    from mlip.training.config import config_from_dict
    from mlip.training.generate import generate_structures, stillinger_weber_si, write_dataset

    structures = generate_structures(
        stillinger_weber_si(), n_rattled=0, n_strained=0, n_volume=4, n_vacancy=0, n_surface=0, n_md=8,
        md_repeat=(1, 1, 1), md_equilibration=5, md_interval=3)
    path = directory / "si.xyz"
    write_dataset(structures, path)
    return config_from_dict({
        "data": {"train": str(path), "validation_fraction": 0.1},
        "model": {"r_cut": 4.0, "n_radial": 4, "n_angular": 2, "hidden_layers": [8]},
        "training": {"epochs": 2, "batch_atoms": 32, "dtype": "float32"},
        "optimizer": {"learning_rate": 1e-2, "warmup_epochs": 1},
        "output": {"directory": str(directory / "run"), "plots": False, "progress": False},
    }, base_dir=directory)


def training_section(args, rows: Rows) -> None:
    from mlip.training.config import load_config
    from mlip.training.trainer import prepare, train

    row = {"section": "training", "workload": "smoke Si (generated)" if args.smoke else "mlearn Si"}
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        def mlearn_config():
            config = load_config(args.train_config)
            if args.mlearn_data:  # the set's folder elsewhere (e.g. copied next to the checkout)
                folder = Path(args.mlearn_data).resolve()
                config = dataclasses.replace(config, data=dataclasses.replace(
                    config.data, train=str(folder / "train.xyz"), test=str(folder / "test.xyz")))
            return config

        if not args.smoke:
            config = mlearn_config()
            data = config.path(config.data.train)
            if not data.exists():
                rows.skip(row, f"data absent: {data} not found (the mlearn Si set lives in ../shared/data)")
                return

        def measure():
            config = smoke_training_config(directory) if args.smoke else mlearn_config()
            config = dataclasses.replace(config, output=dataclasses.replace(
                config.output, directory=str(directory / "run"), plots=False, progress=False))
            config = with_training(config, epochs=args.train_epochs, refit_offsets=False)
            start = time.perf_counter()
            prepared = prepare(config, log=lambda line: None)
            featurize_s = time.perf_counter() - start
            log(f"training: featurised {len(prepared.train)} structures in {featurize_s:.1f} s")
            start = time.perf_counter()
            result = train(config, log=lambda line: None, prepared=prepared)
            train_s = time.perf_counter() - start
            seconds = [b["seconds"] - a["seconds"] for a, b in zip(result.history, result.history[1:])]
            if not seconds:
                raise RuntimeError(f"{len(result.history)} epoch(s) recorded: need two for a time after the first")
            per_epoch = statistics.median(seconds)
            memory, memory_kind = peak_memory()
            return {"device": args.device, "dtype": config.training.dtype, "epochs": len(result.history),
                    "structures": len(prepared.train), "featurize_s": featurize_s, "train_s": train_s,
                    "compile_s": result.history[0]["seconds"], "first_epoch_s": result.history[0]["seconds"],
                    "s_per_epoch": per_epoch, "structures_per_s": len(prepared.train) / per_epoch,
                    "compilations": int(result.n_compilations),
                    "peak_memory_bytes": memory, "peak_memory_kind": memory_kind}

        rows.run(row, measure)


# ----------------------------------------------------------------------------- report


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return format(value, spec)


def table(rows: list[dict]) -> str:
    header = (f"{'section':<13} {'device':<16} {'atoms':>8} {'dtype':<7} {'workload':<10} {'compile s':>9} "
              f"{'µs/atom':>9} {'atom-steps/s':>12} {'peak GB':>8} {'energy eV':>18} {'note'}")
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            note = r["status"] + ": " + (r.get("note") or r.get("error", ""))[:80]
        elif r["section"] == "md":
            note = f"{r['neighbor_rebuilds']} rebuilds, {r['replays']} replays, block {r['block']}"
            if r.get("md_vs_energy_forces") is not None:
                note += f", {r['md_vs_energy_forces']:.2f}x E+F"
        elif r["section"] == "training":
            note = f"{r['s_per_epoch']:.4g} s/epoch after the first ({r['structures']} structures)"
        else:
            note = ""
            if r.get("energy_rel_diff_vs_float64") is not None:
                note = f"|ΔE|/E vs float64 {r['energy_rel_diff_vs_float64']:.1e}"
        memory = r.get("peak_memory_bytes")
        lines.append(
            f"{r['section']:<13} {str(r.get('device', ''))[:16]:<16} {fmt(r.get('atoms'), 'd'):>8} "
            f"{str(r.get('dtype', '')):<7} {str(r.get('workload', ''))[:10]:<10} "
            f"{fmt(r.get('compile_s'), '.2f'):>9} {fmt(r.get('us_per_atom'), '.4g'):>9} "
            f"{fmt(r.get('atom_steps_per_s'), '.4g'):>12} {fmt(memory and memory / 1e9, '.3f'):>8} "
            f"{fmt(r.get('energy_eV'), '.10g'):>18} {note}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows and the run's settings to this JSON file")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--max-atoms", type=int, default=10**9, help="skip (and record) larger systems")
    parser.add_argument("--budget-s", type=float, default=280.0,
                        help="total time, s, after which the remaining rows are skipped and recorded as skipped")
    parser.add_argument("--smoke", action="store_true",
                        help="the same code paths, tiny: 216 and 512 atoms, a few MD steps, 2 epochs on a generated set")
    parser.add_argument("--sizes", type=int, nargs="+", help="energy+forces atoms (default 10^4 10^5 10^6)")
    parser.add_argument("--md-sizes", type=int, nargs="+", help="MD atoms (default 10^5 10^6)")
    parser.add_argument("--cutoff", type=float, default=6.0, help="symmetry-function cutoff, Å")
    parser.add_argument("--rattle", type=float, default=0.05, help="random displacement of the E+F structures, Å")
    parser.add_argument("--chunk-size", type=int, default=1024,
                        help="atoms per checkpointed chunk of the energy+forces rows (MD uses mlip's default, 1024)")
    parser.add_argument("--repeat-s", type=float, default=2.0, help="time, s, spent on the timed calls of a row (2-10 calls)")
    parser.add_argument("--md-dtype", choices=DTYPES, default="float32")
    parser.add_argument("--md-block", type=int, default=0,
                        help="steps per compiled MD block (0: about --md-block-s of steps, from the E+F call time)")
    parser.add_argument("--md-block-s", type=float, default=4.0)
    parser.add_argument("--md-blocks", type=int, default=2, help="timed MD blocks after the first")
    parser.add_argument("--md-skin", type=float, default=0.5, help="neighbour-list skin, Å (--smoke: 0.1)")
    parser.add_argument("--md-temperature", type=float, default=300.0, help="initial temperature, K")
    parser.add_argument("--fit-structures", type=int, default=12, help="Stillinger-Weber cells the MD model is fitted to")
    parser.add_argument("--train-config", default=str(MLEARN_CONFIG))
    parser.add_argument("--mlearn-data", help="folder holding the mlearn Si train.xyz and test.xyz "
                        "(default: the config's ../shared/data/si_mlearn)")
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs of the training row (>= 2)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = args.sizes or [216, 512]
        args.md_sizes = args.md_sizes or [512]
        args.md_block = args.md_block or 5
        args.md_skin = 0.1  # rebuilds within a few steps: the rebuild path runs in the smoke test too
        args.fit_structures = min(args.fit_structures, 4)
        args.train_epochs = 2
    args.sizes = args.sizes or [10**4, 10**5, 10**6]
    args.md_sizes = args.md_sizes or [10**5, 10**6]
    if args.train_epochs < 2:
        parser.error("--train-epochs must be at least 2 (the time per epoch excludes the first)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = jax.devices()[0]
    args.device = device.device_kind
    log(f"device {device.device_kind} ({jax.default_backend()}, {jax.device_count()} device(s)), jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs; sections {args.only}; budget {args.budget_s:g} s"
        + (" [smoke]" if args.smoke else ""))
    rows = Rows(args.budget_s, args.device)
    for name, section in (("energy_forces", energy_forces_section), ("md", md_section),
                          ("training", training_section)):
        if name in args.only:
            try:
                section(args, rows)
            except Exception as error:  # noqa: BLE001 - a section's own setup failed: record it, go on
                rows.rows.append({"section": name, "device": args.device, "status": "error", "error": f"{type(error).__name__}: {error}",
                                  "traceback": traceback.format_exc()[-4000:]})
                log(f"{name}: ERROR {type(error).__name__}: {error}")
    total_s = time.perf_counter() - STARTED
    print()
    print(table(rows.rows))
    print(f"\n{len(rows.rows)} rows ({sum(r['status'] == 'ok' for r in rows.rows)} ok) in {total_s:.1f} s on "
          f"{args.device}; issue 21 targets (one H100-class GPU): >= {TARGETS['energy_forces_float32_1e6_atom_steps_per_s']:.0e} "
          f"atom-steps/s E+F at 10^6 atoms float32, MD >= {TARGETS['md_vs_energy_forces']}x that, "
          f"float64 >= {TARGETS['energy_forces_float64_atom_steps_per_s']:.0e}", flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        path.write_text(json.dumps({
            "benchmark": "gpu", "device": args.device, "backend": jax.default_backend(),
            "device_count": jax.device_count(), "jax": jax.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "total_s": total_s, "settings": settings, "targets": TARGETS, "rows": rows.rows,
        }, indent=1, default=str))
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
