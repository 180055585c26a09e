"""Model files: lossless round trip and clear errors for bad files."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from mlip.calculator import MLIPCalculator
from mlip.io import MAGIC, ModelFileError, load_model, save_model
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
