"""The epoch loop: the train steps of each epoch, validation, best-epoch bookkeeping,
a checkpoint after every epoch, early stopping.

Batch order depends only on ``(seed, epoch)``, and the checkpoint holds the whole
:class:`TrainState` and :class:`Progress`, so a run resumed after any epoch
reproduces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
from jax.typing import DTypeLike

from mlip.model import Model, Params
from mlip.training.checkpoint import save_checkpoint
from mlip.training.resume import config_record
from mlip.training.config import TrainConfig
from mlip.training.eos import EOSTerm
from mlip.training.features import FeatureDataset
from mlip.training.loss import LossWeights
from mlip.training.state import Progress, TrainState
from mlip.training.steps import accumulate, evaluate_dataset, loss_weights, summarize_members

if TYPE_CHECKING:
    from mlip.training.trainer import PreparedData


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message says why."""


@dataclass
class Run:
    """The fixed pieces of one training run (everything but the state).

    Attributes:
        model: the run's starting model (config, scaling, offsets, frozen leaves in
            float64); stored in every checkpoint.
        labels: ``"train"``/``"frozen"`` per parameter leaf.
        train_step, eval_step: from :mod:`mlip.training.steps`.
        train_set, validation_set: the featurised sets on the device, in ``dtype``.
        eos_terms: equation-of-state terms in ``dtype``.
        n_devices: devices a batch is split over (batch sizes are multiples of it).
        dtype: the training dtype.
        checkpoint_path: ``checkpoints/latest.ckpt`` of the output directory.
        sample_weights: ``[members, n_train]`` per-member weights of the training
            structures (bootstrap resample counts) on the device, or None (all 1).
    """

    config: TrainConfig
    data: PreparedData
    model: Model
    labels: Params
    train_step: Callable
    eval_step: Callable
    train_set: FeatureDataset
    validation_set: FeatureDataset | None
    eos_terms: list[EOSTerm]
    n_devices: int
    dtype: DTypeLike
    checkpoint_path: Path
    sample_weights: jax.Array | None = None

    def n_compilations(self) -> int:
        """Shapes the train step has been compiled for so far."""
        return self.train_step._cache_size()


def run_epochs(run: Run, state: TrainState, progress: Progress, say: Callable[..., None],
               on_epoch_end: Callable[[int, dict], None] | None = None, show_progress: bool = False) -> TrainState:
    """Epochs ``progress.epoch + 1`` .. ``training.epochs`` (fewer on early stop);
    ``progress`` is updated in place and checkpointed with the state after each epoch.

    Args:
        say: ``say(line, echo=True)`` logger.
        on_epoch_end: called with ``(epoch, record)`` after each epoch's checkpoint.
        show_progress: a tqdm bar instead of one logged line per epoch.

    Returns:
        The state after the last epoch run.

    Raises:
        TrainingError: non-finite training loss or gradient (the epoch's checkpoint
            is not written), or non-finite validation loss.
    """
    config = run.config
    epochs, patience = config.training.epochs, config.training.patience
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        # no smoothing: the rate (and ETA) is the mean over the epochs after the first
        # of this call, whose time is mostly compilation (restarted below)
        bar = tqdm(total=epochs, initial=progress.epoch, desc="training", unit="epoch", smoothing=0)
    started = time.perf_counter()
    first_epoch = progress.epoch
    stored_config = config_record(config)  # in every checkpoint, compared on resume
    try:
        for epoch in range(progress.epoch, epochs):
            weights = loss_weights(config, epoch, run.data.train_features.groups, run.dtype)
            state, total = _train_epoch(run, state, epoch, weights)
            record = _epoch_record(run, state, total, epoch, weights)
            record["seconds"] = time.perf_counter() - started
            progress.add(record, state.eval_params)
            save_checkpoint(run.checkpoint_path, state, progress, run.model, stored_config)
            say(_epoch_line(record), echo=bar is None)  # the progress bar shows the epoch instead
            if bar is not None:
                bar.set_postfix_str(_short(record))
                bar.update(1)
                if epoch == first_epoch:  # compilation done: time the ETA from here
                    bar.initial = bar.n
                    bar.start_t = bar.last_print_t = getattr(bar, "_time", time.time)()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            if patience and progress.bad_epochs >= patience:
                say(f"early stop: no validation improvement for {patience} epochs")
                break
    finally:
        if bar is not None:
            bar.close()
    ran = progress.epoch - first_epoch
    span = f" (epochs {first_epoch + 1}-{progress.epoch}, resumed after epoch {first_epoch})" if first_epoch else ""
    say(f"trained {ran} epoch{'s' if ran != 1 else ''}{span} in {time.perf_counter() - started:.1f} s; "
        f"{run.n_compilations()} compiled train-step shape(s); best epoch {progress.best_epoch}")
    return state


