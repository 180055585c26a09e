"""Model files: lossless round trip, clear errors for bad files, and explicit
format versions (a frozen fixture file of every released version is read back)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from ase.build import bulk

from mlip.calculator import MLIPCalculator
from mlip.files import read_container, write_container
from mlip.io import (
    FORMAT_VERSION,
    MAGIC,
    MODEL_FILE,
    READERS,
    ModelFileError,
    load_model,
    save_model,
)
from mlip.model import Model

from conftest import evaluate


def test_round_trip_preserves_model_and_results(model, calc, structure, tmp_path):
    path = save_model(model, tmp_path / "model.mlip")
    loaded = load_model(path)
    assert loaded.config == model.config
    for original, restored in zip(jax.tree_util.tree_leaves(model.params), jax.tree_util.tree_leaves(loaded.params)):
        np.testing.assert_array_equal(original, restored)
        assert original.dtype == restored.dtype
    atoms = evaluate(MLIPCalculator(path, skin=0.0), structure)
    reference = evaluate(calc, structure)
    assert atoms.get_potential_energy() == reference.get_potential_energy()
    np.testing.assert_array_equal(atoms.get_forces(), reference.get_forces())
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture()
def saved(model, tmp_path):
    return save_model(model, tmp_path / "model.mlip")


def test_flipped_byte_is_detected(saved):
    raw = bytearray(saved.read_bytes())
    raw[-100] ^= 0xFF
    saved.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(saved)


def test_truncated_file_is_detected(saved):
    saved.write_bytes(saved.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(saved)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.mlip"
    path.write_text("symfunction_short Si 2 Si 0.1 0.0 6.0\n")
    with pytest.raises(ModelFileError, match="not an mlip model file"):
        load_model(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "missing.mlip")


def test_newer_format_version_is_refused(saved):
    raw = saved.read_bytes()
    end = raw.index(b"\n", len(MAGIC))
    header = json.loads(raw[len(MAGIC):end])
    header["format_version"] = 99
    saved.write_bytes(MAGIC + json.dumps(header).encode() + raw[end:])
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(saved)


def test_parameters_not_matching_configuration_are_refused(model, tmp_path):
    wider = Model.create(symmetry_functions=model.config.symmetry_functions, hidden_layers=(9, 8))
    mismatched = Model(model.config, wider.params)
    path = save_model(mismatched, tmp_path / "bad.mlip")
    with pytest.raises(ModelFileError, match=r"Dense_0.*has shape \(.*9,?\).*needs \(.*8,?\)"):
        load_model(path)


# ----------------------------------------------------------------------------- parameter values

KERNEL = ("networks", "Si", "params", "Dense_0", "kernel")
KERNEL_NAME = re.escape("['networks']['Si']['params']['Dense_0']['kernel']")


def _entry(params: dict, keys=KERNEL) -> dict:
    for key in keys[:-1]:
        params = params[key]
    return params


def _repack(path: Path, replace) -> None:
    """Rewrite the model file at ``path`` with its kernel entry ``replace(entry)``d, and a
    correct checksum (only the parameter check can then reject it)."""
    content = read_container(path, MODEL_FILE).content
    parent = _entry(content["params"])
    parent[KERNEL[-1]] = replace(parent[KERNEL[-1]])
    write_container(path, MODEL_FILE, content)


def _array_entry(array: np.ndarray) -> dict:
    return {"__array__": True, "dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _with_values(change):
    def replace(entry):
        array = np.frombuffer(entry["data"], dtype=np.dtype(entry["dtype"])).reshape(entry["shape"]).copy()
        change(array)
        return _array_entry(array)
    return replace


def test_nan_weight_is_refused_on_load(saved):
    _repack(saved, _with_values(lambda a: a.flat.__setitem__(0, np.nan)))
    with pytest.raises(ModelFileError, match=KERNEL_NAME + r" is not finite: 1 NaN and 0 inf"):
        load_model(saved)


def test_inf_weight_is_refused_on_load(saved):
    def change(array):
        array.flat[1] = np.inf
        array.flat[2] = -np.inf
    _repack(saved, _with_values(change))
    with pytest.raises(ModelFileError, match=KERNEL_NAME + r" is not finite: 0 NaN and 2 inf"):
        load_model(saved)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "complex128", "float16"])
def test_weight_of_wrong_dtype_is_refused_on_load(saved, dtype):
    def replace(entry):
        array = np.frombuffer(entry["data"], dtype=np.dtype(entry["dtype"])).reshape(entry["shape"])
        return _array_entry(array.astype(dtype))
    _repack(saved, replace)
    with pytest.raises(ModelFileError, match=KERNEL_NAME + f" has dtype {np.dtype(dtype)}; .*float32 or float64"):
        load_model(saved)


def test_object_array_is_refused_on_load(saved):
    _repack(saved, lambda entry: {**entry, "dtype": "|O", "data": b"\0" * 8 * int(np.prod(entry["shape"]))})
    with pytest.raises(ModelFileError, match=KERNEL_NAME + " has dtype object"):
        load_model(saved)


def test_wrong_data_length_is_refused_on_load(saved):
    _repack(saved, lambda entry: {**entry, "data": entry["data"][:-8]})
    with pytest.raises(ModelFileError, match=KERNEL_NAME + ": .* bytes of data for shape"):
        load_model(saved)


def _with_kernel(model: Model, value) -> Model:
    params = jax.tree_util.tree_map(lambda x: x, model.params)  # new dicts, same arrays
    _entry(params)[KERNEL[-1]] = value
    return Model(model.config, params)


@pytest.mark.parametrize("bad", ["nan", "inf", "int"])
def test_saving_a_bad_parameter_is_an_error_and_writes_nothing(model, tmp_path, bad):
    kernel = np.array(_entry(model.params)[KERNEL[-1]])
    if bad == "int":
        kernel = kernel.astype(np.int64)
        expected = KERNEL_NAME + " has dtype int64"
    else:
        kernel[0, 0] = np.nan if bad == "nan" else np.inf
        expected = KERNEL_NAME + (" is not finite: 1 NaN" if bad == "nan" else " is not finite: 0 NaN and 1 inf")
    with pytest.raises(ValueError, match=expected):
        save_model(_with_kernel(model, kernel), tmp_path / "bad.mlip")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary file


# ----------------------------------------------------------------------------- format versions

DATA = Path(__file__).parent / "data"


def _rewrite_header(path: Path, **changes) -> None:
    """Rewrite the header of ``path`` (payload and its checksum untouched, so still valid)."""
    raw = path.read_bytes()
    end = raw.index(b"\n", len(MAGIC))
    header = json.loads(raw[len(MAGIC):end])
    header.update(changes)
    path.write_bytes(MAGIC + json.dumps(header).encode() + raw[end:])
    assert hashlib.sha256(raw[end + 1:]).hexdigest() == header["sha256"]


def test_every_supported_version_has_a_reader_and_a_fixture():
    assert max(READERS) == FORMAT_VERSION
    assert sorted(READERS) == list(range(1, FORMAT_VERSION + 1))
    for version in READERS:
        assert (DATA / f"model_v{version}.mlip").is_file(), f"no fixture file for format version {version}"


def test_version_zero_is_refused(saved):
    _rewrite_header(saved, format_version=0)
    with pytest.raises(ModelFileError, match=r"format version 0, which no released mlip wrote.*supported versions: \[1\]"):
        load_model(saved)


def test_version_two_asks_for_an_upgrade(saved):
    _rewrite_header(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}; .*upgrade mlip"):
        load_model(saved)


@pytest.mark.parametrize("version", ["1", 1.0, True, None])
def test_non_integer_version_is_a_corrupt_header(saved, version):
    _rewrite_header(saved, format_version=version)
    with pytest.raises(ModelFileError, match="corrupt header"):
        load_model(saved)


# Computed once (float64) from tests/data/model_v1.mlip, which tests/data/make_model_v1.py
# wrote with the format-version-1 code; they must not be updated to make a change pass.
V1_ENERGY = -29.775046760756858  # eV
V1_FORCES = np.array([  # eV/Å
    [2.5087480118608264e-03, -1.2877845224911720e-03, -6.6114279664242735e-04],
    [-3.5270876111743836e-03, 4.3602886803038622e-03, -1.1818037128714927e-03],
    [-1.0024212632474723e-03, -2.6625305711652026e-03, -4.9240903178986439e-03],
    [3.3775302894436601e-03, 1.2848573828109422e-03, 3.4921232119896708e-03],
    [-1.6389804987201272e-03, -2.8088184554182867e-03, 3.5973515852033588e-03],
    [1.8869937744154497e-03, 2.9079807489547013e-04, -2.1893603604196460e-03],
    [-3.5883403636571328e-03, 5.0601244742963375e-03, 1.7846571557959532e-03],
    [1.9835576610791796e-03, -4.2369350632319525e-03, 8.2265234843225364e-05],
])
V1_STRESS = np.array([  # eV/Å^3, Voigt
    1.1574176911339697e-03, 1.1566423794515475e-03, 1.1603565019323182e-03,
    -4.8643129156002443e-05, -1.8304407823880626e-05, 4.9833079288263249e-06,
])


def v1_structure():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += np.array([
        [0.05, -0.03, 0.02], [-0.04, 0.06, 0.0], [0.0, 0.02, -0.05], [0.03, 0.0, 0.04],
        [-0.02, -0.04, 0.03], [0.06, 0.01, -0.02], [-0.05, 0.03, 0.01], [0.01, -0.06, -0.03],
    ])
    return atoms


def test_format_version_1_fixture_loads_and_predicts(tmp_path):
    path = DATA / "model_v1.mlip"
    raw = path.read_bytes()
    assert json.loads(raw[len(MAGIC):raw.index(b"\n", len(MAGIC))])["format_version"] == 1
    model = load_model(path)
    assert model.elements == ("Si",)
    assert model.config.hidden_layers == (2,)
    assert model.cutoff == 3.0
    assert {str(np.asarray(leaf).dtype) for leaf in jax.tree_util.tree_leaves(model.params)} == {"float64"}
    atoms = v1_structure()
    atoms.calc = MLIPCalculator(model, skin=0.0)
    np.testing.assert_allclose(atoms.get_potential_energy(), V1_ENERGY, rtol=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), V1_FORCES, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), V1_STRESS, rtol=1e-7, atol=1e-12)
    if FORMAT_VERSION == 1:  # the writer has not drifted from the released version-1 bytes
        assert save_model(model, tmp_path / "again.mlip").read_bytes() == raw
