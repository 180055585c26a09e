"""Training entry point: data -> validated, featurised batches -> epochs -> model.

:func:`train` is what ``mlip train CONFIG.toml`` runs.  ``_train`` is a short
sequence of named steps: prepare the data (:func:`prepare`), init or resume the
:class:`~mlip.training.state.TrainState`, run the epochs
(:func:`mlip.training.loop.run_epochs`, one jitted, state-donating
``train_step(state, batch) -> (state, metrics)`` per shape bucket from
:mod:`mlip.training.steps`), select the best or last parameters, write the outputs.
Every epoch writes ``checkpoints/latest.ckpt`` atomically
(:mod:`mlip.training.checkpoint`); ``resume=True`` continues from it bit for bit.

Ensembles (``[model] ensemble = K``) train in the same process with the same
compilations: the state's every leaf carries a leading member axis and the
single-member step is ``vmap``-ed over it, with the batches and cached
descriptors shared.  Member ``k`` starts from the weights of seed
``model.seed + k``; feature scaling and reference energies are fitted once and
shared (the offsets then train per member).  With ``bootstrap = true`` member
``k`` weights every training structure by how often it was drawn in a bootstrap
resample (:func:`bootstrap_counts`).  The selected epoch is the one with the
lowest validation loss averaged over the members.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from mlip.io import ModelFileError, load_model, save_model
from mlip.kernels.symmetry_functions import default_symmetry_functions
from mlip.model import Model, ModelConfig, cast_params, init_params, stack_params
from mlip.precision import DTYPES, with_float64
from mlip.training.checkpoint import CHECKPOINT_MAGIC, load_checkpoint, save_checkpoint
from mlip.training.config import ConfigError, TrainConfig
from mlip.training.data import (
    DataError, LabelKeys, Sample, describe, elements_of, read_samples, split_samples, validate_samples,
)
from mlip.training.eos import EOSTerm, make_eos_functions, make_eos_term, pressure_volume_fit, reference_crystal
from mlip.training.features import FeatureDataset, featurize
from mlip.training.loop import Run, TrainingError, run_epochs
from mlip.training.resume import resume_checkpoint
from mlip.training.optimizer import make_optimizer, trainable_labels
from mlip.training.scaling import fit_reference_energies, scaling_from_features, with_feature_range
from mlip.training.state import Progress, TrainState
from mlip.training.steps import evaluate_dataset, make_eval_step, make_train_step, mesh_sharding


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    model: Model
    metrics: dict  # {split: {group: {metric: value}}}
    history: list[dict]
    directory: Path
    n_compilations: int
    eos: list[dict] = field(default_factory=list)


@dataclass
class PreparedData:
    """Validated samples and featurised train/validation sets."""

    model: Model
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    train_features: FeatureDataset
    validation_features: FeatureDataset | None
    eos_terms: list[EOSTerm]
    eos_targets: list[dict]


# ----------------------------------------------------------------------------- data


def _keys(config: TrainConfig) -> LabelKeys:
    d = config.data
    return LabelKeys(d.energy_key or None, d.forces_key or None, d.stress_key or None, d.config_type_key)


def load_splits(config: TrainConfig) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Train, validation and test samples as the config describes them (generating the
    built-in data set first when asked and missing)."""
    d = config.data
    train_path = config.path(d.train)
    if d.generate and not train_path.exists():
        from mlip.training.generate import default_si_dataset

        train_path.parent.mkdir(parents=True, exist_ok=True)
        default_si_dataset(train_path)
    keys, fmt = _keys(config), (d.format or None)
    samples = read_samples(train_path, keys, fmt)
    if d.validation:
        train, validation = samples, read_samples(config.path(d.validation), keys, fmt)
    else:
        train, validation = split_samples(samples, d.validation_fraction, d.seed)
    test = read_samples(config.path(d.test), keys, fmt) if d.test else []
    return train, validation, test


def shortest_distance(samples: list[Sample], limit: float) -> float:
    """Shortest interatomic distance in ``samples`` (Å), or ``limit`` if none is shorter."""
    from mlip.batch import shortest_distance as shortest_in

    return shortest_in((s.atoms for s in samples), limit)


