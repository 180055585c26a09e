"""The active-learning loop: iterations of train -> explore -> select -> label.

Files in ``learn.directory``:

* ``data.extxyz``: the growing labelled data set (the initial structures, then every
  oracle label; each frame's ``info["learn_id"]`` names where it came from); it is
  rewritten atomically after every label, so a kill loses at most the label in
  progress and never a finished one;
* ``iter_NNN/train/``: the iteration's training run (model, checkpoints, metrics);
* ``iter_NNN/explored.extxyz``: every checked MD frame with its per-atom ``devi_f``;
* ``iter_NNN/selected.extxyz``: the frames chosen for labelling;
* ``state.json``: the finished iterations (their table rows) and the failed labels;
* ``report.csv`` and ``learning.png``: the per-iteration table and its plot.

``resume=True`` skips every finished step: a trained model is loaded (a killed
training resumes from its checkpoint), exploration and selection files are reused,
frames already in the data set are not labelled again.  Each step is deterministic
(seeds from the iteration), so a resumed loop produces the data set an uninterrupted
one does.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from mlip.files import atomic_path, write_text_atomic
from mlip.io import load_model
from mlip.learn.config import LearnConfig
from mlip.learn.selection import ACCURATE, CANDIDATE, FAILED, classify, farthest_points, frame_features
from mlip.md.driver import MDError, run_md
from mlip.md.settings import MDSettings, ModelDeviationChecks
from mlip.model import Model
from mlip.training.data import read_samples
from mlip.training.evaluate import metrics_by_group, predict_samples
from mlip.training.trainer import train

COLUMNS = ("iteration", "labels", "new_labels", "failed_labels", "explored", "accurate", "candidates", "failed",
           "failed_md", "test_F_MAE_meV_per_A", "test_E_MAE_meV_per_atom", "seconds", "trained_on")


@dataclass(frozen=True)
class IterationRecord:
    """One row of the report (fractions of the explored frames; test MAE NaN without a test set)."""

    iteration: int
    labels: int  # structures in the data set after this iteration
    new_labels: int
    failed_labels: int  # oracle raised or returned non-finite values
    explored: int  # frames checked by model deviation
    accurate: float
    candidates: float
    failed: float
    failed_md: int  # exploration runs that stopped early (unphysical forces, close atoms)
    test_F_MAE_meV_per_A: float
    test_E_MAE_meV_per_atom: float
    seconds: float
    # structures the iteration's model was trained on (the data set before this
    # iteration's labels): the test MAE belongs to this count, not to ``labels``
    trained_on: int = -1


def make_oracle(config: LearnConfig):
    """The oracle's ASE calculator from ``oracle.calculator`` ("module:callable")."""
    module, _, name = config.oracle.calculator.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"oracle.calculator {config.oracle.calculator!r} cannot be imported: {error}") from error
    return factory(**config.oracle.kwargs)


def label(atoms: Atoms, calculator) -> Atoms | None:
    """``atoms`` labelled by ``calculator`` (energy eV, forces eV/Å, stress for periodic
    cells), or None when the calculator raises or returns non-finite values."""
    atoms = atoms.copy()
    info = dict(atoms.info)
    for name in list(atoms.arrays):
        if name not in ("numbers", "positions"):
            del atoms.arrays[name]
    atoms.calc = calculator
    try:
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
    except Exception:  # noqa: BLE001 - any failure of the oracle marks the structure failed
        return None
    if not all(np.all(np.isfinite(v)) for v in results.values()):
        return None
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info.update(info)
    return atoms


