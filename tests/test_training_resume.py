"""Training options are checked up front and a resume compares the checkpoint with
the config (issue 20, items 5 and 6): nan/inf/negative numbers are refused naming
the key; a changed architecture or data set refuses naming the keys that differ,
before anything is restored; a changed optimiser continues with a warning naming
the keys (or refuses, naming them, when the stored optimiser state no longer fits)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mlip.training.config import ConfigError, config_from_dict, load_config
from mlip.training.generate import generate_structures, stillinger_weber_si, write_dataset
from mlip.training.trainer import train


@pytest.mark.parametrize("section, key, value, message", [
    ("optimizer", "learning_rate", math.nan, "optimizer.learning_rate must be a finite number > 0, got nan"),
    ("optimizer", "learning_rate", math.inf, "optimizer.learning_rate must be a finite number > 0, got inf"),
    ("optimizer", "warmup_epochs", -5, "optimizer.warmup_epochs must be an integer >= 0, got -5"),
    ("optimizer", "final_lr_fraction", 2.0, "optimizer.final_lr_fraction"),
    ("optimizer", "plateau_factor", 1.5, "optimizer.plateau_factor"),
    ("optimizer", "plateau_patience", 0, "optimizer.plateau_patience"),
    ("optimizer", "weight_decay", -1.0, "optimizer.weight_decay"),
    ("optimizer", "clip_norm", math.nan, "optimizer.clip_norm"),
    ("optimizer", "ema_decay", math.nan, "optimizer.ema_decay"),
    ("loss", "forces_weight", math.nan, "loss.forces_weight"),
    ("loss", "energy_weight", [1.0, math.inf], "loss.energy_weight"),
    ("loss", "huber_delta", 0.0, "loss.huber_delta"),
    ("loss", "config_type_weights", {"md": -2.0}, "loss.config_type_weights.md"),
    ("model", "r_cut", math.inf, "model.r_cut"),
    ("model", "r_cut", -4.0, "model.r_cut"),
    ("model", "n_radial", 0, "model.n_radial"),
    ("model", "n_angular", -1, "model.n_angular"),
    ("model", "zetas", [1.0, math.nan], "model.zetas"),
    ("model", "angular_type", 4, "model.angular_type"),
    ("model", "r_lower", 7.0, "model.r_lower"),
    ("model", "r_min", math.nan, "model.r_min"),
    ("model", "hidden_layers", [8, 0], "model.hidden_layers"),
    ("model", "grid", "regular", "model.grid"),
    ("model", "seed", -1, "model.seed"),
    ("data", "validation_fraction", 1.0, "data.validation_fraction"),
    ("data", "validation_fraction", math.nan, "data.validation_fraction"),
    ("data", "seed", -3, "data.seed"),
    ("training", "patience", -1, "training.patience"),
    ("training", "seed", -1, "training.seed"),
])
def test_every_number_is_finite_and_in_range(section, key, value, message):
    d = {"data": {"train": "x.xyz"}}
    d.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(d)


@pytest.mark.parametrize("key, value, message", [
    ("v0", math.nan, r"eos\[0\]\.v0"),
    ("max_volume_strain", 0.0, r"eos\[0\]\.max_volume_strain"),
    ("pressure_weight", -1.0, r"eos\[0\]\.pressure_weight"),
])
def test_eos_numbers_are_checked(key, value, message):
    eos = {"element": "Si", "v0": 20.0, "b0": 100.0, key: value}
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": {"train": "x.xyz"}, "eos": [eos]})


def test_nan_and_inf_in_a_toml_file_are_named(tmp_path):
    for text, key in (("learning_rate = nan", "learning_rate"), ("learning_rate = inf", "learning_rate"),
                      ("warmup_epochs = -5", "warmup_epochs")):
        path = tmp_path / "train.toml"
        path.write_text(f'[data]\ntrain = "x.xyz"\n[optimizer]\n{text}\n')
        with pytest.raises(ConfigError, match=f"optimizer.{key} must be"):
            load_config(path)


# ----------------------------------------------------------------------------- resume after a config change


@pytest.fixture(scope="module")
def si_file(tmp_path_factory) -> Path:
    structures = generate_structures(stillinger_weber_si(), n_rattled=0, n_strained=0, n_volume=4, n_vacancy=0,
                                     n_surface=0, n_md=6, md_repeat=(1, 1, 1), md_equilibration=5, md_interval=3)
    path = tmp_path_factory.mktemp("si_data") / "si.xyz"
    write_dataset(structures, path)
    return path


def config(si_file, directory, **sections):
    d = {
        "data": {"train": str(si_file), "validation_fraction": 0.2},
        "model": {"r_cut": 4.0, "n_radial": 3, "n_angular": 1, "hidden_layers": [6]},
        "training": {"epochs": 2, "batch_atoms": 32, "dtype": "float32"},
        "optimizer": {"learning_rate": 1e-2, "warmup_epochs": 1},
        "output": {"directory": str(directory), "plots": False, "progress": False},
    }
    for name, values in sections.items():
        d[name] = {**d.get(name, {}), **values}
    return config_from_dict(d, base_dir=directory.parent)


@pytest.fixture(scope="module")
def trained(si_file, tmp_path_factory):
    directory = tmp_path_factory.mktemp("resume") / "run"
    train(config(si_file, directory), progress=False, log=lambda line: None)
    return directory


def checkpoint_bytes(directory: Path) -> bytes:
    return (directory / "checkpoints" / "latest.ckpt").read_bytes()


@pytest.mark.parametrize("sections, keys", [
    ({"model": {"hidden_layers": [9]}}, ["model.hidden_layers: [6] -> [9]"]),
    ({"model": {"n_radial": 4, "r_cut": 4.5}}, ["model.n_radial: 3 -> 4", "model.r_cut: 4.0 -> 4.5"]),
    ({"data": {"validation_fraction": 0.3}}, ["data.validation_fraction: 0.2 -> 0.3"]),
    ({"training": {"epochs": 3, "dtype": "float64"}}, ["training.dtype: 'float32' -> 'float64'"]),
])
def test_resume_refuses_a_changed_model_or_data_naming_the_keys(si_file, trained, sections, keys):
    before = checkpoint_bytes(trained)
    with pytest.raises(ConfigError) as info:
        train(config(si_file, trained, **{"training": {"epochs": 3}, **sections}), resume=True, progress=False,
              log=lambda line: None)
    message = str(info.value)
    assert "cannot resume from" in message and "\n" not in message
    for key in keys:
        assert key in message
    assert "training.epochs" not in message  # not a refused key
    assert checkpoint_bytes(trained) == before


def test_resume_with_a_changed_optimizer_continues_with_a_warning(si_file, trained, tmp_path):
    import shutil

    directory = tmp_path / "run"
    shutil.copytree(trained, directory)
    lines = []
    result = train(config(si_file, directory, training={"epochs": 3}, optimizer={"learning_rate": 1.0}),
                   resume=True, progress=False, log=lines.append)
    warning = [line for line in lines if line.startswith("warning: resuming from")]
    assert len(warning) == 1
    assert "optimizer.learning_rate: 0.01 -> 1.0" in warning[0] and "training.epochs: 2 -> 3" in warning[0]
    assert any(line.startswith("resumed from") for line in lines)
    assert len(result.history) == 3
    # the summary counts the epochs this call ran, not the total (issue 20 item 10)
    assert any(line.startswith("trained 1 epoch (epochs 3-3, resumed after epoch 2) in") for line in lines)


def test_resume_refuses_an_optimizer_whose_state_no_longer_fits(si_file, trained, tmp_path):
    import shutil

    directory = tmp_path / "run"
    shutil.copytree(trained, directory)
    with pytest.raises(ConfigError, match=r"does not fit this config's optimiser \(optimizer\.ema_decay: 0\.0 -> 0\.5"):
        train(config(si_file, directory, training={"epochs": 3}, optimizer={"ema_decay": 0.5}), resume=True,
              progress=False, log=lambda line: None)


def test_a_checkpoint_without_a_stored_config_is_checked_by_its_model(si_file, trained, tmp_path):
    """Checkpoints written before the config record: a changed architecture still
    refuses (naming the model settings that differ), not a raw flax shape error."""
    import shutil

    from mlip.files import read_container, write_container
    from mlip.training.checkpoint import CHECKPOINT

    directory = tmp_path / "run"
    shutil.copytree(trained, directory)
    path = directory / "checkpoints" / "latest.ckpt"
    content = dict(read_container(path, CHECKPOINT).content)
    content.pop("config")
    write_container(path, CHECKPOINT, content)
    with pytest.raises(ConfigError, match=r"its model differs from the one this config builds \(hidden_layers\)"):
        train(config(si_file, directory, training={"epochs": 3}, model={"hidden_layers": [7]}), resume=True,
              progress=False, log=lambda line: None)