def _train_epoch(run: Run, state: TrainState, epoch: int, weights: LossWeights) -> tuple[TrainState, dict]:
    """One pass over the epoch's batches; returns the state and the summed metrics
    (on the device).  Raises TrainingError naming the first non-finite batch."""
    train_set, training = run.train_set, run.config.training
    total, schedule, flags = None, [], []
    for bucket, index in train_set.batches(training.batch_atoms, training.seed, epoch, multiple=run.n_devices):
        state, metrics = run.train_step(state, train_set.buckets[bucket], index, weights, run.eos_terms,
                                        run.sample_weights)
        schedule.append((bucket, index))
        flags.append(metrics["nonfinite"])
        total = accumulate(total, metrics)
    bad = [n for n, flag in enumerate(jax.device_get(flags)) if np.any(flag > 0)]  # flag: [members] in ensembles
    if bad:
        bucket, index = schedule[bad[0]]
        names = [run.data.train[int(k)].name for k in
                 np.asarray(run.data.train_features.buckets[bucket].sample)[index[index >= 0]]]
        flag = np.asarray(jax.device_get(flags[bad[0]]))
        members = f" (ensemble member(s) {np.flatnonzero(flag > 0).tolist()})" if flag.ndim else ""
        raise TrainingError(
            f"non-finite loss or gradient at epoch {epoch + 1}{members} in the batch of structures {names}; "
            f"the update was skipped and the last good checkpoint ({run.checkpoint_path}) is kept. "
            "Lower optimizer.learning_rate or check these structures' labels."
        )
    return state, total


def _epoch_record(run: Run, state: TrainState, total: dict, epoch: int, weights: LossWeights) -> dict:
    """The epoch's history record: update count, training metrics and, with a
    validation set, the validation metrics of :attr:`TrainState.eval_params`.  For
    an ensemble every metric is the mean over the members, and ``train_loss_members``
    / ``val_loss_members`` list each member's loss."""
    record = {"epoch": epoch + 1, "lr_step": int(np.max(jax.device_get(state.step))), **{
        f"train_{k}": v for k, v in summarize_members(jax.device_get(total)).items()}}
    if run.validation_set is not None:
        record.update({f"val_{k}": v for k, v in evaluate_dataset(
            run.eval_step, state.eval_params, run.validation_set, weights, run.config.training.batch_atoms,
            run.n_devices).items()})
        if not math.isfinite(record["val_loss"]):
            raise TrainingError(f"non-finite validation loss at epoch {epoch + 1}; validation structures "
                                f"{[s.name for s in run.data.validation]}")
    return record


def _epoch_line(record: dict) -> str:
    """The epoch's log line: losses and validation MAEs."""
    parts = [f"epoch {record['epoch']:4d}"]
    for key in ("train_loss", "val_loss", "val_energy_mae", "val_force_mae", "val_stress_mae"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")
    return "  ".join(parts)


def _short(record: dict) -> str:
    """The progress bar's postfix: training loss and validation MAEs."""
    keys = (("val_energy_mae", "E"), ("val_force_mae", "F"), ("val_stress_mae", "S"))
    parts = [f"loss={record['train_loss']:.3g}"]
    parts += [f"{short}={record[key]:.3g}" for key, short in keys if key in record]
    return " ".join(parts)
