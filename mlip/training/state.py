"""The state of a training run: the device pytree the train step updates, and the
host-side bookkeeping of epochs and the best parameters.

:class:`TrainState` plus :class:`Progress` is what a checkpoint stores and a resume
restores (into a template made by :meth:`TrainState.create`).  Batch order is a pure function of
``(seed, epoch)`` computed on the host (:meth:`FeatureDataset.batches`), and no
step draws random numbers, so the state holds no RNG key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from mlip.model import Params


@flax.struct.dataclass
class TrainState:
    """Parameters, optimiser state, update count and EMA weights of a training run.

    Attributes:
        step: ``int32`` scalar (``[K]`` for an ensemble of K members), number of
            optimiser updates applied (a skipped, non-finite update does not
            count), equal to the optax count the learning-rate schedule reads.
        params: the parameters being trained (the run's dtype; frozen leaves included).
        opt_state: optax state of the optimiser that updates ``params``.
        ema: exponential moving average of ``params`` after each update, or None
            when ``optimizer.ema_decay`` is 0.
    """

    step: jax.Array
    params: Params
    opt_state: Any
    ema: Params | None = None

    @classmethod
    def create(cls, params: Params, optimizer: optax.GradientTransformation, ema: bool,
               dtype: DTypeLike, members: int = 1) -> TrainState:
        """Fresh state at step 0 that owns its buffers: the train step donates them,
        so ``params`` (e.g. a model's float64 arrays) are copied and survive.

        Args:
            params: starting parameters (any float dtype).
            optimizer: the run's optax transformation (initialised here).
            ema: keep an exponential moving average of the parameters.
            dtype: the training dtype of every parameter leaf.
            members: ensemble size; above 1 every leaf of ``params`` has a leading
                member axis and so does every leaf of the state (``step`` is
                ``[members]``, the optimiser state is initialised per member).
        """
        params = jax.tree_util.tree_map(lambda x: jnp.array(x, dtype, copy=True), params)
        if members > 1:
            step, opt_state = jnp.zeros((members,), jnp.int32), jax.vmap(optimizer.init)(params)
        else:
            step, opt_state = jnp.zeros((), jnp.int32), optimizer.init(params)
        return cls(
            step=step,
            params=params,
            opt_state=opt_state,
            ema=jax.tree_util.tree_map(jnp.copy, params) if ema else None,
        )

    @property
    def eval_params(self) -> Params:
        """The parameters that are validated and selected: the EMA when kept, else ``params``."""
        return self.params if self.ema is None else self.ema


@dataclass
class Progress:
    """Host-side bookkeeping of a run, saved beside the :class:`TrainState`.

    Attributes:
        best_params: the selected parameters (:attr:`TrainState.eval_params`) of the
            epoch with the lowest score, copied out of the donated state.
        epoch: epochs completed.
        best_loss: that lowest score: the validation loss, or the training loss
            without a validation set (dimensionless; inf before the first epoch);
            for an ensemble the mean over its members, so all members share the
            selected epoch.
        best_epoch: 1-based epoch of ``best_loss`` (-1 before the first epoch).
        bad_epochs: epochs since the last improvement (early stopping's counter).
        history: one record per completed epoch (losses, MAEs, seconds).
    """

    best_params: Params
    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, params: Params) -> Progress:
        """No epoch done yet; ``best_params`` a copy of ``params`` (which a train step may donate)."""
        return cls(best_params=jax.tree_util.tree_map(jnp.copy, params))

    def add(self, record: dict, params: Params) -> None:
        """Count the epoch ``record`` describes; keep ``params`` (copied) if its score is the best so far."""
        self.history.append(record)
        score = record.get("val_loss", record["train_loss"])
        if score < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = score, record["epoch"], 0
            self.best_params = jax.tree_util.tree_map(jnp.copy, params)
        else:
            self.bad_epochs += 1
        self.epoch = record["epoch"]

    def meta(self) -> dict:
        """Everything but ``best_params``, JSON-serialisable."""
        return {"epoch": self.epoch, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "history": self.history}
