"""One-file, versioned model storage.

Layout of a ``.mlip`` file::

    b"MLIP-MODEL\\n"                     magic line
    {"format_version": 1, "sha256": ..., "payload_bytes": ...}\\n   JSON header line
    <msgpack payload>                      config (JSON text) and parameters

The checksum makes truncated or corrupted files fail loudly; the configuration is
rebuilt and every parameter array is checked against the shapes that
configuration needs, so a file whose weights do not match its architecture is
rejected with the name of the offending array.  Every parameter must also be a
float32 or float64 array of finite numbers: NaN or inf weights, integer, boolean,
complex, half-precision or object arrays are refused on load, and saving such a
model is an error too (nothing is written).

Format versions are explicit: :data:`READERS` maps every version this code reads
to the function that turns that version's decoded payload into the current one
(version 1, the only released version, is read as is).  A file of a newer
version is refused with "upgrade mlip"; a version that no release ever wrote
(0, negative, or a gap in :data:`READERS`) is refused as unsupported.  A fixture
file of each released version lives in ``tests/data/`` and is loaded by the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from mlip.model import Model, ModelConfig, init_params
from mlip.precision import float64_scope

MAGIC = b"MLIP-MODEL\n"
FORMAT_VERSION = 1


#: dtypes a parameter array may have (in memory and in a file).
PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ModelFileError(ValueError):
    """A model file is missing, corrupt, of an unknown version or inconsistent."""


def _migrate_v1(content: dict) -> dict:
    """Version 1 is the current layout: ``{"config": <JSON text>, "params": <tree>}``."""
    return content


#: Every format version this code reads, mapped to the migration that turns that
#: version's decoded msgpack content into the current (``FORMAT_VERSION``) layout.
#: When the format changes, bump ``FORMAT_VERSION``, add its reader here, keep the
#: old ones as tested migrations, and add a fixture file to ``tests/data/``.
READERS: dict[int, Callable[[dict], dict]] = {1: _migrate_v1}
assert max(READERS) == FORMAT_VERSION


def _name(path: tuple) -> str:
    """A parameter's name as ``jax.tree_util.keystr`` writes it: ``['networks']['Si']...``."""
    return "".join(f"[{key!r}]" for key in path)


