"""Compiled CPU descriptor kernel: symmetry functions with analytic derivatives.

``native_descriptors.cc`` computes the same ``[n, n_union]`` values as the JAX
kernel (:func:`mlip.kernels.descriptors_jax.make_jax_kernel`; n2p2
types 2, 3 and 9, every cutoff type), visiting each unordered neighbour pair once
with everything a pair needs shared by all functions, and with hand-written
derivatives instead of autodiff through the moment expansion or the type-3
offset scan.  It is an XLA FFI custom call, so it runs inside ``jax.jit``,
``lax.scan`` (the MD loop) and ``jax.checkpoint`` like any other operation.

Autodiff: three primitives, values ``G(r)``, the JVP ``J(r) t`` and the VJP
``J(r)^T c``, each the transpose of the other two's linear part, so forward and
reverse mode and reverse-over-reverse (training through forces) work; second
derivatives in ``r`` (e.g. :mod:`mlip.training.eos`'s curvature) fall back to
autodiff of the JAX kernel.  ``vmap`` folds batch axes into the atom axis, except
a VJP whose cotangent alone is batched (an ensemble's K members' dE_k/dG on shared
descriptors): that binds a fourth primitive, the multi-cotangent VJP
(``[K, n, F] -> [K, n, M, 3]``, the same custom call), which computes each pair's
geometry, cutoffs, exponentials and angular powers once for all K; from
:data:`JACOBIAN_MEMBERS` cotangents on, its type-9 part builds each atom's Jacobian
once (about two single VJPs) and contracts it with every cotangent.  On
platforms other than the CPU the primitives lower to the JAX kernel.

The source is compiled on first use with the system C++ compiler (``$CXX`` or
``c++``, about 15 s) into ``$XDG_CACHE_HOME/mlip/native`` (``~/.cache/mlip/native``),
keyed by the source and its headers (``native/*.h``), compiler, flags, CPU and
jaxlib, so later processes load it at once.  Set ``MLIP_NATIVE_KERNELS=0`` to use
the JAX kernel; where no compiler works the JAX kernel is used after one warning.
Units: Å, Å^-2.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from mlip.files import atomic_path
from mlip.kernels.cutoff import CUTOFF_TYPES
from mlip.kernels.descriptors_jax import make_jax_kernel

ENVIRONMENT_VARIABLE = "MLIP_NATIVE_KERNELS"
SOURCE = Path(__file__).with_name("native_descriptors.cc")
#: Folder of the headers the source includes as ``native/NAME.h`` (the maths, shared
#: with other hosts of the kernel); it lies next to the source.
HEADERS = SOURCE.with_name("native")
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=256", "-fopenmp-simd", "-fno-math-errno",
         "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC")
_TARGETS = {"values": "MlipSfValues", "vjp": "MlipSfVjp", "jvp": "MlipSfJvp"}
TABLE_WIDTH = 9  # columns of a function-table row, as kTableWidth in native/table.h
#: From this many cotangents on, the multi-cotangent VJP's type-9 part builds each atom's
#: Jacobian once and contracts it with every cotangent (kJacobianMembers in native/angular_wide.h).
JACOBIAN_MEMBERS = 4


class NativeKernelError(RuntimeError):
    """The compiled kernel could not be built or loaded."""


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
        model = next((line for line in text.splitlines() if line.startswith("model name")), "")
    except OSError:
        flags = model = ""
    return platform.machine() + model + flags


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlip/native`` or ``~/.cache/mlip/native``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlip" / "native"


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        raise NativeKernelError("no C++ compiler found (set CXX, or install g++)")
    return compiler


def _source_files() -> list[Path]:
    """The source and every header under :data:`HEADERS`, in a fixed order."""
    return [SOURCE, *sorted(HEADERS.glob("*.h"))]


def build(folder: Path | None = None) -> Path:
    """Compile ``native_descriptors.cc`` (if not cached) and return the library path.

    The cache key covers the source and every header (names and contents), the
    compiler, the flags, the CPU and jaxlib, so an edited header rebuilds.
    """
    compiler = _compiler()
    include = jax.ffi.include_dir()
    key = hashlib.sha256()
    for path in _source_files():
        key.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in (compiler.encode(), " ".join(FLAGS).encode(), _cpu_signature().encode(),
                 str(include).encode(), jax.__version__.encode()):
        key.update(part)
    folder = Path(folder) if folder is not None else cache_dir()
    library = folder / f"mlip_native_{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(library) as output:  # compile aside, then rename: safe for parallel builds
        command = [compiler, *FLAGS, f"-I{include}", f"-I{HEADERS.parent}", str(SOURCE), "-o", str(output)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise NativeKernelError(f"compiling {SOURCE.name} failed:\n{' '.join(command)}\n{result.stderr[-4000:]}")
    return library


def requested() -> bool:
    """False when ``MLIP_NATIVE_KERNELS`` is ``0``, ``off``, ``no`` or ``false``."""
    return os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() not in {"0", "off", "no", "false"}


@functools.cache
def load() -> bool:
    """Build, load and register the kernel once per process; False (after one
    warning) when that fails."""
    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(f"mlip_sf_{target}", jax.ffi.pycapsule(getattr(library, symbol)),
                                        platform="cpu")
    except (NativeKernelError, OSError) as error:
        warnings.warn(f"mlip's compiled descriptor kernel is unavailable, using the JAX kernel: {error}",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


def available() -> bool:
    """True when the compiled kernel is requested and loads."""
    return requested() and load()


# --------------------------------------------------------------------------- primitives


def function_table(sf_set) -> tuple[float, ...]:
    """One row per union column of ``sf_set`` (see ``native_descriptors.cc``)."""
    index = {e: n for n, e in enumerate(sf_set.elements)}
    rows = []
    for kind, neighbors, eta, r_cut, r_shift, lam, zeta in sf_set.union_keys:
        if kind == 2:
            rows.append((2, index[neighbors[0]], -1, eta, r_shift, r_cut, 0.0, 0.0, 1.0))
        else:
            rows.append((kind, index[neighbors[0]], index[neighbors[1]], eta, r_shift, r_cut, lam, zeta,
                         2.0 ** (1.0 - zeta)))
    assert all(len(row) == TABLE_WIDTH for row in rows)
    return tuple(float(x) for row in rows for x in row)


values_p = Primitive("mlip_sf_values")
jvp_p = Primitive("mlip_sf_jvp")
vjp_p = Primitive("mlip_sf_vjp")
#: ``(r_ij [n, M, 3], species [n, M], cotangents [K, n, F]) -> [K, n, M, 3]``: K VJPs with
#: shared pair vectors (the ``mlip_sf_vjp`` custom call with a rank-3 cotangent).
vjp_many_p = Primitive("mlip_sf_vjp_many")


@functools.lru_cache(maxsize=64)
def _reference(sf_set):
    kernel = make_jax_kernel(sf_set)
    return lambda r_ij, species: kernel(r_ij, species >= 0, jnp.maximum(species, 0))


def _impl(primitive):
    def impl(*args, **params):
        return jax.jit(functools.partial(primitive.bind, **params))(*args)
    return impl


def _values_shape(r_ij, species, *, sf_set):
    return r_ij.update(shape=(r_ij.shape[0], sf_set.n_union), weak_type=False)


values_p.def_impl(_impl(values_p))
values_p.def_abstract_eval(_values_shape)
jvp_p.def_impl(_impl(jvp_p))
jvp_p.def_abstract_eval(lambda r_ij, species, tangent, *, sf_set: _values_shape(r_ij, species, sf_set=sf_set))
vjp_p.def_impl(_impl(vjp_p))
vjp_p.def_abstract_eval(lambda r_ij, species, cotangent, *, sf_set: r_ij.update(weak_type=False))
vjp_many_p.def_impl(_impl(vjp_many_p))
vjp_many_p.def_abstract_eval(lambda r_ij, species, cotangents, *, sf_set: r_ij.update(
    shape=cotangents.shape[:1] + r_ij.shape, weak_type=False))


def _cpu_lowering(target):
    rule = jax.ffi.ffi_lowering(f"mlip_sf_{target}")

    def lower(ctx, *operands, sf_set):
        return rule(ctx, *operands, table=np.array(function_table(sf_set), dtype=np.float64),
                    cutoff_type=np.int64(CUTOFF_TYPES[sf_set.cutoff_type]), alpha=np.float64(sf_set.cutoff_alpha),
                    n_elements=np.int64(len(sf_set.elements)))
    return lower


def _reference_values(r_ij, species, *, sf_set):
    return _reference(sf_set)(r_ij, species)


def _reference_jvp(r_ij, species, tangent, *, sf_set):
    return jax.jvp(lambda r: _reference(sf_set)(r, species), (r_ij,), (tangent,))[1]


def _reference_vjp(r_ij, species, cotangent, *, sf_set):
    return jax.vjp(lambda r: _reference(sf_set)(r, species), r_ij)[1](cotangent)[0]


def _reference_vjp_many(r_ij, species, cotangents, *, sf_set):
    pullback = jax.vjp(lambda r: _reference(sf_set)(r, species), r_ij)[1]
    return jax.vmap(lambda c: pullback(c)[0])(cotangents)


for _primitive, _target, _fallback in ((values_p, "values", _reference_values), (jvp_p, "jvp", _reference_jvp),
                                       (vjp_p, "vjp", _reference_vjp), (vjp_many_p, "vjp", _reference_vjp_many)):
    mlir.register_lowering(_primitive, _cpu_lowering(_target), platform="cpu")
    for _platform in ("cuda", "rocm", "tpu"):
        mlir.register_lowering(_primitive, mlir.lower_fun(_fallback, multiple_results=False), platform=_platform)


def _values_jvp(primals, tangents, *, sf_set):
    r_ij, species = primals
    out = values_p.bind(r_ij, species, sf_set=sf_set)
    if type(tangents[0]) is ad.Zero:
        return out, ad.Zero.from_primal_value(out)
    return out, jvp_p.bind(r_ij, species, tangents[0], sf_set=sf_set)


def _linear_jvp(primitive, fallback):
    """JVP of a primitive linear in its last argument: itself on that argument's
    tangent; the second-order term in r_ij from autodiff of the JAX kernel."""

    def rule(primals, tangents, *, sf_set):
        r_ij, species, linear = primals
        out = primitive.bind(r_ij, species, linear, sf_set=sf_set)
        tangent = None
        if type(tangents[2]) is not ad.Zero:
            tangent = primitive.bind(r_ij, species, tangents[2], sf_set=sf_set)
        if type(tangents[0]) is not ad.Zero:
            second = jax.jvp(lambda r: fallback(r, species, linear, sf_set=sf_set), (r_ij,), (tangents[0],))[1]
            tangent = second if tangent is None else tangent + second
        return out, ad.Zero.from_primal_value(out) if tangent is None else tangent
    return rule


def _transpose(partner):
    def rule(cotangent, r_ij, species, linear, *, sf_set):
        if ad.is_undefined_primal(r_ij):
            raise NotImplementedError("the descriptor kernel is linear only in its tangent/cotangent argument")
        if type(cotangent) is ad.Zero:
            return None, None, ad.Zero(linear.aval)
        return None, None, partner.bind(r_ij, species, cotangent, sf_set=sf_set)
    return rule


def _fold(primitive, r_ij, species, linear, **params):
    """``primitive`` on a leading batch axis of ``linear`` only, folded into the atom
    axis (``r_ij`` and ``species`` repeated): ``[K, n, ...] -> [K, n, ...]``."""
    size = linear.shape[0]
    flat = [jnp.broadcast_to(a, (size,) + a.shape).reshape((-1,) + a.shape[1:]) for a in (r_ij, species)]
    out = primitive.bind(*flat, linear.reshape((-1,) + linear.shape[2:]), **params)
    return out.reshape((size, -1) + out.shape[1:])


def _transpose_many(cotangent, r_ij, species, cotangents, *, sf_set):
    """The multi-cotangent VJP is linear in its cotangents; its transpose is the JVP
    batched the same way (tangents [K, n, M, 3] -> [K, n, F], folded)."""
    if ad.is_undefined_primal(r_ij):
        raise NotImplementedError("the descriptor kernel is linear only in its tangent/cotangent argument")
    if type(cotangent) is ad.Zero:
        return None, None, ad.Zero(cotangents.aval)
    return None, None, _fold(jvp_p, r_ij, species, cotangent, sf_set=sf_set)


ad.primitive_jvps[values_p] = _values_jvp
ad.primitive_jvps[jvp_p] = _linear_jvp(jvp_p, _reference_jvp)
ad.primitive_jvps[vjp_p] = _linear_jvp(vjp_p, _reference_vjp)
ad.primitive_jvps[vjp_many_p] = _linear_jvp(vjp_many_p, _reference_vjp_many)
ad.primitive_transposes[jvp_p] = _transpose(vjp_p)
ad.primitive_transposes[vjp_p] = _transpose(jvp_p)
ad.primitive_transposes[vjp_many_p] = _transpose_many


def _batch(primitive):
    """vmap: fold every batch axis into the atom axis (atoms are independent rows)."""

    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0)
                 for a, d in zip(args, dims)]
        flat = [a.reshape((-1,) + a.shape[2:]) for a in moved]
        out = primitive.bind(*flat, **params)
        return out.reshape((size, -1) + out.shape[1:]), 0
    return rule


def _batch_vjp(args, dims, **params):
    """vmap of the VJP: with only the cotangent batched (an ensemble's members on shared
    pair vectors) the multi-cotangent VJP, which shares every pair's work; otherwise folded."""
    (r_ij, species, cotangent), (r_dim, s_dim, c_dim) = args, dims
    if r_dim is None and s_dim is None and c_dim is not None:
        return vjp_many_p.bind(r_ij, species, jnp.moveaxis(cotangent, c_dim, 0), **params), 0
    return _batch(vjp_p)(args, dims, **params)


