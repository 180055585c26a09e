"""A model's architecture (:class:`ModelConfig`) and its parameter trees: random
initialisation, ensemble stacking, precision casts; the virial-to-stress conversion."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlip.kernels.network import AtomicNetwork, layer_activations
from mlip.kernels.symmetry_functions import (
    SymmetryFunctionSet,
)
from mlip.precision import with_float64

Params = dict[str, Any]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a model (everything except the fitted numbers).

    Attributes:
        symmetry_functions: descriptor definition, which also fixes the elements.
        hidden_layers: hidden-layer widths of every element's network.
        activation: hidden activation (``tanh``, ``softplus``, ``silu`` or another
            name of :data:`mlip.kernels.network.ACTIVATIONS`), or a tuple with one
            name per hidden layer (as n2p2 allows); a tuple of equal names is
            stored as that one name, so such configs serialise as before.
        r_min: shortest interatomic distance the model accepts, Å; closer atoms
            are rejected as outside the trained range.
        ensemble: number of members of an ensemble model (1: a single model).
            Members share the descriptors and the architecture; every parameter
            array has a leading member axis, and the model's energy is the
            members' mean (:func:`make_model_functions`).
    """

    symmetry_functions: SymmetryFunctionSet
    hidden_layers: tuple[int, ...] = (25, 25)
    activation: str | tuple[str, ...] = "tanh"
    r_min: float = 0.5
    ensemble: int = 1

    def __post_init__(self):
        object.__setattr__(self, "hidden_layers", tuple(int(w) for w in self.hidden_layers))
        if any(w < 1 for w in self.hidden_layers):
            raise ValueError(f"hidden layer widths must be positive, got {self.hidden_layers}")
        if int(self.ensemble) != self.ensemble or self.ensemble < 1:
            raise ValueError(f"ensemble must be a positive number of members, got {self.ensemble}")
        object.__setattr__(self, "ensemble", int(self.ensemble))
        names = layer_activations(self.activation, len(self.hidden_layers))  # validates the names
        if not isinstance(self.activation, str):
            object.__setattr__(self, "activation", names[0] if len(set(names)) == 1 else names)

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of every hidden layer."""
        return layer_activations(self.activation, len(self.hidden_layers))

    @property
    def elements(self) -> tuple[str, ...]:
        return self.symmetry_functions.elements

    @property
    def cutoff(self) -> float:
        """Interaction range of the model, Å."""
        return self.symmetry_functions.max_cutoff

    @property
    def member(self) -> "ModelConfig":
        """The configuration of one member (``ensemble = 1``)."""
        return dataclasses.replace(self, ensemble=1)

    def to_dict(self) -> dict:
        data = {
            "symmetry_functions": self.symmetry_functions.to_dict(),
            "hidden_layers": list(self.hidden_layers),
            "activation": self.activation if isinstance(self.activation, str) else list(self.activation),
            "r_min": self.r_min,
        }
        if self.ensemble > 1:  # single models keep the layout of files written before ensembles
            data["ensemble"] = self.ensemble
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return cls(
            symmetry_functions=SymmetryFunctionSet.from_dict(data["symmetry_functions"]),
            hidden_layers=tuple(data["hidden_layers"]),
            activation=data["activation"] if isinstance(data["activation"], str) else tuple(data["activation"]),
            r_min=float(data["r_min"]),
            ensemble=int(data.get("ensemble", 1)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@with_float64
def init_params(config: ModelConfig, seed: int = 0, dtype=jnp.float64) -> Params:
    """Random network weights, identity feature scaling and zero reference energies;
    for an ensemble, members initialised with seeds ``seed, seed + 1, ...`` stacked
    on a leading axis."""
    if config.ensemble > 1:
        return stack_params([init_params(config.member, seed + k, dtype) for k in range(config.ensemble)])
    network = AtomicNetwork(config.hidden_layers, config.activation)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(config.elements))
    params: Params = {"networks": {}, "feature_shift": {}, "feature_scale": {}, "reference_energies": {}}
    for key, element in zip(keys, config.elements):
        n_features = config.symmetry_functions.n_features(element)
        params["networks"][element] = network.init(key, jnp.zeros((1, n_features), dtype=dtype))
        params["feature_shift"][element] = jnp.zeros(n_features, dtype=dtype)
        params["feature_scale"][element] = jnp.ones(n_features, dtype=dtype)
        params["reference_energies"][element] = jnp.zeros((), dtype=dtype)
    return params


def stack_params(members: list[Params]) -> Params:
    """Member parameters stacked on a new leading axis (the ensemble layout)."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)


def cast_params(params: Params, dtype) -> Params:
    """``params`` with every floating-point array cast to ``dtype`` (e.g. for float32)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)


def virial_to_stress(virial, cell) -> np.ndarray:
    """Stress in ASE's Voigt order (xx yy zz yz xz xy), eV/Å^3, from the virial
    ``dE/d(strain)`` (eV, 3x3) of a periodic cell (rows are lattice vectors, Å)."""
    virial = np.asarray(virial, dtype=np.float64)
    return virial.reshape(virial.shape[:-2] + (9,))[..., [0, 4, 8, 5, 2, 1]] / abs(np.linalg.det(cell))