class DataStore:
    """The data set and the state file of a loop directory (atomic rewrites)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.data = directory / "data.extxyz"
        self.state_path = directory / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else \
            {"iterations": [], "failed_labels": []}

    def frames(self) -> list[Atoms]:
        return read(self.data, index=":") if self.data.exists() else []

    def add(self, frames: list[Atoms]) -> None:
        """Append ``frames`` to the data set (rewritten atomically: all or nothing)."""
        everything = self.frames() + frames
        with atomic_path(self.data) as temporary:
            write(temporary, everything, format="extxyz")

    def save_state(self) -> None:
        write_text_atomic(self.state_path, json.dumps(self.state, indent=1))


def learn(config: LearnConfig, resume: bool = False, log: Callable[[str], None] = print,
          progress: bool = False) -> list[IterationRecord]:
    """Run the loop of ``config`` (see the module docstring); the table rows of every
    iteration, finished ones of a resumed loop included.

    Raises:
        FileExistsError: the directory holds a loop and ``resume`` is False.
        ValueError: the oracle cannot be imported; bad structures (from training).
    """
    directory = config.path(config.learn.directory)
    store = DataStore(directory)
    if store.state_path.exists() and not resume:
        raise FileExistsError(f"{directory} already holds an active-learning loop: continue it with --resume, "
                              "or choose another learn.directory")
    directory.mkdir(parents=True, exist_ok=True)
    if not store.data.exists():
        initial = read(config.path(config.learn.initial), index=":")
        for n, atoms in enumerate(initial):
            atoms.info["learn_id"] = f"initial-{n}"
        store.add(initial)
    oracle = make_oracle(config)
    test = read_samples(config.path(config.learn.test)) if config.learn.test else []
    records = [IterationRecord(**row) for row in store.state["iterations"]]
    model_path = None
    for iteration in range(config.learn.iterations):
        folder = directory / f"iter_{iteration:03d}"
        if iteration < len(records):
            model_path = folder / "train" / config.train.output.model_name
            continue
        started = time.perf_counter()
        model_path = train_iteration(config, store, folder, model_path, log, progress)
        model = load_model(model_path)
        frames, failed_md = _explore(config, model, folder, iteration, log)
        deviations = np.array([f.arrays["devi_f"].max() for f in frames])
        kinds = classify(deviations, config.select.trust_lo, config.select.trust_hi)
        selected = _select(config, model, folder, frames, kinds, deviations)
        new, failed = _label(store, selected, oracle, log)
        # the training set: everything but this iteration's labels (also right after a resume mid-labelling)
        trained_on = sum(1 for f in store.frames() if not f.info.get("learn_id", "").startswith(f"it{iteration}-"))
        fractions = {kind: float(np.mean(kinds == kind)) if len(kinds) else 0.0 for kind in (ACCURATE, CANDIDATE,
                                                                                             FAILED)}
        metrics = metrics_by_group(predict_samples(model, test))["all"] if test else {}
        record = IterationRecord(iteration, len(store.frames()), new, failed, len(frames), fractions[ACCURATE],
                                 fractions[CANDIDATE], fractions[FAILED], failed_md,
                                 metrics.get("F MAE meV/Å", float("nan")), metrics.get("E MAE meV/atom", float("nan")),
                                 time.perf_counter() - started, trained_on)
        records.append(record)
        store.state["iterations"].append(dataclasses.asdict(record))
        store.save_state()
        _report(directory, records)
        log(_row_text(record))
        labelled = record.labels - sum(1 for f in store.frames() if f.info.get("learn_id", "").startswith("initial"))
        if record.accurate >= config.stop.accurate_fraction:
            log(f"stop: {100 * record.accurate:.1f} % of the explored frames are accurate "
                f"(>= {100 * config.stop.accurate_fraction:.1f} %)")
            break
        if labelled >= config.stop.max_labels:
            log(f"stop: {labelled} oracle labels reach the budget of {config.stop.max_labels}")
            break
    return records


def train_iteration(config: LearnConfig, store: DataStore, folder: Path, previous: Path | None, log,
                    progress: bool) -> Path:
    """The iteration's model file: trained on the data set (resumed if killed), or the
    one a finished training left; from the second iteration on, fine-tuned from the
    previous iteration's model (its descriptors and scaling kept)."""
    transfer = config.train.transfer
    if previous is not None and not transfer.init_model:
        transfer = dataclasses.replace(transfer, init_model=str(previous.resolve()))
    train_config = dataclasses.replace(
        config.train,
        transfer=transfer,
        data=dataclasses.replace(config.train.data, train=str(store.data.resolve()), generate=""),
        output=dataclasses.replace(config.train.output, directory=str((folder / "train").resolve()), plots=False),
    )
    path = Path(train_config.output.directory) / train_config.output.model_name
    if path.exists():
        return path
    checkpoint = Path(train_config.output.directory) / "checkpoints" / "latest.ckpt"
    log(f"{folder.name}: training on {len(store.frames())} structures")
    train(train_config, resume=checkpoint.exists(), progress=progress, log=lambda line: None)
    return path


