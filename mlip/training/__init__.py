"""Training utilities: feature standardisation and per-element reference energies."""

from mlip.training.scaling import compute_descriptors, fit_feature_scaling, fit_reference_energies

__all__ = ["compute_descriptors", "fit_feature_scaling", "fit_reference_energies"]
