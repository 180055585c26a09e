"""The Behler-Parrinello model: configuration, parameters and pure energy functions.

Total energy (eV)::

    E = sum_i [ NN_{e_i}( (G_i - shift_{e_i}) * scale_{e_i} ) + E_ref[e_i] ]

with ``G_i`` the symmetry functions of atom ``i`` (:mod:`mlip.kernels.symmetry_functions`).
Forces are ``-dE/dR`` (eV/Å) and the stress is ``(1/V) dE/d(strain)`` (eV/Å^3, ASE sign
convention), both from one ``jax.grad`` of the total energy, so the forces sum to zero
by construction.

The pure functions here take the padded arrays produced by the calculator or the MD
driver: ``species`` holds element indices with ``-1`` for padding rows, and the
neighbour list is a :class:`~mlip.kernels.neighbor_list.NeighborList`.

Modules: :mod:`~mlip.model.config` (architecture, parameter trees),
:mod:`~mlip.model.results` (what the functions return, the training range),
:mod:`~mlip.model.functions` (the pure energy functions), :mod:`~mlip.model.fitted`
(a fitted model, ensembles).  Every public name is importable from ``mlip.model``.
"""

from mlip.model.config import ModelConfig, Params, cast_params, init_params, stack_params, virial_to_stress
from mlip.model.fitted import Model, stack_models
from mlip.model.functions import (
    ModelFunctions,
    chunked_descriptors,
    make_model_functions,
    neighbor_species,
    pair_vectors,
)
from mlip.model.results import (
    AnnotatedResults,
    EnergyResults,
    Extrapolation,
    FeatureBounds,
    FeatureRange,
    MemberResults,
    feature_bounds,
)

__all__ = [
    "AnnotatedResults", "EnergyResults", "Extrapolation", "FeatureBounds", "FeatureRange", "MemberResults",
    "Model", "ModelConfig", "ModelFunctions", "Params", "cast_params", "chunked_descriptors", "feature_bounds",
    "init_params", "make_model_functions", "neighbor_species", "pair_vectors", "stack_models", "stack_params",
    "virial_to_stress",
]
