"""One-file, versioned model storage.

Layout of a ``.mlip`` file::

    b"MLIP-MODEL\\n"                     magic line
    {"format_version": 1, "sha256": ..., "payload_bytes": ...}\\n   JSON header line
    <msgpack payload>                      config (JSON text) and parameters

The checksum makes truncated or corrupted files fail loudly; the configuration is
rebuilt and every parameter array is checked against the shapes that
configuration needs, so a file whose weights do not match its architecture is
rejected with the name of the offending array.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from mlip.model import Model, ModelConfig, init_params

MAGIC = b"MLIP-MODEL\n"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, corrupt, of an unknown version or inconsistent."""


def _encode(tree):
    if isinstance(tree, dict):
        return {key: _encode(value) for key, value in tree.items()}
    array = np.asarray(tree)
    return {"__array__": True, "dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _decode(tree):
    if isinstance(tree, dict) and tree.get("__array__"):
        return np.frombuffer(tree["data"], dtype=np.dtype(tree["dtype"])).reshape(tree["shape"]).copy()
    if isinstance(tree, dict):
        return {key: _decode(value) for key, value in tree.items()}
    raise ModelFileError(f"unexpected entry of type {type(tree).__name__} in the parameters")


def write_container(path: str | os.PathLike, payload: bytes, magic: bytes = MAGIC) -> Path:
    """Write ``payload`` under a magic line and a checksummed JSON header, atomically
    (temporary file + rename: a crash never leaves half a file)."""
    path = Path(path)
    header = {
        "format_version": FORMAT_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
    }
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(magic + json.dumps(header).encode() + b"\n" + payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def read_container(path: str | os.PathLike, magic: bytes = MAGIC, what: str = "mlip model") -> bytes:
    """The payload of a file written by :func:`write_container`.

    Raises:
        ModelFileError: unreadable file, wrong magic bytes, newer format version,
            checksum or length mismatch.
    """
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
        version = int(header["format_version"])
        checksum, size = header["sha256"], int(header["payload_bytes"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{path}: corrupt header ({error})") from error
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {version}; this mlip reads up to {FORMAT_VERSION}, upgrade mlip"
        )
    payload = raw[header_end + 1 :]
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != checksum:
        raise ModelFileError(
            f"{path} is corrupt: checksum or length mismatch ({len(payload)} of {size} payload bytes)"
        )
    return payload


def model_payload(model: Model) -> bytes:
    """msgpack bytes of a model's configuration (JSON text) and parameters."""
    return msgpack.packb(
        {"config": model.config.to_json(), "params": _encode(jax.device_get(model.params))}, use_bin_type=True
    )


def model_from_payload(payload: bytes, path: str | os.PathLike = "<payload>") -> Model:
    """Inverse of :func:`model_payload`; parameters are checked against the configuration."""
    try:
        content = msgpack.unpackb(payload, raw=False)
        config = ModelConfig.from_dict(json.loads(content["config"]))
        params = _decode(content["params"])
    except ModelFileError:
        raise
    except Exception as error:  # any decoding problem is a corrupt file
        raise ModelFileError(f"{path}: cannot decode model ({type(error).__name__}: {error})") from error
    _check_params(config, params, path)
    return Model(config, jax.tree_util.tree_map(jnp.asarray, params))


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (a crash never leaves half a file)."""
    return write_container(path, model_payload(model))


def load_model(path: str | os.PathLike) -> Model:
    """Read a model written by :func:`save_model`.

    Raises:
        ModelFileError: if the file is not a model file, is of a newer format
            version, fails its checksum, or its parameters do not match its
            configuration.
    """
    return model_from_payload(read_container(path), path)


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
