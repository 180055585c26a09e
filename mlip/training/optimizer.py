"""Optimiser, learning-rate schedule and parameter freezing (optax).

Parameter groups of a model (``Model.params``):

* ``hidden``: every element network's hidden layers (``Dense_0`` .. ``Dense_{L-1}``);
* ``output``: every element network's output layer (``Dense_L``);
* ``networks``: both;
* ``reference_energies``: per-element energy offsets (eV).

Feature scaling (``feature_shift``, ``feature_scale``) is fitted to the data, never
trained.  Frozen leaves receive no update at all (not a zero update), so they stay
bit-identical.
"""

from __future__ import annotations

import jax
import optax

from mlip.model import Params
from mlip.training.config import OptimizerConfig


def trainable_labels(params: Params, n_hidden: int, freeze: tuple[str, ...] = ()) -> Params:
    """Pytree like ``params`` with ``"train"`` or ``"frozen"`` on every leaf."""
    output_layer = f"Dense_{n_hidden}"

    def label(path, _leaf) -> str:
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        group = keys[0]
        if group in ("feature_shift", "feature_scale"):
            return "frozen"
        if group == "reference_energies":
            return "frozen" if "reference_energies" in freeze else "train"
        layer = "output" if output_layer in keys else "hidden"
        return "frozen" if ("networks" in freeze or layer in freeze) else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(config: OptimizerConfig, steps_per_epoch: int, epochs: int):
    """Learning rate per step: linear warm-up then cosine decay, or constant (also
    the base rate of the plateau schedule)."""
    peak = config.learning_rate
    if config.schedule != "cosine":
        return optax.constant_schedule(peak)
    total = max(steps_per_epoch * epochs, 1)
    warmup = min(steps_per_epoch * config.warmup_epochs, total - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup > 0 else peak, peak_value=peak, warmup_steps=warmup,
        decay_steps=total, end_value=peak * config.final_lr_fraction,
    )


def make_optimizer(config: OptimizerConfig, labels: Params, steps_per_epoch: int, epochs: int):
    """optax transformation: clipping, Adam/AdamW on the schedule, optional
    reduce-on-plateau (fed the per-step loss, averaged over an epoch), applied to
    the ``"train"`` leaves only."""
    schedule = learning_rate_schedule(config, steps_per_epoch, epochs)
    parts = []
    if config.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    if config.name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=config.weight_decay))
    else:
        parts.append(optax.adam(schedule))
    if config.schedule == "plateau":
        parts.append(optax.contrib.reduce_on_plateau(
            factor=config.plateau_factor, patience=config.plateau_patience,
            accumulation_size=max(steps_per_epoch, 1), min_scale=1e-3,
        ))
    inner = optax.chain(*parts)
    return optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels)


def apply_updates(params: Params, updates: Params, labels: Params) -> Params:
    """``params + updates`` on trainable leaves; frozen leaves returned untouched."""
    return jax.tree_util.tree_map(
        lambda p, u, label: p if label == "frozen" else p + u.astype(p.dtype), params, updates, labels
    )