def _batch_vjp_many(args, dims, **params):
    """vmap of the multi-cotangent VJP: a batched cotangent set alone joins the member
    axis; any other pattern is folded into the atom axis (single VJPs)."""
    (r_ij, species, cotangents), (r_dim, s_dim, c_dim) = args, dims
    if r_dim is None and s_dim is None:
        moved = jnp.moveaxis(cotangents, c_dim, 0)  # [B, K, n, F]
        out = vjp_many_p.bind(r_ij, species, moved.reshape((-1,) + moved.shape[2:]), **params)
        return out.reshape(moved.shape[:2] + out.shape[1:]), 0

    def one(r, s, c):  # [n, M, 3], [n, M], [K, n, F] -> [K, n, M, 3]: single VJPs, folded
        return _fold(vjp_p, r, s, c, **params)

    return jax.vmap(one, in_axes=dims)(r_ij, species, cotangents), 0


for _primitive in (values_p, jvp_p):
    batching.primitive_batchers[_primitive] = _batch(_primitive)
batching.primitive_batchers[vjp_p] = _batch_vjp
batching.primitive_batchers[vjp_many_p] = _batch_vjp_many


def make_native_kernel(sf_set):
    """``kernel(r_ij [n, M, 3], mask [n, M], neighbor_species [n, M]) -> [n, n_union]``
    with the signature and values of the JAX kernel, computed by the compiled one."""

    def kernel(r_ij, mask, neighbor_species):
        species = jnp.where(mask, neighbor_species, -1).astype(jnp.int32)
        return values_p.bind(r_ij, species, sf_set=sf_set)

    return kernel