def initial_model(config: TrainConfig, train: list[Sample]) -> Model:
    """A new single model from the [model] section (weights of ``model.seed``; an
    ensemble is made of it by :func:`ensemble_start` once its scaling is fitted), or
    the transfer-learning start model.

    Raises:
        ConfigError: ``transfer.init_model`` is an ensemble whose size is not
            ``model.ensemble``, or a single model for an ensemble without bootstrap.
    """
    if config.transfer.init_model:
        path = config.path(config.transfer.init_model)
        model = load_model(path).rename_elements(config.transfer.element_map)
        wanted, found = config.model.ensemble, model.config.ensemble
        if found != wanted and not (found == 1 and config.model.bootstrap):
            why = (" (a single start model gives identical members unless model.bootstrap = true)"
                   if found == 1 else "")
            raise ConfigError(f"transfer.init_model {path} is {_members(found)} but model.ensemble = {wanted}{why}")
        return model
    m = config.model
    elements = m.elements or elements_of(train)
    r_min = m.r_min if m.r_min > 0 else math.floor(85.0 * shortest_distance(train, m.r_cut)) / 100.0
    sf = default_symmetry_functions(elements, r_cut=m.r_cut, n_radial=m.n_radial, n_angular=m.n_angular,
                                    zetas=m.zetas, r_lower=m.r_lower, angular_type=m.angular_type, grid=m.grid,
                                    cutoff_type=m.cutoff_type)
    model_config = ModelConfig(sf, m.hidden_layers, m.activation, r_min)
    return Model(model_config, init_params(model_config, m.seed))


def _members(count: int) -> str:
    return "a single model" if count == 1 else f"an ensemble of {count} members"


def ensemble_start(config: TrainConfig, model: Model) -> Model:
    """The starting model of a run with ``model.ensemble = K`` members, from the
    fitted single start ``model``: unchanged when it already has K members;
    otherwise member ``k`` has the weights of seed ``model.seed + k`` (a new model)
    or ``model``'s (a transfer start, bootstrap only), and every member
    ``model``'s feature scaling and reference energies."""
    members = config.model.ensemble
    if model.config.ensemble == members:
        return model
    ensemble_config = dataclasses.replace(model.config, ensemble=members)
    shared = stack_params([model.params] * members)
    if not config.transfer.init_model:
        shared["networks"] = init_params(ensemble_config, config.model.seed)["networks"]
    return Model(ensemble_config, shared, model.feature_range)


def bootstrap_counts(n_samples: int, members: int, seed: int) -> np.ndarray:
    """``[members, n_samples]`` bootstrap resample counts: row ``k`` counts how often
    each structure is drawn in ``n_samples`` draws with replacement by a generator
    seeded with ``(seed, 0xB007, k)`` (``training.seed``; a seed sequence distinct
    from the batch order's ``(seed, epoch)``).  Each row sums to ``n_samples``."""
    rows = []
    for k in range(members):
        draws = np.random.default_rng([seed, 0xB007, k]).integers(0, n_samples, n_samples)
        rows.append(np.bincount(draws, minlength=n_samples))
    return np.stack(rows)


@with_float64
def prepare(config: TrainConfig, progress: bool = False, log: Callable[[str], None] = print) -> PreparedData:
    """Read, validate (every structure, before any compute) and featurise the data;
    fit feature scaling and reference energies for a new model."""
    train, validation, test = load_splits(config)
    model = initial_model(config, train)
    stress_required = config.loss.stress_weight != 0
    everything = train + validation + test
    validate_samples(everything, model.elements, model.config.r_min, stress_required=stress_required)
    log(f"train: {describe(train)}")
    log(f"validation: {describe(validation) if validation else 'none'}")
    log(f"test: {describe(test) if test else 'none'}")
    groups = tuple(sorted({s.config_type for s in everything}))
    unknown = sorted(set(config.loss.config_type_weights) - set(groups))
    if unknown:
        raise DataError(f"loss.config_type_weights names config types {unknown} that are not in the data {list(groups)}")
    started = time.perf_counter()
    train_features = featurize(model, train, groups, progress=progress)
    validation_features = featurize(model, validation, groups) if validation else None
    log(f"descriptors and derivatives of {len(train) + len(validation)} structures in "
        f"{time.perf_counter() - started:.1f} s ({train_features.nbytes() / 1e6:.0f} MB for training), "
        f"shape buckets (atoms, neighbours): {train_features.shapes}")
    by_element = _descriptors_by_element(model, train_features)
    if config.transfer.init_model:  # scaling kept; the range is this training set's
        model = with_feature_range(model, by_element)
    else:
        model = scaling_from_features(model, by_element, config.model.scaling)
        model = fit_reference_energies(model, [s.atoms for s in train], [s.energy for s in train])
    model = ensemble_start(config, model)
    eos_terms, eos_targets = [], []
    for entry in config.eos:
        v0, b0 = entry.v0, entry.b0
        if entry.from_config_type:
            chosen = [s for s in train if s.config_type == entry.from_config_type]
            if not chosen:
                raise DataError(f"eos.from_config_type {entry.from_config_type!r} matches no training structure")
            fitted_v0, fitted_b0 = pressure_volume_fit(chosen, entry.max_volume_strain)
            v0, b0 = (v0 if v0 > 0 else fitted_v0), (b0 if b0 > 0 else fitted_b0)
        atoms = reference_crystal(entry.element, entry.crystal, v0)
        eos_terms.append(make_eos_term(model, atoms, b0, entry.pressure_weight, entry.bulk_modulus_weight))
        eos_targets.append({"element": entry.element, "crystal": entry.crystal, "v0": v0, "b0": b0})
        log(f"EOS target {entry.element} {entry.crystal}: V0 = {v0:.3f} Å^3/atom, B0 = {b0:.1f} GPa")
    return PreparedData(model, train, validation, test, train_features, validation_features, eos_terms, eos_targets)


