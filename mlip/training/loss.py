"""Predictions from precomputed descriptors, and the weighted training loss.

Loss terms (each a mean over the batch, weighted per structure by its config_type
weight):

* energy: ``((E - E_ref) / n_atoms)^2`` in (eV/atom)^2;
* forces: ``(F - F_ref)^2`` per component, (eV/Å)^2;
* stress: ``((W - W_ref) / n_atoms)^2`` per Voigt component of the virial
  ``W = stress * V`` (eV/atom)^2, over structures that have a stress label.

``kind="huber"`` replaces each square by twice optax's Huber loss (equal to the
square below ``delta``, linear above), which tempers outliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mlip.model import ModelConfig, make_model_functions
from mlip.training.features import StructureArrays

VOIGT = (jnp.array([0, 1, 2, 1, 0, 0]), jnp.array([0, 1, 2, 2, 2, 1]))  # xx yy zz yz xz xy


class Predictions(NamedTuple):
    energy: jax.Array  # [S] eV
    forces: jax.Array  # [S, n, 3] eV/Å
    virial: jax.Array  # [S, 6] eV, Voigt order


def make_predictor(config: ModelConfig):
    """``predict(params, arrays: StructureArrays) -> Predictions`` from cached
    descriptors and Jacobians (see :mod:`mlip.training.features`)."""
    energies_from_features = make_model_functions(config).energies_from_features

    def one(params, descriptors, jacobian, r_ij, idx, species, element_rows):
        def total(features):
            return jnp.sum(energies_from_features(params, features, species, element_rows))

        energy, d_features = jax.value_and_grad(total)(descriptors)
        d_pairs = jnp.einsum("nmxf,nf->nmx", jacobian, d_features)  # dE/dr_ij
        n = species.shape[0]
        received = jax.ops.segment_sum(d_pairs.reshape(-1, 3), idx.reshape(-1), num_segments=n + 1)[:n]
        forces = jnp.sum(d_pairs, axis=1) - received
        virial = jnp.einsum("nma,nmb->ab", r_ij, d_pairs)
        virial = 0.5 * (virial + virial.T)
        return energy, forces, virial[VOIGT]

    def predict(params, arrays: StructureArrays) -> Predictions:
        energy, forces, virial = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0, 0))(
            params, arrays.descriptors, arrays.jacobian, arrays.r_ij, arrays.idx, arrays.species,
            arrays.element_rows,
        )
        return Predictions(energy, forces, virial)

    return predict


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; traced, so changing them does not recompile.

    Attributes:
        energy, forces, stress: term weights (dimensionless).
        groups: ``[G]`` multiplier per config_type index.
    """

    energy: jax.Array
    forces: jax.Array
    stress: jax.Array
    groups: jax.Array


def _penalty(kind: str, delta: float):
    if kind == "mse":
        return jnp.square
    if kind == "huber":
        return lambda x: 2.0 * optax.losses.huber_loss(x, delta=delta)
    raise ValueError(f"loss kind must be 'mse' or 'huber', got {kind!r}")


def reference_virial(arrays: StructureArrays) -> jax.Array:
    """Reference virial ``stress * V`` (eV), Voigt order, zero where no stress."""
    return arrays.stress * arrays.volume[:, None] * arrays.has_stress[:, None]


def make_loss(config: ModelConfig, kind: str = "mse", delta: float = 0.01):
    """``loss(params, arrays, valid, weights, sample_weights=None) -> (loss, metrics)``.

    ``valid`` ``[S]`` masks padding structures of a batch.  ``sample_weights``
    (``[n_samples]``, indexed by ``arrays.sample``), when given, multiplies each
    structure's loss terms (bootstrap resample counts of an ensemble member); the
    error metrics stay unweighted.  ``metrics`` holds sums over the batch
    (absolute and squared errors, counts) in eV/atom, eV/Å and eV/Å^3 that the
    caller accumulates into MAEs and RMSEs.
    """
    predict = make_predictor(config)
    penalty = _penalty(kind, delta)

    def loss(params, arrays: StructureArrays, valid, weights: LossWeights, sample_weights=None):
        prediction = predict(params, arrays)
        dtype = prediction.energy.dtype
        valid = valid.astype(dtype)
        n_atoms = jnp.maximum(arrays.n_atoms, 1).astype(dtype)
        w = valid * weights.groups[arrays.group]
        if sample_weights is not None:
            w = w * sample_weights[arrays.sample].astype(dtype)
        atom_mask = (arrays.species >= 0).astype(dtype) * valid[:, None]

        energy_error = (prediction.energy - arrays.energy) / n_atoms
        force_error = (prediction.forces - arrays.forces) * atom_mask[..., None]
        stress_mask = arrays.has_stress.astype(dtype) * valid
        virial_error = (prediction.virial - reference_virial(arrays)) / n_atoms[:, None] * stress_mask[:, None]

        n_structures = jnp.maximum(jnp.sum(valid), 1.0)
        n_components = jnp.maximum(3.0 * jnp.sum(atom_mask), 1.0)
        n_stress = jnp.maximum(6.0 * jnp.sum(stress_mask), 1.0)
        energy_term = jnp.sum(w * penalty(energy_error)) / n_structures
        force_term = jnp.sum(w[:, None, None] * penalty(force_error)) / n_components
        stress_term = jnp.sum(w[:, None] * penalty(virial_error)) / n_stress
        total = weights.energy * energy_term + weights.forces * force_term + weights.stress * stress_term

        volume = jnp.where(arrays.volume > 0, arrays.volume, 1.0)
        stress_error = virial_error * n_atoms[:, None] / volume[:, None]
        metrics = {
            "loss_sum": total * jnp.sum(valid),
            "structures": jnp.sum(valid),
            "energy_abs": jnp.sum(valid * jnp.abs(energy_error)),
            "energy_sq": jnp.sum(valid * energy_error**2),
            "force_abs": jnp.sum(jnp.abs(force_error)),
            "force_sq": jnp.sum(force_error**2),
            "force_count": 3.0 * jnp.sum(atom_mask),
            "stress_abs": jnp.sum(jnp.abs(stress_error)),
            "stress_sq": jnp.sum(stress_error**2),
            "stress_count": 6.0 * jnp.sum(stress_mask),
        }
        return total, metrics

    return loss


def summarize(metrics: dict) -> dict[str, float]:
    """MAE and RMSE from summed metrics: energy meV/atom, forces meV/Å, stress GPa."""
    from ase.units import GPa

    def ratio(key, count):
        return float(metrics[key]) / max(float(metrics[count]), 1.0)

    out = {
        "loss": ratio("loss_sum", "structures"),
        "energy_mae": 1e3 * ratio("energy_abs", "structures"),
        "energy_rmse": 1e3 * ratio("energy_sq", "structures") ** 0.5,
        "force_mae": 1e3 * ratio("force_abs", "force_count"),
        "force_rmse": 1e3 * ratio("force_sq", "force_count") ** 0.5,
    }
    if float(metrics["stress_count"]) > 0:
        out["stress_mae"] = ratio("stress_abs", "stress_count") / GPa
        out["stress_rmse"] = ratio("stress_sq", "stress_count") ** 0.5 / GPa
    return out
