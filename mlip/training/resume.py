"""Resuming a training run: the checkpoint against the config (issue 20, item 6).

Every checkpoint stores the run's configuration (:func:`config_record`: every key
of every section but ``[output]``, data paths resolved).  On ``--resume`` the
stored record is compared with the new config key by key:

* architecture and data (``[model]``, ``[data]``, ``[transfer]`` but
  ``offsets_only``, ``training.dtype``): the run refuses, naming the keys that
  differ, before anything is restored or trained;
* everything else that shapes the optimisation (``[optimizer]``, ``[loss]``,
  ``[[eos]]``, the other ``[training]`` keys): the run continues with one warning
  line naming the keys, old and new values; when the changed optimiser no longer
  fits the stored optimiser state (another schedule, clipping, EMA or AdamW),
  the run refuses instead, naming them.

A checkpoint written before the record existed is checked by its starting model
alone: a different architecture refuses, naming the model settings that differ.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from mlip.training.config import ConfigError, TrainConfig

#: keys whose change means another model or other data: resuming refuses
REFUSED = ("model.", "data.", "transfer.init_model", "transfer.freeze", "transfer.element_map", "training.dtype")
#: keys that do not touch the run at all
IGNORED = ("output.", "transfer.offsets_only")


def config_record(config: TrainConfig) -> dict:
    """The config as a JSON-ready dict of ``"section.key": value`` (``[output]`` left
    out, data and start-model paths resolved against the config's folder)."""
    record = {}
    for section in ("data", "model", "loss", "optimizer", "training", "transfer"):
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            if (section, key) in (("data", "train"), ("data", "validation"), ("data", "test"),
                                  ("transfer", "init_model")) and value:
                value = str(config.path(value).resolve())
            record[f"{section}.{key}"] = value
    record["eos"] = [dataclasses.asdict(entry) for entry in config.eos]
    return json.loads(json.dumps(record))


def config_changes(stored: dict, config: TrainConfig) -> tuple[list[str], list[str]]:
    """``(refused, warned)``: ``"key: old -> new"`` of the keys that differ between a
    checkpoint's record and ``config``."""
    current = config_record(config)
    refused, warned = [], []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, "(absent)"), current.get(key, "(absent)")
        if old == new or key.startswith(IGNORED):
            continue
        line = f"{key}: {old!r} -> {new!r}"
        (refused if key.startswith(REFUSED) else warned).append(line)
    return refused, warned


def _model_differences(stored, current) -> list[str]:
    """Names of the :class:`~mlip.model.ModelConfig` fields that differ."""
    if stored == current:
        return []
    names = [f.name for f in dataclasses.fields(current) if getattr(stored, f.name) != getattr(current, f.name)]
    return names or ["model"]


def resume_checkpoint(path: Path, template, config: TrainConfig, model, say: Callable[..., None]):
    """``(state, progress, starting model)`` of the checkpoint ``path`` restored into
    ``template``, after checking it against ``config`` and the fresh starting
    ``model`` (see the module docstring).

    Raises:
        ConfigError: architecture or data changed (the keys named), or the optimiser
            state no longer fits the changed optimiser (the keys named).
        ModelFileError: unreadable, corrupt or not a checkpoint.
    """
    from mlip.files import read_container
    from mlip.io import model_from_payload
    from mlip.training.checkpoint import CHECKPOINT, load_checkpoint

    content = read_container(path, CHECKPOINT).content
    warned: list[str] = []
    if "config" in content:
        refused, warned = config_changes(json.loads(content["config"]), config)
        if refused:
            raise ConfigError(f"cannot resume from {path}: the config changes the model or the data since the "
                              f"checkpoint ({'; '.join(refused)}); revert these keys, or start a new run in "
                              "another output.directory (or remove the checkpoint)")
    stored_model = model_from_payload(content["model"], path)
    differences = _model_differences(stored_model.config, model.config)
    if differences:
        raise ConfigError(f"cannot resume from {path}: its model differs from the one this config builds "
                          f"({', '.join(differences)}); revert the [model] keys, or start a new run in another "
                          "output.directory")
    if warned:
        say(f"warning: resuming from {path} with changed settings ({'; '.join(warned)})")
    try:
        return load_checkpoint(path, template)
    except Exception as error:  # flax raises ValueError, KeyError, TypeError or AttributeError
        from mlip.files import ContainerError

        if isinstance(error, ContainerError):
            raise
        changed = "; ".join(warned) if warned else "no key differs from the checkpoint's record"
        detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise ConfigError(f"cannot resume from {path}: its training state does not fit this config's optimiser "
                          f"({changed}): {detail}; revert these keys or start a new run") from None