def _descriptors_by_element(model: Model, dataset: FeatureDataset) -> dict[str, np.ndarray]:
    out = {}
    sf = model.config.symmetry_functions
    for index, element in enumerate(model.elements):
        rows = [np.asarray(b.descriptors)[np.asarray(b.species) == index] for b in dataset.buckets]
        out[element] = np.concatenate(rows)[:, sf.feature_columns(element)]
    return out


# ----------------------------------------------------------------------------- the run


@with_float64
def train(config: TrainConfig, resume: bool = False, progress: bool | None = None,
          log: Callable[[str], None] | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          prepared: PreparedData | None = None) -> TrainResult:
    """Train a model as ``config`` says; write model, checkpoints, metrics and plots
    into ``config.output.directory``.

    Args:
        resume: continue from ``checkpoints/latest.ckpt`` (same data order and
            state, so the result equals an uninterrupted run).
        progress: show a progress bar (default: ``config.output.progress``).
        log: line logger (default: print); every line also goes to ``train.log``.
        on_epoch_end: called with ``(epoch, record)`` after each epoch's checkpoint.
        prepared: data from :func:`prepare` for the same config (skips reading and
            featurising again, e.g. to train several variants on one data set).

    Raises:
        DataError: invalid data (all problems listed).
        TrainingError: non-finite loss (names the batch's structures).
    """
    out = config.path(config.output.directory)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train.log", "a")
    progress = config.output.progress if progress is None else progress

    def say(line: str, echo: bool = True) -> None:
        log_file.write(line + "\n")
        log_file.flush()
        if echo:
            (log or print)(line)

    try:
        return _train(config, resume, progress, say, on_epoch_end, out, prepared)
    finally:
        log_file.close()


def _train(config: TrainConfig, resume: bool, show_progress: bool, say: Callable[..., None],
           on_epoch_end: Callable[[int, dict], None] | None, out: Path, prepared: PreparedData | None) -> TrainResult:
    """The run as named steps: prepare the data, init or resume the state, run the
    epochs, select the best (or last) parameters, write the outputs.  With
    ``transfer.offsets_only`` the energy offsets are refitted instead of training."""
    dtype = DTYPES[config.training.dtype]
    data = prepared if prepared is not None else prepare(config, progress=show_progress, log=say)
    if config.transfer.offsets_only:
        model = _refit_offsets(data.model, data.train_features, dtype)
        say("refitted the per-element energy offsets in closed form (offsets_only = true)")
        return write_outputs(config, model, None, data, [], out, say, 0)
    run, state, progress = init_or_resume(config, data, dtype, out / "checkpoints" / "latest.ckpt", resume, say)
    state = run_epochs(run, state, progress, say, on_epoch_end, show_progress)
    best, model = select(run, state, progress)
    return write_outputs(config, model, best, data, progress.history, out, say, run.n_compilations())


