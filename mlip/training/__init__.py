"""Training: data, descriptor cache, loss, optimiser, trainer, evaluation.

Heavy pieces are imported from their modules (``mlip.training.trainer`` etc.);
the names here are the small fitting utilities used on their own.  (Descriptors
of a data set come from the batch path, :func:`mlip.batch.compute_descriptors`.)
"""

from mlip.training.scaling import fit_feature_scaling, fit_reference_energies, scaling_from_features

__all__ = ["fit_feature_scaling", "fit_reference_energies", "scaling_from_features"]
