"""Per-element atomic neural networks (flax).

Each element has its own multilayer perceptron mapping the element's scaled
symmetry-function vector to an atomic energy contribution (eV).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
}


def activation_function(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; raises ``ValueError`` for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class AtomicNetwork(nn.Module):
    """Feed-forward network: features [n, F] -> atomic energies [n] (eV).

    Attributes:
        hidden_layers: widths of the hidden layers.
        activation: name of the hidden-layer activation (tanh, softplus, silu);
            the output layer is linear.
    """

    hidden_layers: tuple[int, ...]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        act = activation_function(self.activation)
        x = features
        for width in self.hidden_layers:
            x = act(nn.Dense(width, param_dtype=features.dtype, dtype=features.dtype)(x))
        return nn.Dense(1, param_dtype=features.dtype, dtype=features.dtype)(x)[..., 0]