def _explore(config: LearnConfig, model: Model, folder: Path, iteration: int, log) -> tuple[list[Atoms], int]:
    """Every checked frame of the iteration's MD runs (per-atom ``devi_f`` arrays) and
    how many runs stopped early."""
    explored = folder / "explored.extxyz"
    failed_path = folder / "failed_md.json"
    if explored.exists() and failed_path.exists():
        return read(explored, index=":"), int(json.loads(failed_path.read_text()))
    e = config.explore
    starts = [atoms for name in e.structures for atoms in read(config.path(name), index=":")]
    frames, failed = [], 0
    scratch = folder / "explore_scratch.extxyz"
    for number, atoms in enumerate(starts):
        for temperature in e.temperatures:
            scratch.unlink(missing_ok=True)
            settings = MDSettings(ensemble="langevin", temperature=float(temperature), timestep=e.timestep,
                                  steps=e.steps, block=e.every, seed=1000 * iteration + number)
            checks = ModelDeviationChecks(e.every, dump_above=0.0, dump_file=scratch)
            try:
                run_md(model, atoms, settings, deviation=checks)
            except (ValueError, MDError) as error:  # close atoms, exploding forces: the frames so far count
                failed += 1
                log(f"{folder.name}: exploration of structure {number} at {temperature:g} K stopped: {error}")
            run_frames = read(scratch, index=":") if scratch.exists() else []
            for frame in run_frames:
                frame.info["learn_id"] = f"it{iteration}-s{number}-T{temperature:g}-step{frame.info['step']}"
            frames += run_frames
    scratch.unlink(missing_ok=True)
    with atomic_path(explored) as temporary:
        write(temporary, frames, format="extxyz")
    write_text_atomic(failed_path, json.dumps(failed))
    return frames, failed


def _select(config: LearnConfig, model: Model, folder: Path, frames: list[Atoms], kinds: np.ndarray,
            deviations: np.ndarray) -> list[Atoms]:
    """The candidates to label: farthest-point selection, starting from the largest deviation."""
    path = folder / "selected.extxyz"
    if path.exists():
        return read(path, index=":")
    candidates = [n for n, kind in enumerate(kinds) if kind == CANDIDATE]
    chosen = []
    if candidates:
        features = frame_features(model, [frames[n] for n in candidates])
        first = int(np.argmax(deviations[candidates]))
        chosen = [frames[candidates[k]] for k in farthest_points(features, config.select.max_per_iteration, first)]
    with atomic_path(path) as temporary:
        write(temporary, chosen, format="extxyz")
    return chosen


def _label(store: DataStore, selected: list[Atoms], oracle, log) -> tuple[int, int]:
    """Label the selected frames not yet in the data set (nor failed before); counts of new and failed labels."""
    done = {f.info.get("learn_id") for f in store.frames()} | set(store.state["failed_labels"])
    new = failed = 0
    for frame in selected:
        name = frame.info["learn_id"]
        if name in done:
            continue
        labelled = label(frame, oracle)
        if labelled is None:
            failed += 1
            store.state["failed_labels"].append(name)
            store.save_state()
            log(f"label failed for {name}: the oracle raised or returned non-finite values")
            continue
        labelled.info["config_type"] = "learned"
        store.add([labelled])
        new += 1
    return new, failed


def _row_text(record: IterationRecord) -> str:
    return (f"iteration {record.iteration}: {record.labels} structures (+{record.new_labels}, "
            f"{record.failed_labels} failed), explored {record.explored} frames: "
            f"{100 * record.accurate:.1f} % accurate, {100 * record.candidates:.1f} % candidates, "
            f"{100 * record.failed:.1f} % failed; test F MAE {record.test_F_MAE_meV_per_A:.1f} meV/Å "
            f"({record.seconds:.0f} s)")


def _report(directory: Path, records: list[IterationRecord]) -> None:
    """``report.csv`` (the table) and ``learning.png`` (fractions and test error vs labels)."""
    lines = [",".join(COLUMNS)] + [",".join(f"{getattr(r, c):.6g}" if isinstance(getattr(r, c), float)
                                            else str(getattr(r, c)) for c in COLUMNS) for r in records]
    write_text_atomic(directory / "report.csv", "\n".join(lines) + "\n")
    from mlip.files import save_figure
    from mlip.plots import new_figure

    figure = new_figure(9.0, 3.5)
    left, right = figure.subplots(1, 2)
    labels = [r.labels for r in records]
    for kind in ("accurate", "candidates", "failed"):
        left.plot(labels, [getattr(r, kind) for r in records], marker="o", label=kind)
    left.set_xlabel("structures in the data set")
    left.set_ylabel("fraction of explored frames")
    left.legend()
    # the test error is the model's, trained before the iteration's labels were added
    right.plot([r.trained_on for r in records], [r.test_F_MAE_meV_per_A for r in records], marker="o")
    right.set_xlabel("structures trained on")
    right.set_ylabel("test force MAE (meV/Å)")
    save_figure(figure, directory / "learning.png")