def init_or_resume(config: TrainConfig, data: PreparedData, dtype: DTypeLike, checkpoint_path: Path, resume: bool,
                   say: Callable[..., None]) -> tuple[Run, TrainState, Progress]:
    """Init or resume: the optimiser, the jitted steps, the device data and a fresh
    :class:`TrainState` at step 0, or the state and progress of ``checkpoint_path``
    (restored into that fresh state) when resuming and it exists."""
    model = data.model
    members, member_config = model.config.ensemble, data.model.config.member
    sharding, n_devices = mesh_sharding()
    labels = trainable_labels(model.params, len(model.config.hidden_layers), config.transfer.freeze)
    steps = sum(1 for _ in data.train_features.batches(config.training.batch_atoms, multiple=n_devices))
    optimizer = make_optimizer(config.optimizer, labels, steps, config.training.epochs)
    state = TrainState.create(model.params, optimizer, config.optimizer.ema_decay > 0, dtype, members)
    sample_weights = None
    if config.model.bootstrap:
        sample_weights = jnp.asarray(bootstrap_counts(len(data.train), members, config.training.seed), dtype)
    progress = Progress.start(state.params)
    if resume and checkpoint_path.exists():
        # the checkpoint's model is the run's starting model (scaling, offsets, frozen leaves)
        # the stored config against this one first: a changed model or data refuses, naming the keys
        state, progress, model = resume_checkpoint(checkpoint_path, state, config, data.model, say)
        say(f"resumed from {checkpoint_path} at epoch {progress.epoch}")
    run = Run(
        config, data, model, labels,
        make_train_step(member_config, config, optimizer, labels, sharding, members),
        make_eval_step(member_config, config, sharding, members),
        data.train_features.to_device(dtype),
        data.validation_features.to_device(dtype) if data.validation_features else None,
        [t.cast(dtype) for t in data.eos_terms], n_devices, dtype, checkpoint_path, sample_weights,
    )
    if members > 1:
        say(f"ensemble of {members} members (seeds {config.model.seed}..{config.model.seed + members - 1}"
            f"{', bootstrap resamples' if config.model.bootstrap else ''}) trained together")
    say(f"model: {len(model.elements)} element(s) {list(model.elements)}, "
        f"{model.config.symmetry_functions.n_union} descriptors, layers {model.config.hidden_layers}, "
        f"r_cut {model.cutoff} Å, r_min {model.config.r_min} Å; {config.training.dtype} on {n_devices} device(s)")
    return run, state, progress


def select(run: Run, state: TrainState, progress: Progress) -> tuple[Model, Model]:
    """Select: ``(best, output)`` models.  ``best`` holds the parameters of the best
    epoch; ``output`` is ``best`` or, with ``training.keep = "last"``, the last
    epoch's, with the energy offsets refitted (``training.refit_offsets``) unless frozen.
    Frozen leaves come from the float64 starting model, not from the train state."""
    config = run.config

    def trained_model(params) -> Model:
        return run.model.with_params(jax.tree_util.tree_map(
            lambda label, start, new: jnp.asarray(start, jnp.float64) if label == "frozen" else new,
            run.labels, run.model.params, cast_params(jax.device_get(params), jnp.float64)))

    best = trained_model(progress.best_params)
    output = trained_model(state.eval_params) if config.training.keep == "last" else best
    if config.training.refit_offsets and "reference_energies" not in config.transfer.freeze:
        output = _refit_offsets(output, run.data.train_features, run.dtype)
    return best, output


def _refit_offsets(model: Model, dataset: FeatureDataset, dtype) -> Model:
    """Closed-form least-squares shift of the per-element energy offsets that best
    fits the training energies given the networks (eV), from the cached descriptors;
    for an ensemble, each member's own shift."""
    from mlip.training.loss import make_predictor

    predict = jax.jit(make_predictor(model.config.member))
    counts = np.array([[s.atoms.get_chemical_symbols().count(e) for e in model.elements] for s in dataset.samples],
                      dtype=float)
    shifts = []
    for k in range(model.config.ensemble):
        params = cast_params(model.member(k).params, dtype)
        residual = np.zeros(len(dataset.samples))
        for arrays in dataset.buckets:
            energy = np.asarray(predict(params, arrays.cast(dtype)).energy, dtype=np.float64)
            residual[np.asarray(arrays.sample)] = np.asarray(arrays.energy) - energy
        shifts.append(np.linalg.lstsq(counts, residual, rcond=None)[0])
    shift = shifts[0] if model.config.ensemble == 1 else np.stack(shifts, axis=1)  # [E] or [E, K]
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    for element, delta in zip(model.elements, shift):
        params["reference_energies"][element] = jnp.asarray(params["reference_energies"][element] + delta)
    return model.with_params(params)


