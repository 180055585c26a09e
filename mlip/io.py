"""One-file, versioned model storage.

A ``.mlip`` file is a :mod:`mlip.files` container of kind :data:`MODEL_FILE`
(magic line ``MLIP-MODEL``, JSON header with format version and checksum, msgpack
payload ``{"config": <JSON text>, "params": <tree of arrays>}``, plus
``"feature_range": {element: [n_features, 2] array}`` when the model knows its
training range, and ``"calibration": {"energy": s_E, "forces": s_F}`` when an
ensemble stores calibration factors; readers that predate a key ignore it),
written atomically.

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

import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from mlip.files import ContainerError, ContainerKind, read_container, write_container
from mlip.model import Model, ModelConfig, init_params
from mlip.precision import float64_scope

MAGIC = b"MLIP-MODEL\n"
FORMAT_VERSION = 1


#: Quantities an ensemble's calibration may hold a factor for (:attr:`Model.calibration`).
CALIBRATION_QUANTITIES = ("energy", "forces")

#: dtypes a parameter array may have (in memory and in a file).
PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ModelFileError(ContainerError):
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

#: The model file as a :mod:`mlip.files` container.
MODEL_FILE = ContainerKind("mlip model", MAGIC, FORMAT_VERSION, tuple(READERS), ModelFileError)


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


def model_content(model: Model) -> dict:
    """A model's configuration (JSON text) and parameters, as the model file stores them.

    Raises:
        ValueError: a parameter is not a float32/float64 array or holds NaN or inf
            (the message names it); nothing is produced.
    """
    params = jax.device_get(model.params)
    check_param_values(params, ValueError, "cannot save model")
    content = {"config": model.config.to_json(), "params": _encode(params)}
    if model.feature_range is not None:
        _check_feature_range(model.config, model.feature_range, ValueError, "cannot save model")
        content["feature_range"] = _encode({e: np.asarray(r, np.float64) for e, r in model.feature_range.items()})
    if model.calibration is not None:
        check_calibration(model.config, model.calibration, ValueError, "cannot save model")
        content["calibration"] = {key: float(value) for key, value in model.calibration.items()}
    return content


def model_payload(model: Model) -> bytes:
    """msgpack bytes of :func:`model_content` (to embed a model in another file)."""
    return msgpack.packb(model_content(model), use_bin_type=True)


def model_from_content(
    content: dict, path: str | os.PathLike = "<content>", format_version: int = FORMAT_VERSION
) -> Model:
    """Inverse of :func:`model_content`.  ``format_version`` is the version the content
    was written in; it is migrated to the current layout through :data:`READERS`.
    Parameters are checked against the configuration (names, shapes), and must be
    finite float32/float64 arrays."""
    if format_version not in READERS:
        raise ModelFileError(
            f"{path}: format version {format_version} is not supported (supported versions: {sorted(READERS)})"
        )
    try:
        content = READERS[format_version](content)
        config = ModelConfig.from_dict(json.loads(content["config"]))
        params = _decode(content["params"])
        feature_range = _decode(content["feature_range"]) if "feature_range" in content else None
        calibration = content.get("calibration")
    except ModelFileError as error:  # from _decode or a migration: add the file name
        raise ModelFileError(f"{path}: {error}") from error
    except Exception as error:  # any decoding problem is a corrupt file
        raise ModelFileError(f"{path}: cannot decode model ({type(error).__name__}: {error})") from error
    _check_params(config, params, path)
    if feature_range is not None:
        _check_feature_range(config, feature_range, ModelFileError, str(path))
    if calibration is not None:
        check_calibration(config, calibration, ModelFileError, str(path))
        calibration = {key: float(value) for key, value in calibration.items()}
    with float64_scope():  # float64 arrays stay float64 whatever the host's JAX setting
        return Model(config, jax.tree_util.tree_map(jnp.asarray, params), feature_range, calibration)


def model_from_payload(
    payload: bytes, path: str | os.PathLike = "<payload>", format_version: int = FORMAT_VERSION
) -> Model:
    """Inverse of :func:`model_payload` (see :func:`model_from_content`)."""
    try:
        content = msgpack.unpackb(payload, raw=False)
    except Exception as error:  # any decoding problem is a corrupt payload
        raise ModelFileError(f"{path}: cannot decode model ({type(error).__name__}: {error})") from error
    return model_from_content(content, path, format_version)


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (a crash never leaves half a file).

    Raises:
        ValueError: a parameter is not a float32/float64 array or is not finite;
            nothing (not even a temporary file) is written.
    """
    return write_container(path, MODEL_FILE, model_content(model))


def load_model(path: str | os.PathLike) -> Model:
    """Read a model written by :func:`save_model` (any version in :data:`READERS`).

    Raises:
        ModelFileError: if the file is not a model file, is of a newer or an
            unsupported format version, fails its checksum, its parameters do not
            match its configuration, or a parameter is not a finite float32/float64
            array (the message names it).
    """
    found = read_container(path, MODEL_FILE)
    return model_from_content(found.content, path, found.version)


def _check_feature_range(config: ModelConfig, feature_range, error: type[Exception], where: str) -> None:
    """Raise ``error`` unless ``feature_range`` maps elements of ``config`` to
    ``[n_features, 2]`` arrays with G_min <= G_max and no NaN."""
    unknown = sorted(set(feature_range) - set(config.elements))
    if unknown:
        raise error(f"{where}: feature range given for element(s) {unknown} the model does not have")
    for element, values in feature_range.items():
        values = np.asarray(values)
        expected = (config.symmetry_functions.n_features(element), 2)
        if values.shape != expected:
            raise error(f"{where}: feature range of {element} has shape {values.shape}, expected {expected}")
        if np.isnan(values).any() or np.any(values[:, 0] > values[:, 1]):
            raise error(f"{where}: feature range of {element} has NaN or G_min > G_max entries")


def check_calibration(config: ModelConfig, calibration, error: type[Exception], where: str) -> None:
    """Raise ``error`` unless ``calibration`` maps quantities of
    :data:`CALIBRATION_QUANTITIES` to finite positive numbers and ``config`` is an
    ensemble (a single model has no spread to calibrate)."""
    if config.ensemble == 1:
        raise error(f"{where}: calibration factors need an ensemble model; this one is a single model")
    if not isinstance(calibration, dict):
        raise error(f"{where}: calibration must be a table of factors, got {type(calibration).__name__}")
    unknown = sorted(set(calibration) - set(CALIBRATION_QUANTITIES))
    if unknown:
        raise error(f"{where}: calibration names unknown quantities {unknown}; known: {list(CALIBRATION_QUANTITIES)}")
    for key, value in calibration.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
                np.isfinite(value) and value > 0):
            raise error(f"{where}: calibration factor of {key} must be a finite positive number, got {value!r}")


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
