"""What the energy functions return, and the training range they compare with:
energy/forces/virial, per-atom extrapolation flags, ensemble members' values."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlip.model.config import ModelConfig


class Extrapolation(NamedTuple):
    """How far each atom's symmetry functions lie outside the training range
    ``[G_min, G_max]`` (n2p2's extrapolation warnings, per atom).

    ``count``: how many of the atom's functions are outside; ``excursion``: the
    largest distance outside, in units of that function's range
    ``G_max - G_min`` (0 inside).  Padding rows have 0 and 0.  Values within
    rounding of a bound (``8 eps (|G_min| + |G_max|)`` of the working precision)
    count as inside, so the training structures themselves never extrapolate.
    """

    count: jax.Array  # [N] int32
    excursion: jax.Array  # [N], dimensionless


class EnergyResults(NamedTuple):
    """Output of :func:`make_model_functions`'s ``energy_forces_virial``."""

    energy: jax.Array  # eV
    energies: jax.Array  # [N] eV, zero on padding rows
    forces: jax.Array  # [N, 3] eV/Å
    virial: jax.Array  # [3, 3] eV: dE/d(strain); stress = virial / volume


class AnnotatedResults(NamedTuple):
    """Output of :func:`make_model_functions`'s ``annotated``: the results and what
    the same evaluation tells about them."""

    results: EnergyResults
    extrapolation: Extrapolation | None  # when feature bounds are given
    member_energies: jax.Array  # [K] eV, every ensemble member's energy (K = 1 for a single model)


class MemberResults(NamedTuple):
    """Output of :func:`make_model_functions`'s ``member_results``: per member ``k``."""

    energy: jax.Array  # [K] eV
    energies: jax.Array  # [K, N] eV
    forces: jax.Array  # [K, N, 3] eV/Å
    virial: jax.Array  # [K, 3, 3] eV
    extrapolation: Extrapolation | None = None


FeatureRange = dict[str, np.ndarray]  # per element [n_features(element), 2]: (G_min, G_max), raw descriptor units
FeatureBounds = tuple[tuple[jax.Array, jax.Array], ...]  # per element (G_min [F_e], G_max [F_e])


def feature_bounds(config: ModelConfig, feature_range: FeatureRange | None, dtype=jnp.float64) -> FeatureBounds:
    """``feature_range`` as the ``bounds`` argument of ``energy_forces_virial``:
    per element of ``config`` (in order) ``(G_min, G_max)`` arrays; an element
    without a range gets ``(-inf, inf)`` (never extrapolates)."""
    bounds = []
    for element in config.elements:
        n_features = config.symmetry_functions.n_features(element)
        if feature_range is not None and element in feature_range:
            low, high = np.asarray(feature_range[element], dtype=np.float64).T
        else:
            low, high = np.full(n_features, -np.inf), np.full(n_features, np.inf)
        bounds.append((jnp.asarray(low, dtype), jnp.asarray(high, dtype)))
    return tuple(bounds)