def _encode(tree):
    if isinstance(tree, dict):
        return {key: _encode(value) for key, value in tree.items()}
    array = np.asarray(tree)
    return {"__array__": True, "dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _decode(tree, path: tuple = ()):
    if isinstance(tree, dict) and tree.get("__array__"):
        name = _name(path)
        try:
            dtype = np.dtype(tree["dtype"])
        except TypeError as error:
            raise ModelFileError(f"parameter {name} has an unreadable dtype {tree['dtype']!r}") from error
        if dtype not in PARAM_DTYPES:
            raise ModelFileError(
                f"parameter {name} has dtype {dtype}; model parameters must be float32 or float64"
            )
        shape = tuple(int(n) for n in tree["shape"])
        data = tree["data"]
        if len(data) != int(np.prod(shape)) * dtype.itemsize:
            raise ModelFileError(
                f"parameter {name}: {len(data)} bytes of data for shape {shape} of {dtype}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if isinstance(tree, dict):
        return {key: _decode(value, path + (key,)) for key, value in tree.items()}
    raise ModelFileError(f"unexpected entry of type {type(tree).__name__} at {_name(path)} in the parameters")


def check_param_values(params, error: type[Exception] = ModelFileError, where: str = "") -> None:
    """Raise ``error`` naming the first parameter that is not a float32/float64 array
    of finite numbers (its dtype, or how many NaN and inf entries it holds)."""
    prefix = f"{where}: " if where else ""
    for key, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(key)
        try:
            values = np.asarray(leaf)
        except Exception as problem:  # noqa: BLE001 - anything that is not an array
            raise error(f"{prefix}parameter {name} is not an array ({type(leaf).__name__}: {problem})") from problem
        if values.dtype not in PARAM_DTYPES:
            raise error(
                f"{prefix}parameter {name} has dtype {values.dtype}; model parameters must be float32 or float64"
            )
        finite = np.isfinite(values)
        if not finite.all():
            n_nan = int(np.isnan(values).sum())
            n_inf = int(np.isinf(values).sum())
            raise error(
                f"{prefix}parameter {name} is not finite: {n_nan} NaN and {n_inf} inf "
                f"of {values.size} entries"
            )


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename: a crash never
    leaves half a file)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_container(path: str | os.PathLike, payload: bytes, magic: bytes = MAGIC) -> Path:
    """Write ``payload`` under a magic line and a checksummed JSON header, atomically
    (:func:`write_atomic`)."""
    header = {
        "format_version": FORMAT_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
    }
    return write_atomic(path, magic + json.dumps(header).encode() + b"\n" + payload)


def read_container(path: str | os.PathLike, magic: bytes = MAGIC, what: str = "mlip model") -> bytes:
    """The payload of a file written by :func:`write_container`.

    Raises:
        ModelFileError: unreadable file, wrong magic bytes, newer or unsupported
            format version, checksum or length mismatch.
    """
    return read_container_versioned(path, magic, what)[1]


def read_container_versioned(
    path: str | os.PathLike, magic: bytes = MAGIC, what: str = "mlip model"
) -> tuple[int, bytes]:
    """``(format_version, payload)`` of a file written by :func:`write_container`;
    the version is one of :data:`READERS` (others raise, see :func:`read_container`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"cannot read {what} file {path}: {error}") from error
    if not raw.startswith(magic):
        raise ModelFileError(f"{path} is not an {what} file (bad magic bytes)")
    header_end = raw.find(b"\n", len(magic))
    try:
        header = json.loads(raw[len(magic) : header_end])
        version = header["format_version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise TypeError(f"format_version {version!r} is not an integer")
        checksum, size = header["sha256"], int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{path}: corrupt header ({error})") from error
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {version}; this mlip reads up to {FORMAT_VERSION}, upgrade mlip"
        )
    if version not in READERS:
        raise ModelFileError(
            f"{path} has format version {version}, which no released mlip wrote and this mlip cannot read "
            f"(supported versions: {sorted(READERS)})"
        )
    payload = raw[header_end + 1 :]
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != checksum:
        raise ModelFileError(
            f"{path} is corrupt: checksum or length mismatch ({len(payload)} of {size} payload bytes)"
        )
    return version, payload


def model_payload(model: Model) -> bytes:
    """msgpack bytes of a model's configuration (JSON text) and parameters.

    Raises:
        ValueError: a parameter is not a float32/float64 array or holds NaN or inf
            (the message names it); nothing is produced.
    """
    params = jax.device_get(model.params)
    check_param_values(params, ValueError, "cannot save model")
    return msgpack.packb({"config": model.config.to_json(), "params": _encode(params)}, use_bin_type=True)


def model_from_payload(
    payload: bytes, path: str | os.PathLike = "<payload>", format_version: int = FORMAT_VERSION
) -> Model:
    """Inverse of :func:`model_payload`.  ``format_version`` is the version the payload
    was written in; it is migrated to the current layout through :data:`READERS`.
    Parameters are checked against the configuration (names, shapes), and must be
    finite float32/float64 arrays."""
    if format_version not in READERS:
        raise ModelFileError(
            f"{path}: format version {format_version} is not supported (supported versions: {sorted(READERS)})"
        )
    try:
        content = READERS[format_version](msgpack.unpackb(payload, raw=False))
        config = ModelConfig.from_dict(json.loads(content["config"]))
        params = _decode(content["params"])
    except ModelFileError as error:  # from _decode or a migration: add the file name
        raise ModelFileError(f"{path}: {error}") from error
    except Exception as error:  # any decoding problem is a corrupt file
        raise ModelFileError(f"{path}: cannot decode model ({type(error).__name__}: {error})") from error
    _check_params(config, params, path)
    with float64_scope():  # float64 arrays stay float64 whatever the host's JAX setting
        return Model(config, jax.tree_util.tree_map(jnp.asarray, params))


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (a crash never leaves half a file).

    Raises:
        ValueError: a parameter is not a float32/float64 array or is not finite;
            nothing (not even a temporary file) is written.
    """
    return write_container(path, model_payload(model))


def load_model(path: str | os.PathLike) -> Model:
    """Read a model written by :func:`save_model` (any version in :data:`READERS`).

    Raises:
        ModelFileError: if the file is not a model file, is of a newer or an
            unsupported format version, fails its checksum, its parameters do not
            match its configuration, or a parameter is not a finite float32/float64
            array (the message names it).
    """
    version, payload = read_container_versioned(path)
    return model_from_payload(payload, path, version)


def _check_params(config: ModelConfig, params, path) -> None:
    template = jax.eval_shape(lambda: init_params(config))
    expected = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(template)}
    try:
        found = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    except Exception as error:
        raise ModelFileError(f"{path}: malformed parameters ({error})") from error
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path}: parameters do not match the stored configuration "
            f"(missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            raise ModelFileError(
                f"{path}: parameter {key} has shape {tuple(found[key])}, the configuration needs {tuple(shape)}"
            )
    check_param_values(params, ModelFileError, str(path))
