"""Training loop: data -> validated, featurised batches -> optax -> checkpoints -> model.

:func:`train` is what ``mlip train CONFIG.toml`` runs.  One jitted, buffer-donating
``train_step(state, bucket, index, weights, eos) -> (state, metrics)`` is compiled
once per shape bucket; metrics are summed on the device and read once per epoch.
Every epoch writes ``checkpoints/latest.ckpt`` atomically (it also holds the
parameters with the lowest validation loss, written as ``best.mlip`` at the end).
Batch order depends only on ``(seed, epoch)``, so a resumed run reproduces an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from mlip.io import ModelFileError, load_model, model_payload, read_container, save_model, write_container
from mlip.kernels.symmetry_functions import default_symmetry_functions
from mlip.model import Model, ModelConfig, cast_params, init_params
from mlip.precision import DTYPES, with_float64
from mlip.training.config import TrainConfig, weight_at
from mlip.training.data import (
    DataError, LabelKeys, Sample, describe, elements_of, read_samples, split_samples, validate_samples,
)
from mlip.training.eos import EOSTerm, make_eos_functions, make_eos_term, pressure_volume_fit, reference_crystal
from mlip.training.features import FeatureDataset, featurize
from mlip.training.loss import LossWeights, make_loss, summarize
from mlip.training.optimizer import apply_updates, make_optimizer, trainable_labels
from mlip.training.scaling import fit_reference_energies, scaling_from_features

CHECKPOINT_MAGIC = b"MLIP-CHECKPOINT\n"


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message says why."""


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
    from mlip.kernels.neighbor_list import host_pairs

    shortest = limit
    for s in samples:
        i, j, shifts = host_pairs(s.atoms.positions, s.atoms.cell.array, s.atoms.pbc, shortest)
        if len(i):
            d = np.linalg.norm(s.atoms.positions[j] + shifts @ s.atoms.cell.array - s.atoms.positions[i], axis=1)
            shortest = min(shortest, float(d.min()))
    return shortest


def initial_model(config: TrainConfig, train: list[Sample]) -> Model:
    """A new model from the [model] section, or the transfer-learning start model."""
    if config.transfer.init_model:
        return load_model(config.path(config.transfer.init_model)).rename_elements(config.transfer.element_map)
    m = config.model
    elements = m.elements or elements_of(train)
    r_min = m.r_min if m.r_min > 0 else math.floor(85.0 * shortest_distance(train, m.r_cut)) / 100.0
    sf = default_symmetry_functions(elements, r_cut=m.r_cut, n_radial=m.n_radial, n_angular=m.n_angular,
                                    zetas=m.zetas, r_lower=m.r_lower, angular_type=m.angular_type, grid=m.grid,
                                    cutoff_type=m.cutoff_type)
    model_config = ModelConfig(sf, m.hidden_layers, m.activation, r_min)
    return Model(model_config, init_params(model_config, m.seed))


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
    if not config.transfer.init_model:
        model = scaling_from_features(model, _descriptors_by_element(model, train_features), config.model.scaling)
        model = fit_reference_energies(model, [s.atoms for s in train], [s.energy for s in train])
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


# ----------------------------------------------------------------------------- steps


def _mesh_sharding():
    devices = jax.devices()
    if len(devices) < 2:
        return None, 1
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")), len(devices)


def make_steps(model_config: ModelConfig, config: TrainConfig, optimizer, labels, sharding):
    """Jitted ``train_step`` and ``eval_step`` (see module docstring)."""
    loss_fn = make_loss(model_config, config.loss.kind, config.loss.huber_delta)
    _, eos_penalty = make_eos_functions(model_config)
    ema_decay = config.optimizer.ema_decay
    plateau = config.optimizer.schedule == "plateau"

    def batch(bucket, index):
        arrays = bucket.take(jnp.maximum(index, 0))
        if sharding is not None:
            arrays = jax.lax.with_sharding_constraint(arrays, sharding)
        return arrays, index >= 0

    def train_step(state, bucket, index, weights, eos_terms):
        arrays, valid = batch(bucket, index)

        def objective(params):
            value, metrics = loss_fn(params, arrays, valid, weights)
            for term in eos_terms:
                value = value + eos_penalty(params, term)
            return value, metrics

        (value, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
        extra = {"value": value} if plateau else {}
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"], **extra)
        params = apply_updates(state["params"], updates, labels)
        finite = jnp.isfinite(value) & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params = keep(params, state["params"])
        opt_state = keep(opt_state, state["opt_state"])
        new_state = {"params": params, "opt_state": opt_state, "ema": state["ema"]}
        if ema_decay > 0:
            new_state["ema"] = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                                                      state["ema"], params)
        metrics["nonfinite"] = (~finite).astype(value.dtype)
        return new_state, metrics

    def eval_step(params, bucket, index, weights):
        arrays, valid = batch(bucket, index)
        return loss_fn(params, arrays, valid, weights)[1]

    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)


