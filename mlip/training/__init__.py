"""Training: data, descriptor cache, loss, optimiser, trainer, evaluation.

Heavy pieces are imported from their modules (``mlip.training.trainer`` etc.);
the names here are the small fitting utilities used on their own.
"""

from mlip.training.scaling import (
    compute_descriptors,
    fit_feature_scaling,
    fit_reference_energies,
    scaling_from_features,
)

__all__ = ["compute_descriptors", "fit_feature_scaling", "fit_reference_energies", "scaling_from_features"]
