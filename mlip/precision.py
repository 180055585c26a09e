"""Float64 for mlip's own computations, without touching the host's JAX settings.

JAX computes in float32 unless ``jax_enable_x64`` is on, and that flag is
process-wide.  mlip does not flip it on import (a library must not change its
host's configuration).  Instead every mlip entry point that builds or evaluates
float64 arrays (model creation and files, feature scaling, the ASE calculator,
training, data featurisation, evaluation) runs inside ``jax.enable_x64(True)``,
a thread-local scope that ends when the call returns; the arrays it hands back
keep their dtype.

The pure low-level functions (``mlip.model.make_model_functions``,
``mlip.kernels.*``) follow the caller's setting: call them inside
``with jax.enable_x64(True):`` (or turn the flag on globally) for float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import jax

F = TypeVar("F", bound=Callable)


DTYPES = {"float64": jax.numpy.float64, "float32": jax.numpy.float32}
"""The floating-point types a run can ask for by name (``dtype="float32"``)."""


def float64_scope():
    """Context manager: 64-bit JAX types inside, the caller's setting after."""
    return jax.enable_x64(True)


def with_float64(function: F) -> F:
    """Decorator: run ``function`` inside :func:`float64_scope`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with float64_scope():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
