"""The descriptor kernel of a symmetry-function set: the compiled one
(:mod:`mlip.kernels.native`) or the JAX one (:mod:`mlip.kernels.descriptors_jax`)."""

from __future__ import annotations

import warnings

from mlip.kernels.descriptors_jax import make_jax_kernel
from mlip.kernels.sf_definitions import SymmetryFunctionSet

_NATIVE_IMPORT_ERROR: ImportError | None = None
try:
    from mlip.kernels import native
except ImportError as error:  # a JAX without the extension APIs the compiled kernel uses
    native, _NATIVE_IMPORT_ERROR = None, error

KERNEL_BACKENDS = ("auto", "native", "jax")


def make_descriptor_kernel(sf_set: SymmetryFunctionSet, backend: str = "auto"):
    """Build ``kernel(r_ij, mask, neighbor_species) -> G`` for ``sf_set``.

    Args of the returned pure function:
        r_ij: ``[n, M, 3]`` vectors from each atom to its neighbours, Å.
        mask: ``[n, M]`` True for real neighbours.
        neighbor_species: ``[n, M]`` int index into ``sf_set.elements``.

    Returns ``[n, sf_set.n_union]`` values of every distinct environment function;
    pick an element's features with :meth:`SymmetryFunctionSet.feature_columns`.

    ``backend``: ``"native"`` is the compiled CPU kernel with analytic derivatives
    (:mod:`mlip.kernels.native`), ``"jax"`` the JAX kernel
    (:mod:`mlip.kernels.descriptors_jax`: differentiable to any order, the
    reference the native one is tested against), ``"auto"`` the native one where
    it is available (``MLIP_NATIVE_KERNELS`` not off, a C++ compiler found), else
    the JAX one.  Both give the same values.
    """
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"unknown descriptor backend {backend!r}; choose one of {KERNEL_BACKENDS}")
    if backend != "jax":
        if native is None:
            if backend == "native":
                raise _NATIVE_IMPORT_ERROR
            warnings.warn(f"mlip's compiled descriptor kernel is unavailable, using the JAX kernel: "
                          f"{_NATIVE_IMPORT_ERROR}", RuntimeWarning, stacklevel=2)
            return make_jax_kernel(sf_set)
        if backend == "native" or native.available():
            if backend == "native" and not native.load():
                raise native.NativeKernelError("the compiled descriptor kernel could not be built (see the warning)")
            return native.make_native_kernel(sf_set)
    return make_jax_kernel(sf_set)
