"""Bad options of the ``mlip`` commands end in one line naming the option, before
any MD step, training epoch or file write (issue 20, goal "every option checked up
front"): non-finite and out-of-range numbers for ``md``, ``ti`` and ``train``, and
missing or wrong files for ``md``, ``evaluate`` and ``export``."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.build import bulk

from mlip.cli import main

MODEL = str(Path(__file__).parent / "data" / "si_random_feature.mlip")


@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "si8.extxyz"
    bulk("Si", "diamond", 5.431, cubic=True).write(path)
    return str(path)


def one_line_error(capsys, command: str) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"mlip {command}: error: "), error
    assert "\n" not in error and "Traceback" not in error, error
    return error


@pytest.mark.parametrize("options, message", [
    (["--timestep", "nan"], "timestep must be > 0 fs, got nan"),
    (["--timestep", "0"], "timestep must be > 0 fs, got 0"),
    (["--temperature", "inf"], "temperature must be >= 0 K, got inf"),
    (["--temperature", "-5"], "temperature must be >= 0 K"),
    (["--pressure", "nan"], "pressure must be finite"),
    (["--tau", "0"], "tau must be > 0 fs"),
    (["--tau-p", "-100"], "tau-p must be > 0 fs"),
    (["--compressibility", "inf"], "compressibility must be > 0 1/GPa"),
    (["--skin", "-0.1"], "skin must be >= 0 Å"),
    (["--steps", "-5"], "steps must be a non-negative integer"),
    (["--block", "0"], "block must be a positive integer"),
    (["--thermo-every", "0"], "thermo-every must be a positive number of steps"),
    (["--trajectory", "t.extxyz", "--trajectory-every", "-1"], "trajectory-every must be a positive number"),
    (["--restart-every", "0"], "restart-every must be a positive number"),
    (["--extrapolation-every", "-1"], "extrapolation check interval must be a non-negative integer"),
    (["--stop-above", "nan"], "stop-above must be a non-negative force deviation in eV/Å, got nan"),
    (["--ensemble", "npt", "--coupling", "triclinic", "--pressure", "inf"], "pressure must be finite"),
])
def test_md_options_are_refused_in_one_line_before_any_step(structure, tmp_path, capsys, monkeypatch, options,
                                                            message):
    monkeypatch.chdir(tmp_path)
    assert main(["md", MODEL, structure, "--no-progress", *options]) == 1
    assert message in one_line_error(capsys, "md")
    assert not (tmp_path / "md_thermo.csv").exists()  # nothing written


@pytest.mark.parametrize("options, message", [
    (["--temperature", "0"], "temperature must be > 0 K"),
    (["--points", "0"], "points"),
    (["--production", "5"], "production must be at least 20 steps"),
    (["--timestep", "nan"], "timestep must be > 0 fs"),
    (["--msd-steps", "3"], "msd-steps must be at least 10 steps"),
])
def test_ti_options_are_refused_in_one_line(structure, tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    assert main(["ti", MODEL, structure, "--no-progress", *options]) == 1
    assert message in one_line_error(capsys, "ti")


def test_train_epochs_override_is_checked(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('[data]\ntrain = "x.xyz"\n')
    assert main(["train", str(config), "--epochs", "-1"]) == 1
    assert "training.epochs" in one_line_error(capsys, "train")
    config.write_text('[data]\ntrain = "x.xyz"\n[optimizer]\nlearning_rate = nan\n')
    assert main(["validate", str(config)]) == 1
    assert "optimizer.learning_rate must be a finite number > 0, got nan" in one_line_error(capsys, "validate")


@pytest.mark.parametrize("command", [
    ["md", "missing.mlip", "STRUCTURE"],
    ["md", MODEL, "missing.extxyz"],
    ["evaluate", MODEL, "missing.xyz"],
    ["evaluate", "missing.mlip", "missing.xyz"],
    ["export", "n2p2", "missing.mlip", "pot"],
])
def test_missing_files_are_named(structure, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    command = [structure if c == "STRUCTURE" else c for c in command]
    assert main(command) == 1
    error = one_line_error(capsys, command[0])
    assert "missing." in error
