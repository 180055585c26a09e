"""Feature scaling and reference energies fitted to a data set, stored in the model.

Scaling is an affine map per element, ``x = (G - shift) * scale``, kept in the
model parameters so that a saved model carries it:

* ``"standard"``: shift = mean, scale = 1 / standard deviation (n2p2's
  ``center_symmetry_functions`` + ``scale_symmetry_functions_sigma``);
* ``"minmax"``: maps [G_min, G_max] onto [-1, 1] (n2p2's ``scale_symmetry_functions``
  with ``scale_min_short -1``, ``scale_max_short 1``).

Constant features (zero spread) keep scale 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from mlip.batch import compute_descriptors
from mlip.model import Model
from mlip.precision import with_float64


def fit_feature_scaling(model: Model, structures: Iterable[Atoms], method: str = "standard") -> Model:
    """A copy of ``model`` whose feature scaling is fitted to ``structures``."""
    return scaling_from_features(model, compute_descriptors(model, structures), method)


@with_float64
def scaling_from_features(model: Model, features: dict[str, np.ndarray], method: str = "standard") -> Model:
    """A copy of ``model`` with feature scaling fitted to precomputed descriptors
    ``{element: [n_atoms_of_element, n_features(element)]}`` (raw, before scaling),
    and their range recorded as the model's feature range (:func:`with_feature_range`)."""
    if method not in ("standard", "minmax"):
        raise ValueError(f"method must be 'standard' or 'minmax', got {method!r}")
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    for element, values in features.items():
        if len(values) == 0:
            continue  # element absent from the data: keep the identity scaling
        if method == "standard":
            shift, spread = values.mean(axis=0), values.std(axis=0)
        else:
            low, high = values.min(axis=0), values.max(axis=0)
            shift, spread = 0.5 * (low + high), 0.5 * (high - low)
        scale = np.where(spread > 1e-12, 1.0 / np.where(spread > 1e-12, spread, 1.0), 1.0)
        params["feature_shift"][element] = jnp.asarray(shift)
        params["feature_scale"][element] = jnp.asarray(scale)
    return with_feature_range(model.with_params(params), features)


def with_feature_range(model: Model, features: dict[str, np.ndarray]) -> Model:
    """A copy of ``model`` whose feature range (``[n_features, 2]`` G_min, G_max per
    element, :attr:`~mlip.model.Model.feature_range`) is that of the raw descriptors
    ``features`` (``{element: [n_atoms_of_element, n_features]}``, e.g. of the training
    set); elements without atoms in ``features`` keep no range (never flagged)."""
    ranges = {element: np.stack([values.min(axis=0), values.max(axis=0)], axis=1)
              for element, values in features.items() if len(values)}
    return Model(model.config, model.params, ranges or None)


@with_float64
def fit_reference_energies(model: Model, structures: Sequence[Atoms], energies: Sequence[float]) -> Model:
    """A copy of ``model`` with per-element reference energies (eV) from a least-squares
    fit ``E ≈ sum_e n_e E_ref[e]`` of the given total energies (eV)."""
    counts = np.array(
        [[atoms.get_chemical_symbols().count(e) for e in model.elements] for atoms in structures], dtype=float
    )
    model.species_indices({s for atoms in structures for s in atoms.get_chemical_symbols()})
    solution, *_ = np.linalg.lstsq(counts, np.asarray(energies, dtype=float), rcond=None)
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    for element, value in zip(model.elements, solution):
        params["reference_energies"][element] = jnp.asarray(value)
    return model.with_params(params)