def write_outputs(config: TrainConfig, model: Model, best: Model | None, data: PreparedData, history: list[dict],
                  out: Path, say: Callable[..., None], n_compilations: int) -> TrainResult:
    """Write outputs: the model (and ``best.mlip``), per-split metrics (logged as a
    table and in ``metrics.json``), EOS report, parity plots and learning curve.
    An ensemble's output model gets calibration factors fitted on the validation
    split (:func:`~mlip.training.calibration.fit_calibration`; ``best.mlip`` keeps
    none), and ``metrics.json`` its uncertainty metrics on validation and test."""
    from mlip.training.evaluate import metrics_by_group, predict_samples, write_parity_plot
    from mlip.training.plots import learning_curve, metrics_table

    uncertainty = _calibrate(model, data, say) if model.config.ensemble > 1 else {}
    model = uncertainty.pop("model", model)
    if best is not None:
        save_model(best, out / "best.mlip")
    save_model(model, out / config.output.model_name)
    metrics = {}
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    for split, samples in splits.items():
        if not samples:
            continue
        predictions = predict_samples(model, samples)
        metrics[split] = metrics_by_group(predictions)
        if config.output.plots:
            write_parity_plot(out / f"parity_{split}.png", predictions, split)
    eos_report = _eos_report(model, data)
    rows = {f"{split}" if group == "all" else f"{split}/{group}": values
            for split, groups in metrics.items() for group, values in groups.items()}
    say("\n" + metrics_table(rows, "split/config_type"))
    for entry in eos_report:
        say(f"EOS {entry['element']} {entry['crystal']}: model P(V0) = {entry['pressure_gpa']:.3f} GPa, "
            f"B(V0) = {entry['bulk_modulus_gpa']:.1f} GPa (target B0 {entry['b0']:.1f} GPa)")
    if config.output.plots and history:
        learning_curve(out / "learning_curve.png", history)
    summary = {"metrics": metrics, "eos": eos_report, "compilations": n_compilations,
               "epochs": len(history), "history": history}
    if model.config.ensemble > 1:
        summary.update(calibration=model.calibration, uncertainty=uncertainty)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    say(f"wrote {out / config.output.model_name}, {out / 'metrics.json'}")
    return TrainResult(model, metrics, history, out, n_compilations, eos_report)


def _calibrate(model: Model, data: PreparedData, say: Callable[..., None]) -> dict:
    """The ensemble ``model`` with calibration factors fitted on the validation
    split (under the key ``"model"``), and the uncertainty metrics of the validation
    and test splits (:func:`~mlip.training.calibration.uncertainty_metrics`)."""
    from mlip.training.calibration import calibration_factors, uncertainty_metrics
    from mlip.training.evaluate import predict_samples

    out = {}
    if data.validation:
        predictions = predict_samples(model, data.validation, uncertainty=True)
        try:
            model = dataclasses.replace(model, calibration=calibration_factors(predictions))
            say(f"uncertainty calibration on the validation split: energy x{model.calibration['energy']:.4g}, "
                f"forces x{model.calibration['forces']:.4g} (stored in the model)")
        except ValueError as error:  # members that agree exactly
            say(f"the ensemble's uncertainties are not calibrated: {error}")
        out["validation"] = uncertainty_metrics(predictions, model.calibration)
    else:
        say("no validation split: the ensemble's uncertainties are not calibrated")
    if data.test:
        out["test"] = uncertainty_metrics(predict_samples(model, data.test, uncertainty=True), model.calibration)
    for split, values in out.items():
        say(f"{split} uncertainty: Spearman sigma_F vs |F error| {values['spearman F atom']:.3f} per atom, "
            f"{values['spearman F max']:.3f} per structure max; force components within 1 sigma "
            f"{values['F within 1σ raw']:.3f} raw, {values['F within 1σ cal']:.3f} calibrated")
    return {**out, "model": model}


def _eos_report(model: Model, data: PreparedData) -> list[dict]:
    """Model pressure and bulk modulus (GPa) at each EOS target's volume."""
    from ase.units import GPa

    pressure_bulk, _ = make_eos_functions(model.config)
    report = []
    for term, target in zip(data.eos_terms, data.eos_targets):
        pressure, bulk_modulus = pressure_bulk(cast_params(model.params, jnp.float64), term)
        report.append({**target, "pressure_gpa": float(pressure) / GPa, "bulk_modulus_gpa": float(bulk_modulus) / GPa})
    return report


__all__ = [
    "CHECKPOINT_MAGIC", "ModelFileError", "PreparedData", "TrainResult", "TrainingError", "bootstrap_counts",
    "ensemble_start", "evaluate_dataset", "initial_model", "load_checkpoint", "load_splits", "prepare",
    "save_checkpoint", "shortest_distance", "train",
]
