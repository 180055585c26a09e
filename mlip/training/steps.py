"""The jitted steps: ``train_step(state, batch) -> (state, metrics)`` and ``eval_step``.

A batch is ``(bucket, index, weights, eos_terms)``: the device arrays of one shape
bucket, the ``[B]`` rows of it to take (``-1`` pads to a fixed batch size), the
epoch's loss weights and the equation-of-state terms.  The steps are jitted once,
so each compiles once per bucket shape.  ``train_step`` donates the state it is
given; its metrics are per-batch sums (see :func:`mlip.training.loss.make_loss`)
that the caller adds up on the device (:func:`accumulate`) and reads once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike

from mlip.model import ModelConfig, Params
from mlip.training.config import TrainConfig, weight_at
from mlip.training.eos import make_eos_functions
from mlip.training.features import FeatureDataset
from mlip.training.loss import LossWeights, make_loss, summarize
from mlip.training.optimizer import apply_updates
from mlip.training.state import TrainState


def mesh_sharding() -> tuple[jax.sharding.NamedSharding | None, int]:
    """``(sharding, n_devices)``: batches split along their first axis over every
    device, or ``(None, 1)`` on a single device."""
    devices = jax.devices()
    if len(devices) < 2:
        return None, 1
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")), len(devices)


def _take(sharding):
    def batch(bucket, index):
        arrays = bucket.take(jnp.maximum(index, 0))
        if sharding is not None:
            arrays = jax.lax.with_sharding_constraint(arrays, sharding)
        return arrays, index >= 0

    return batch


def make_train_step(model_config: ModelConfig, config: TrainConfig, optimizer: optax.GradientTransformation,
                    labels: Params, sharding=None, members: int = 1) -> Callable:
    """Jitted ``train_step(state, bucket, index, weights, eos_terms, sample_weights=None)
    -> (state, metrics)``.

    One optimiser update of the loss plus the EOS penalties.  A non-finite loss
    or gradient leaves ``params``, ``opt_state`` and ``step`` as they were and sets
    ``metrics["nonfinite"]`` to 1.  The EMA, when the state keeps one, follows the
    (kept) parameters with ``optimizer.ema_decay``.  ``state`` is donated.

    ``model_config`` is the configuration of one member.  With ``members`` > 1 the
    single-member step is ``vmap``-ed over a stacked :class:`TrainState` (every
    leaf with a leading member axis) and the optional ``sample_weights``
    ``[members, n_train]`` (bootstrap counts), while the batch, the weights and the
    EOS terms are shared: one compilation per bucket shape trains every member,
    and every metric gets a leading member axis.
    """
    loss_fn = make_loss(model_config, config.loss.kind, config.loss.huber_delta)
    _, eos_penalty = make_eos_functions(model_config)
    ema_decay = config.optimizer.ema_decay
    plateau = config.optimizer.schedule == "plateau"
    batch = _take(sharding)

    def train_step(state: TrainState, bucket, index, weights: LossWeights, eos_terms, sample_weights=None):
        arrays, valid = batch(bucket, index)

        def objective(params):
            value, metrics = loss_fn(params, arrays, valid, weights, sample_weights)
            for term in eos_terms:
                value = value + eos_penalty(params, term)
            return value, metrics

        (value, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        extra = {"value": value} if plateau else {}
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
        params = apply_updates(state.params, updates, labels)
        finite = jnp.isfinite(value) & jnp.all(
            jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params = keep(params, state.params)
        ema = state.ema
        if ema is not None:
            ema = jax.tree_util.tree_map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
        metrics["nonfinite"] = (~finite).astype(value.dtype)
        new_state = TrainState(step=jnp.where(finite, state.step + 1, state.step), params=params,
                               opt_state=keep(opt_state, state.opt_state), ema=ema)
        return new_state, metrics

    if members > 1:
        train_step = jax.vmap(train_step, in_axes=(0, None, None, None, None, 0))
    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(model_config: ModelConfig, config: TrainConfig, sharding=None, members: int = 1) -> Callable:
    """Jitted ``eval_step(params, bucket, index, weights) -> metrics`` (sums, as
    ``train_step``'s, without an update); with ``members`` > 1, ``vmap``-ed over
    stacked member parameters (``model_config`` is one member's), metrics ``[members]``."""
    loss_fn = make_loss(model_config, config.loss.kind, config.loss.huber_delta)
    batch = _take(sharding)

    def eval_step(params, bucket, index, weights: LossWeights):
        arrays, valid = batch(bucket, index)
        return loss_fn(params, arrays, valid, weights)[1]

    if members > 1:
        eval_step = jax.vmap(eval_step, in_axes=(0, None, None, None))
    return jax.jit(eval_step)


def accumulate(total: dict | None, metrics: dict) -> dict:
    """``total + metrics`` leaf by leaf, on the device (``total`` None: the first batch)."""
    return metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)


def loss_weights(config: TrainConfig, epoch: int, groups: tuple[str, ...], dtype: DTypeLike) -> LossWeights:
    """The loss-term weights of ``epoch`` (0-based; ramps from the config) and the
    per-config_type multipliers in the order of ``groups``."""
    epochs = config.training.epochs
    group_weights = np.array([config.loss.config_type_weights.get(g, 1.0) for g in groups], dtype=np.float64)
    return LossWeights(
        jnp.asarray(weight_at(config.loss.energy_weight, epoch, epochs), dtype),
        jnp.asarray(weight_at(config.loss.forces_weight, epoch, epochs), dtype),
        jnp.asarray(weight_at(config.loss.stress_weight, epoch, epochs), dtype),
        jnp.asarray(group_weights, dtype),
    )


def evaluate_dataset(eval_step: Callable, params: Params, dataset: FeatureDataset, weights: LossWeights,
                     batch_atoms: int, multiple: int = 1) -> dict[str, float]:
    """Loss and MAE/RMSE (meV/atom, meV/Å, GPa) of ``params`` on a featurised set
    (for an ensemble's ``eval_step``: the members' means, see :func:`summarize_members`)."""
    total = None
    for bucket, index in dataset.batches(batch_atoms, multiple=multiple):
        total = accumulate(total, eval_step(params, dataset.buckets[bucket], index, weights))
    return summarize_members(jax.device_get(total))


def summarize_members(metrics: dict) -> dict[str, float]:
    """:func:`~mlip.training.loss.summarize` of summed metrics; when they carry a
    leading member axis (an ensemble), every value is the mean over the members of
    their own summaries, and ``loss_members`` lists each member's loss."""
    if np.ndim(metrics["loss_sum"]) == 0:
        return summarize(metrics)
    members = [summarize({key: value[k] for key, value in metrics.items()}) for k in range(len(metrics["loss_sum"]))]
    out = {key: float(np.mean([m[key] for m in members])) for key in members[0]}
    out["loss_members"] = [m["loss"] for m in members]
    return out