def _accumulate(total, metrics):
    return metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)


def _weights(config: TrainConfig, epoch: int, groups: tuple[str, ...], dtype) -> LossWeights:
    epochs = config.training.epochs
    group_weights = np.array([config.loss.config_type_weights.get(g, 1.0) for g in groups], dtype=np.float64)
    return LossWeights(
        jnp.asarray(weight_at(config.loss.energy_weight, epoch, epochs), dtype),
        jnp.asarray(weight_at(config.loss.forces_weight, epoch, epochs), dtype),
        jnp.asarray(weight_at(config.loss.stress_weight, epoch, epochs), dtype),
        jnp.asarray(group_weights, dtype),
    )


def evaluate_dataset(eval_step, params, dataset: FeatureDataset, weights: LossWeights, batch_atoms: int,
                     multiple: int = 1) -> dict[str, float]:
    """Loss and MAE/RMSE (meV/atom, meV/Å, GPa) of ``params`` on a featurised set."""
    total = None
    for bucket, index in dataset.batches(batch_atoms, multiple=multiple):
        total = _accumulate(total, eval_step(params, dataset.buckets[bucket], index, weights))
    return summarize(jax.device_get(total))


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict, extra: dict, model: Model) -> None:
    """Atomic, checksummed checkpoint: train state (params, optimiser, EMA), best
    params, epoch counters and history, plus the starting model (config, scaling)."""
    payload = msgpack.packb({
        "state": flax.serialization.to_bytes(jax.device_get(state)),
        "best_params": flax.serialization.to_bytes(jax.device_get(extra["best_params"])),
        "meta": json.dumps({k: v for k, v in extra.items() if k != "best_params"}),
        "model": model_payload(model),
    }, use_bin_type=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_container(path, payload, CHECKPOINT_MAGIC)


def load_checkpoint(path: Path, state_template: dict, params_template) -> tuple[dict, dict]:
    """Restore ``(state, extra)`` written by :func:`save_checkpoint` into templates."""
    from mlip.io import model_from_payload

    content = msgpack.unpackb(read_container(path, CHECKPOINT_MAGIC, "mlip checkpoint"), raw=False)
    state = flax.serialization.from_bytes(state_template, content["state"])
    extra = json.loads(content["meta"])
    extra["best_params"] = flax.serialization.from_bytes(params_template, content["best_params"])
    extra["model"] = model_from_payload(content["model"], path)
    return state, extra


# ----------------------------------------------------------------------------- main loop


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


def _train(config, resume, progress, say, on_epoch_end, out: Path, prepared) -> TrainResult:
    dtype = DTYPES[config.training.dtype]
    data = prepared if prepared is not None else prepare(config, progress=progress, log=say)
    model = data.model
    checkpoint_path = out / "checkpoints" / "latest.ckpt"
    if config.transfer.offsets_only:
        model = _refit_offsets(model, data.train_features, dtype)
        save_model(model, out / config.output.model_name)
        say("refitted the per-element energy offsets in closed form (offsets_only = true)")
        return _finish(config, model, data, [], out, say, 0, dtype)

    state, optimizer, labels, sharding, n_devices = _initial_state(model, config, data, dtype)
    train_step, eval_step = make_steps(model.config, config, optimizer, labels, sharding)
    extra = {"epoch": 0, "best_loss": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [],
             "best_params": jax.tree_util.tree_map(jnp.copy, state["params"])}  # not the donated buffers
    if resume and checkpoint_path.exists():
        state, extra = load_checkpoint(checkpoint_path, state, state["params"])
        model = extra.pop("model")  # the run's starting model (scaling, offsets), also the frozen leaves
        say(f"resumed from {checkpoint_path} at epoch {extra['epoch']}")
    history = extra["history"]
    eos_terms = [t.cast(dtype) for t in data.eos_terms]
    train_set = data.train_features.to_device(dtype)
    validation_set = data.validation_features.to_device(dtype) if data.validation_features else None
    epochs, batch_atoms, seed = config.training.epochs, config.training.batch_atoms, config.training.seed
    say(f"model: {len(model.elements)} element(s) {list(model.elements)}, "
        f"{model.config.symmetry_functions.n_union} descriptors, layers {model.config.hidden_layers}, "
        f"r_cut {model.cutoff} Å, r_min {model.config.r_min} Å; {config.training.dtype} on {n_devices} device(s)")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=extra["epoch"], desc="training", unit="epoch")
    started = time.perf_counter()
    try:
        for epoch in range(extra["epoch"], epochs):
            weights = _weights(config, epoch, data.train_features.groups, dtype)
            total, schedule, flags = None, [], []
            for bucket, index in train_set.batches(batch_atoms, seed, epoch, multiple=n_devices):
                state, metrics = train_step(state, train_set.buckets[bucket], index, weights, eos_terms)
                schedule.append((bucket, index))
                flags.append(metrics["nonfinite"])
                total = _accumulate(total, metrics)
            bad = [n for n, flag in enumerate(jax.device_get(flags)) if flag > 0]
            if bad:
                bucket, index = schedule[bad[0]]
                names = [data.train[int(k)].name for k in
                         np.asarray(data.train_features.buckets[bucket].sample)[index[index >= 0]]]
                raise TrainingError(
                    f"non-finite loss or gradient at epoch {epoch + 1} in the batch of structures {names}; "
                    f"the update was skipped and the last good checkpoint ({checkpoint_path}) is kept. "
                    "Lower optimizer.learning_rate or check these structures' labels."
                )
            record = {"epoch": epoch + 1, "lr_step": int(_step_count(state)), **{
                f"train_{k}": v for k, v in summarize(jax.device_get(total)).items()}}
            selection_params = state["ema"] if config.optimizer.ema_decay > 0 else state["params"]
            if validation_set is not None:
                record.update({f"val_{k}": v for k, v in evaluate_dataset(
                    eval_step, selection_params, validation_set, weights, batch_atoms, n_devices).items()})
            if validation_set is not None and not math.isfinite(record["val_loss"]):
                raise TrainingError(f"non-finite validation loss at epoch {epoch + 1}; validation structures "
                                    f"{[s.name for s in data.validation]}")
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            score = record.get("val_loss", record["train_loss"])
            if score < extra["best_loss"]:
                extra.update(best_loss=score, best_epoch=epoch + 1, bad_epochs=0,
                             best_params=jax.tree_util.tree_map(jnp.copy, selection_params))
            else:
                extra["bad_epochs"] += 1
            extra["epoch"] = epoch + 1
            save_checkpoint(checkpoint_path, state, extra, model)
            say(_epoch_line(record), echo=bar is None)  # the progress bar shows the epoch instead
            if bar is not None:
                bar.set_postfix_str(_short(record))
                bar.update(1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            if config.training.patience and extra["bad_epochs"] >= config.training.patience:
                say(f"early stop: no validation improvement for {config.training.patience} epochs")
                break
    finally:
        if bar is not None:
            bar.close()
    n_compilations = train_step._cache_size()
    say(f"trained {extra['epoch']} epochs in {time.perf_counter() - started:.1f} s; "
        f"{n_compilations} compiled train-step shape(s); best epoch {extra['best_epoch']}")

    def trained_model(params) -> Model:
        # frozen leaves come from the float64 start model, not from the (maybe float32) train state
        return Model(model.config, jax.tree_util.tree_map(
            lambda label, start, new: jnp.asarray(start, jnp.float64) if label == "frozen" else new,
            labels, model.params, cast_params(jax.device_get(params), jnp.float64)))

    best = trained_model(extra["best_params"])
    save_model(best, out / "best.mlip")
    if config.training.keep == "last":
        best = trained_model(state["ema"] if config.optimizer.ema_decay > 0 else state["params"])
    if config.training.refit_offsets and "reference_energies" not in config.transfer.freeze:
        best = _refit_offsets(best, data.train_features, dtype)
    save_model(best, out / config.output.model_name)
    return _finish(config, best, data, history, out, say, n_compilations, dtype)


def _initial_state(model: Model, config: TrainConfig, data: PreparedData, dtype):
    sharding, n_devices = _mesh_sharding()
    # own buffers: the train step donates them, and the model's arrays must survive
    params = jax.tree_util.tree_map(lambda x: jnp.array(x, dtype, copy=True), model.params)
    labels = trainable_labels(params, len(model.config.hidden_layers), config.transfer.freeze)
    steps = sum(1 for _ in data.train_features.batches(config.training.batch_atoms, multiple=n_devices))
    optimizer = make_optimizer(config.optimizer, labels, steps, config.training.epochs)
    state = {"params": params, "opt_state": optimizer.init(params), "ema": jax.tree_util.tree_map(jnp.copy, params)}
    return state, optimizer, labels, sharding, n_devices


def _step_count(state) -> int:
    counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state["opt_state"])
              if "count" in jax.tree_util.keystr(path)]
    return int(max(counts)) if counts else 0


