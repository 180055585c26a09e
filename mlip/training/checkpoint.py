"""Checkpoints: exactly a :class:`TrainState` and the run's :class:`Progress`.

A checkpoint is an atomic, checksummed :mod:`mlip.files` container of kind
:data:`CHECKPOINT` (magic :data:`CHECKPOINT_MAGIC`) whose content is:

* ``state``: the TrainState (``flax.serialization`` bytes: step, params, opt_state, ema);
* ``best_params``: :attr:`Progress.best_params` (``flax.serialization`` bytes);
* ``meta``: the rest of the Progress as JSON (epoch, best loss and epoch, history);
* ``model``: the run's starting model (:func:`mlip.io.model_payload`: config,
  scaling, offsets and the frozen leaves in float64);
* ``config``: the run's training config as JSON (:func:`mlip.training.resume.config_record`),
  which a resume compares with its own (absent in older checkpoints).

:func:`load_checkpoint` restores into a template state, so a resumed run carries
on with the same pytree structure, dtypes and step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import flax.serialization
import jax

from mlip.files import ContainerKind, read_container, write_container
from mlip.io import ModelFileError, model_from_payload, model_payload
from mlip.model import Model
from mlip.training.state import Progress, TrainState

CHECKPOINT_MAGIC = b"MLIP-CHECKPOINT\n"
CHECKPOINT = ContainerKind("mlip checkpoint", CHECKPOINT_MAGIC, error=ModelFileError)


def save_checkpoint(path: str | os.PathLike, state: TrainState, progress: Progress, model: Model,
                    config: dict | None = None) -> None:
    """Write ``state``, ``progress``, the starting ``model`` and the run's ``config``
    record (:func:`mlip.training.resume.config_record`, so a resume can compare it)
    to ``path`` atomically (a reader sees the previous checkpoint or this one, never
    a partial file)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    content = {
        "state": flax.serialization.to_bytes(jax.device_get(state)),
        "best_params": flax.serialization.to_bytes(jax.device_get(progress.best_params)),
        "meta": json.dumps(progress.meta()),
        "model": model_payload(model),
    }
    if config is not None:
        content["config"] = json.dumps(config)
    write_container(path, CHECKPOINT, content)


def load_checkpoint(path: str | os.PathLike, template: TrainState) -> tuple[TrainState, Progress, Model]:
    """``(state, progress, starting model)`` written by :func:`save_checkpoint`; the
    state (and the best parameters) restored into ``template`` (and its params).

    Raises:
        ModelFileError: unreadable, corrupt or not a checkpoint (the message names the file).
    """
    content = read_container(path, CHECKPOINT).content
    # on the device like a fresh state, so the train step's compiled code is reused
    state = jax.device_put(flax.serialization.from_bytes(template, content["state"]))
    best_params = jax.device_put(flax.serialization.from_bytes(template.params, content["best_params"]))
    progress = Progress(best_params=best_params, **json.loads(content["meta"]))
    return state, progress, model_from_payload(content["model"], path)
