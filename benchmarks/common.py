"""Helpers shared by the benchmark scripts (run as ``python3 benchmarks/NAME.py``,
which puts this folder on ``sys.path``)."""

from __future__ import annotations

from mlip import Model


def model_or_random_feature_si(path: str | None) -> Model:
    """The model file at ``path``, or, without one,
    :func:`mlip.training.linear.random_feature_si` (a stable Si potential made in
    seconds from Stillinger-Weber data, nothing downloaded)."""
    if path:
        from mlip.io import load_model

        return load_model(path)
    from mlip.training.linear import random_feature_si

    return random_feature_si()
