"""Behler-Parrinello atom-centred symmetry functions with n2p2's conventions:
the public names in one place.

* :mod:`mlip.kernels.sf_definitions`: the functions (n2p2 types 2, 3, 9), sets of
  them, their ``symfunction_short`` lines and default parameter grids;
* :mod:`mlip.kernels.descriptors`: :func:`make_descriptor_kernel`, the compiled
  kernel (:mod:`mlip.kernels.native`) or the JAX one
  (:mod:`mlip.kernels.descriptors_jax`);
* :mod:`mlip.kernels.array_ops`: column selection and chunked evaluation.
"""

from __future__ import annotations

from mlip.kernels.array_ops import chunked, map_in_chunks, select_columns
from mlip.kernels.descriptors import KERNEL_BACKENDS, make_descriptor_kernel
from mlip.kernels.sf_definitions import (
    ANGULAR_TYPES,
    RADIAL_TYPES,
    SymmetryFunction,
    SymmetryFunctionSet,
    default_symmetry_functions,
)

__all__ = [
    "ANGULAR_TYPES", "KERNEL_BACKENDS", "RADIAL_TYPES", "SymmetryFunction", "SymmetryFunctionSet", "chunked",
    "default_symmetry_functions", "make_descriptor_kernel", "map_in_chunks", "select_columns",
]
