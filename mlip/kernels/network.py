"""Per-element atomic neural networks (flax).

Each element has its own multilayer perceptron mapping the element's scaled
symmetry-function vector to an atomic energy contribution (eV).  Every hidden
layer has its own activation (one name for all of them, or one per layer, as
n2p2's ``global_activation_short``); the output layer is linear.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _gaussian(x):
    return jnp.exp(-0.5 * x * x)


def _reverse_logistic(x):
    return 1.0 - jax.nn.sigmoid(x)


def _negative_exp(x):
    return jnp.exp(-x)


def _square(x):
    return x * x


def _identity(x):
    return x


#: Activation functions by name.  Besides tanh, softplus and silu these are the
#: hidden-layer activations of n2p2 (its one-letter codes are in
#: :data:`mlip.n2p2.ACTIVATION_CODES`), with n2p2's definitions: ``gaussian`` is
#: exp(-x^2/2), ``revlogistic`` 1 - 1/(1 + e^-x), ``negexp`` e^-x, ``harmonic`` x^2.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "identity": _identity,
    "logistic": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "gaussian": _gaussian,
    "cos": jnp.cos,
    "revlogistic": _reverse_logistic,
    "negexp": _negative_exp,
    "harmonic": _square,
}


def activation_function(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; raises ``ValueError`` for unknown names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def layer_activations(activation: str | tuple[str, ...], n_layers: int) -> tuple[str, ...]:
    """One activation name per hidden layer: ``activation`` repeated if it is a single
    name, else checked to have ``n_layers`` known names.  Raises ``ValueError``."""
    names = (activation,) * n_layers if isinstance(activation, str) else tuple(activation)
    if len(names) != n_layers:
        raise ValueError(f"{len(names)} activations {list(names)} for {n_layers} hidden layers")
    for name in names:
        activation_function(name)
    return names


class AtomicNetwork(nn.Module):
    """Feed-forward network: features [n, F] -> atomic energies [n] (eV).

    Attributes:
        hidden_layers: widths of the hidden layers.
        activation: name of the hidden-layer activation (see :data:`ACTIVATIONS`),
            or a tuple of names, one per hidden layer; the output layer is linear.
    """

    hidden_layers: tuple[int, ...]
    activation: str | tuple[str, ...] = "tanh"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = features
        for width, name in zip(self.hidden_layers, layer_activations(self.activation, len(self.hidden_layers))):
            x = activation_function(name)(nn.Dense(width, param_dtype=features.dtype, dtype=features.dtype)(x))
        return nn.Dense(1, param_dtype=features.dtype, dtype=features.dtype)(x)[..., 0]