def _refit_offsets(model: Model, dataset: FeatureDataset, dtype) -> Model:
    """Closed-form least-squares shift of the per-element energy offsets that best
    fits the training energies given the networks (eV), from the cached descriptors."""
    from mlip.training.loss import make_predictor

    predict = jax.jit(make_predictor(model.config))
    params = cast_params(model.params, dtype)
    residual = np.zeros(len(dataset.samples))
    for arrays in dataset.buckets:
        energy = np.asarray(predict(params, arrays.cast(dtype)).energy, dtype=np.float64)
        residual[np.asarray(arrays.sample)] = np.asarray(arrays.energy) - energy
    counts = np.array([[s.atoms.get_chemical_symbols().count(e) for e in model.elements] for s in dataset.samples],
                      dtype=float)
    shift, *_ = np.linalg.lstsq(counts, residual, rcond=None)
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    for element, delta in zip(model.elements, shift):
        params["reference_energies"][element] = jnp.asarray(params["reference_energies"][element] + delta)
    return Model(model.config, params)


def _finish(config, model, data, history, out, say, n_compilations, dtype) -> TrainResult:
    from mlip.training.evaluate import metrics_by_group, predict_samples, write_parity_plot
    from mlip.training.plots import learning_curve, metrics_table

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
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    say(f"wrote {out / config.output.model_name}, {out / 'metrics.json'}")
    return TrainResult(model, metrics, history, out, n_compilations, eos_report)


def _eos_report(model: Model, data: PreparedData) -> list[dict]:
    from ase.units import GPa

    pressure_bulk, _ = make_eos_functions(model.config)
    report = []
    for term, target in zip(data.eos_terms, data.eos_targets):
        pressure, bulk_modulus = pressure_bulk(cast_params(model.params, jnp.float64), term)
        report.append({**target, "pressure_gpa": float(pressure) / GPa, "bulk_modulus_gpa": float(bulk_modulus) / GPa})
    return report


def _epoch_line(record: dict) -> str:
    parts = [f"epoch {record['epoch']:4d}"]
    for key in ("train_loss", "val_loss", "val_energy_mae", "val_force_mae", "val_stress_mae"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")
    return "  ".join(parts)


def _short(record: dict) -> str:
    keys = (("val_energy_mae", "E"), ("val_force_mae", "F"), ("val_stress_mae", "S"))
    parts = [f"loss={record['train_loss']:.3g}"] + [f"{short}={record[key]:.3g}" for key, short in keys if key in record]
    return " ".join(parts)


__all__ = ["TrainResult", "TrainingError", "load_splits", "prepare", "train", "ModelFileError"]
