"""Extrapolation warnings: when a structure's symmetry functions leave the training range.

A model that knows its training range (:attr:`mlip.model.Model.feature_range`:
G_min and G_max of every raw symmetry function over the training set, or an
n2p2 potential's scaling.data) flags, per atom, how many functions lie outside
it and by how much (:class:`mlip.model.Extrapolation`, computed inside the
compiled energy function from the descriptors it already has).  This module
holds what consumers share on top of that: the policy names (n2p2/LAMMPS
``pair_style hdnnp`` users know them as ``showew``/``maxew``), the warning and
error types, and the one-line summary they print.
"""

from __future__ import annotations

import numpy as np

from mlip.model import Model

#: Policies of the calculator's ``extrapolation`` option.
POLICIES = ("auto", "warn", "raise", "off")


class ExtrapolationWarning(UserWarning):
    """A structure has symmetry functions outside the model's training range."""


class ExtrapolationError(ValueError):
    """Raised instead of :class:`ExtrapolationWarning` under the ``"raise"`` policy."""


def resolve_policy(model: Model, policy: str, option: str = "extrapolation") -> str:
    """``"warn"``, ``"raise"`` or ``"off"`` for ``policy``: ``"auto"`` warns when the
    model knows its training range and is off otherwise.

    Raises:
        ValueError: an unknown policy, or ``"warn"``/``"raise"`` for a model without
            a stored feature range (the message names ``option``).
    """
    if policy not in POLICIES:
        raise ValueError(f"{option} must be one of {list(POLICIES)}, got {policy!r}")
    if policy == "auto":
        return "warn" if model.feature_range is not None else "off"
    if policy != "off" and model.feature_range is None:
        raise ValueError(
            f"{option}={policy!r} needs a model with a stored feature range (the training set's G_min/G_max): "
            "train it with mlip train, read an n2p2 potential with its scaling.data, or set "
            "mlip.training.scaling.with_feature_range"
        )
    return policy


def summary(count: np.ndarray, excursion: np.ndarray) -> str | None:
    """One line about the atoms that extrapolate (``count`` and ``excursion`` per
    atom, real atoms only), or None when none does."""
    count = np.asarray(count)
    flagged = np.flatnonzero(count > 0)
    if len(flagged) == 0:
        return None
    worst = int(np.argmax(excursion))
    return (f"{len(flagged)} of {len(count)} atoms extrapolate: {int(count.sum())} symmetry function values "
            f"outside the training range, largest excursion {float(excursion[worst]):.3g} x the range "
            f"(atom {worst}, {int(count[worst])} functions)")
