"""Training data and configuration: validation listing every problem, reading
labels from extxyz (custom keys), ASE .traj/.db and n2p2/RuNNer input.data,
train/validation splits, and the TOML configuration (errors name the key; the
template parses back to the defaults).

No JAX compilation here: these tests take well under a second each.

Tests whose docstring starts with ``BUG:`` pin a defect in ``mlip/training``; they
fail until it is fixed.
"""

from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mlip.training.config import (
    ConfigError, DataConfig, EOSConfig, TrainConfig, config_from_dict, load_config, template, weight_at,
)
from mlip.training.data import (
    DataError, LabelKeys, Sample, read_samples, sample_from_atoms, split_samples, validate_samples,
)

VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def si_cell(seed: int, rattle: float = 0.05) -> Atoms:
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    atoms.positions += np.random.default_rng(seed).normal(0.0, rattle, atoms.positions.shape)
    return atoms


def labels(n_atoms: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"energy": -4.3 * n_atoms + rng.normal(), "forces": rng.normal(size=(n_atoms, 3)),
            "stress": rng.normal(size=6) * 1e-3}


def good_sample(name: str, seed: int = 0, stress: bool = True) -> Sample:
    atoms = si_cell(seed)
    values = labels(len(atoms), seed)
    return Sample(atoms, values["energy"], values["forces"], values["stress"] if stress else None, "default", name)


# ----------------------------------------------------------------------------- validation


def bad_samples() -> list[Sample]:
    """One good structure and one structure per kind of problem (named after it)."""
    samples = [good_sample("good_a", 1), good_sample("good_b", 2)]
    samples.append(dataclasses.replace(good_sample("missing_energy", 3), energy=float("nan")))
    samples.append(dataclasses.replace(good_sample("infinite_energy", 4), energy=float("inf")))
    samples.append(dataclasses.replace(good_sample("missing_forces", 5), forces=None))
    samples.append(dataclasses.replace(good_sample("short_forces", 6), forces=np.zeros((7, 3))))
    forces = labels(8, 7)["forces"]
    forces[3, 1] = np.nan
    samples.append(dataclasses.replace(good_sample("nan_forces", 7), forces=forces))
    carbon = si_cell(8)
    carbon.symbols[2] = "C"
    samples.append(dataclasses.replace(good_sample("unknown_element", 8), atoms=carbon))
    close = si_cell(9, rattle=0.0)
    close.positions[1] = close.positions[0] + [0.7, 0.7, 0.0]  # 0.99 Å from atom 0
    samples.append(dataclasses.replace(good_sample("too_close", 9), atoms=close))
    samples.append(dataclasses.replace(good_sample("stress_size", 10), stress=np.zeros(4)))
    samples.append(good_sample("no_stress", 11, stress=False))
    nan_positions = si_cell(12)
    nan_positions.positions[4, 0] = np.nan
    samples.append(dataclasses.replace(good_sample("nan_positions", 12), atoms=nan_positions))
    return samples


def test_validate_samples_lists_every_problem():
    with pytest.raises(DataError) as info:
        validate_samples(bad_samples(), elements=["Si"], r_min=1.5, stress_required=True)
    message = str(info.value)
    lines = {line.strip().split(":")[0]: line for line in message.splitlines()[1:]}
    expected = {
        "missing_energy": "energy missing or not finite",
        "infinite_energy": "energy missing or not finite",
        "missing_forces": "forces missing",
        "short_forces": "forces have shape (7, 3), expected (8, 3)",
        "nan_forces": "forces contain NaN/inf",
        "unknown_element": "unknown element(s) ['C']",
        "too_close": "atoms 0 and 1 are 0.990 Å apart, closer than r_min = 1.5 Å",
        "stress_size": "stress has 4 values",
        "nan_positions": "positions contain NaN/inf",
    }
    for name, text in expected.items():
        assert name in lines, f"{name} not listed:\n{message}"
        assert text in lines[name], f"{name}: {lines[name]!r}"
    # stress given for some periodic structures but not for "no_stress"
    assert any("stress weight is non-zero" in line and "no_stress" in line for line in message.splitlines()), message
    assert "good_a" not in message and "good_b" not in message
    assert message.startswith(f"{len(expected) + 1} problem(s)")


def test_missing_stress_is_fine_without_stress_weight():
    samples = [good_sample("a", 1), good_sample("b", 2, stress=False)]
    validate_samples(samples, elements=["Si"], r_min=1.5, stress_required=False)  # no error
    with pytest.raises(DataError, match="1 do not \\(b\\)"):
        validate_samples(samples, elements=["Si"], r_min=1.5, stress_required=True)
    # non-periodic structures need no stress
    cluster = good_sample("cluster", 3, stress=False)
    cluster.atoms.pbc = False
    validate_samples([good_sample("a", 1), cluster], elements=["Si"], r_min=1.5, stress_required=True)


def test_validate_samples_truncates_long_lists():
    samples = [dataclasses.replace(good_sample(f"s{n}", n), energy=float("nan")) for n in range(25)]
    with pytest.raises(DataError) as info:
        validate_samples(samples, elements=["Si"], r_min=1.0, max_listed=20)
    message = str(info.value)
    assert message.startswith("25 problem(s)") and "s19:" in message and "s20:" not in message
    assert "and 5 more" in message
    with pytest.raises(DataError, match="no structures"):
        validate_samples([], elements=["Si"], r_min=1.0)


# ----------------------------------------------------------------------------- reading


def labelled_frames(n: int = 3) -> list[Atoms]:
    frames = []
    for k in range(n):
        atoms = si_cell(k)
        atoms.calc = SinglePointCalculator(atoms, **labels(len(atoms), k))
        atoms.info["config_type"] = f"group{k % 2}"
        frames.append(atoms)
    return frames


def assert_same_labels(samples, frames, atol=0.0, stress=True):
    assert len(samples) == len(frames)
    for sample, atoms in zip(samples, frames):
        assert sample.energy == pytest.approx(atoms.get_potential_energy(), rel=0, abs=atol)
        np.testing.assert_allclose(sample.forces, atoms.get_forces(), rtol=0, atol=atol)
        np.testing.assert_allclose(sample.atoms.positions, atoms.positions, rtol=0, atol=max(atol, 1e-8))
        np.testing.assert_allclose(sample.atoms.cell.array, atoms.cell.array, rtol=0, atol=max(atol, 1e-8))
        if stress:
            np.testing.assert_allclose(sample.stress, atoms.get_stress(), rtol=0, atol=atol)
        assert sample.atoms.calc is None  # labels live in the Sample only


def test_extxyz_with_custom_label_keys(tmp_path):
    """MACE-style REF_energy / REF_forces / REF_stress (6 Voigt values in one frame,
    a 3x3 matrix in the other) and a custom group key; a calculator energy in the
    same file must not be used instead."""
    frames = []
    reference = []
    for k in range(2):
        atoms = si_cell(k)
        values = labels(len(atoms), k)
        atoms.info["REF_energy"] = values["energy"]
        atoms.arrays["REF_forces"] = values["forces"]
        voigt = values["stress"]
        matrix = np.zeros((3, 3))
        for (i, j), value in zip(VOIGT, voigt):
            matrix[i, j] = matrix[j, i] = value
        atoms.info["REF_stress"] = voigt if k == 0 else matrix
        atoms.info["kind"] = f"k{k}"
        atoms.calc = SinglePointCalculator(atoms, energy=123.0)  # decoy
        frames.append(atoms)
        reference.append(values)
    path = tmp_path / "ref.xyz"
    write(path, frames, format="extxyz")
    samples = read_samples(path, LabelKeys("REF_energy", "REF_forces", "REF_stress", config_type="kind"))
    for k, (sample, values) in enumerate(zip(samples, reference)):
        assert sample.energy == pytest.approx(values["energy"], abs=1e-10)
        np.testing.assert_allclose(sample.forces, values["forces"], atol=1e-8)
        np.testing.assert_allclose(sample.stress, values["stress"], atol=1e-10)
        assert sample.config_type == f"k{k}" and sample.name == f"{path}:{k}"
    # default keys read the calculator's energy (the decoy) and find no forces
    plain = read_samples(path)
    assert plain[0].energy == 123.0 and plain[0].forces is None


def test_traj_and_db_round_trips(tmp_path):
    frames = labelled_frames()
    for name in ("data.traj", "data.db"):
        write(tmp_path / name, frames)
        samples = read_samples(tmp_path / name)
        assert_same_labels(samples, frames)
    # .traj keeps info (config_type); ASE's .db reader does not return info
    assert [s.config_type for s in read_samples(tmp_path / "data.traj")] == ["group0", "group1", "group0"]


def test_runner_input_data_units_are_converted(tmp_path):
    """n2p2/RuNNer input.data (Bohr, Hartree) written by ASE reads back in Å and eV;
    a file called input.data is recognised without a format."""
    frames = labelled_frames()
    write(tmp_path / "input.data", frames, format="runnerdata")
    text = (tmp_path / "input.data").read_text()
    assert "lattice" in text and f"{5.431 / 0.529177:.3f}"[:6] in text  # really atomic units on disk
    samples = read_samples(tmp_path / "input.data")
    assert_same_labels(samples, frames, atol=1e-6, stress=False)
    assert all(s.stress is None for s in samples)  # the format has no stress


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_samples(tmp_path / "missing.xyz")
    (tmp_path / "broken.xyz").write_text("3\nnot an extxyz comment line\nSi 0 0\n")
    with pytest.raises(DataError, match="cannot read"):
        read_samples(tmp_path / "broken.xyz")


def test_split_is_reproducible_disjoint_and_complete():
    samples = [good_sample(f"s{n}", n) for n in range(20)]
    train, validation = split_samples(samples, 0.25, seed=3)
    again_train, again_validation = split_samples(samples, 0.25, seed=3)
    names = lambda xs: [s.name for s in xs]  # noqa: E731
    assert names(train) == names(again_train) and names(validation) == names(again_validation)
    assert len(validation) == 5 and len(train) == 15
    assert set(names(train)).isdisjoint(names(validation))
    assert sorted(names(train) + names(validation)) == sorted(names(samples))
    assert names(split_samples(samples, 0.25, seed=4)[1]) != names(validation)
    assert len(split_samples(samples, 0.01, seed=0)[1]) == 1  # at least one when the fraction is positive
    assert split_samples(samples, 0.0)[1] == []
    with pytest.raises(DataError, match="too few"):
        split_samples(samples[:1], 0.5)
    with pytest.raises(ValueError):
        split_samples(samples, 1.0)


def test_sample_from_atoms_reads_calculator_labels_and_3x3_stress():
    atoms = si_cell(0)
    values = labels(8, 0)
    matrix = np.zeros((3, 3))
    for (i, j), value in zip(VOIGT, values["stress"]):
        matrix[i, j] = matrix[j, i] = value
    atoms.calc = SinglePointCalculator(atoms, energy=values["energy"], forces=values["forces"], stress=matrix)
    sample = sample_from_atoms(atoms, name="x")
    assert sample.energy == values["energy"] and sample.config_type == "default"
    np.testing.assert_array_equal(sample.stress, values["stress"])
    np.testing.assert_array_equal(sample.forces, values["forces"])


# ----------------------------------------------------------------------------- configuration


def test_unknown_key_and_section_are_named():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rat'\] in \[optimizer\]"):
        config_from_dict({"data": {"train": "x.xyz"}, "optimizer": {"learning_rat": 1e-3}})
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['trainig'\]"):
        config_from_dict({"data": {"train": "x.xyz"}, "trainig": {"epochs": 3}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['vO'\] in \[eos\[1\]\]"):
        config_from_dict({"data": {"train": "x.xyz"},
                          "eos": [{"element": "Si", "v0": 20.0, "b0": 100.0}, {"element": "Si", "vO": 20.0}]})


@pytest.mark.parametrize("section, key, value", [
    ("training", "epochs", "ten"),
    ("training", "epochs", 3.5),
    ("optimizer", "learning_rate", "fast"),
    ("model", "hidden_layers", 25),
    ("model", "elements", "Si"),
    ("training", "refit_offsets", 1),
    ("output", "directory", 3),
])
def test_wrong_type_is_named(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        config_from_dict({"data": {"train": "x.xyz"}, section: {key: value}})


@pytest.mark.parametrize("section, key, value", [
    ("training", "epochs", True),
    ("training", "patience", True),
    ("loss", "config_type_weights", [1.0, 2.0]),
])
def test_bool_for_int_and_list_for_table_are_rejected(section, key, value):
    """BUG (config.py, _coerce): ``epochs = true`` is accepted as 1 (bool is a
    subclass of int) and ``config_type_weights = [1.0, 2.0]`` (not a table) is
    accepted and only fails later with an AttributeError in the trainer.  Fix: in
    _coerce reject bools unless the default is a bool, and require a dict (with
    number values) when the default is a dict."""
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        config_from_dict({"data": {"train": "x.xyz"}, section: {key: value}})


@pytest.mark.parametrize("update, message", [
    ({"data": {}}, "data.train is required"),
    ({"optimizer": {"name": "sgd"}}, "optimizer.name"),
    ({"transfer": {"freeze": ["everything"]}}, "transfer.freeze"),
    ({"optimizer": {"learning_rate": 0.0}}, "learning_rate"),
    ({"optimizer": {"ema_decay": 1.0}}, "ema_decay"),
    ({"loss": {"forces_weight": [1.0, 2.0, 3.0]}}, "loss.forces_weight"),
    ({"loss": {"energy_weight": -1.0}}, "loss.energy_weight"),
    ({"eos": [{"element": "Si"}]}, r"eos\[0\]: give v0 and b0"),
    ({"eos": {"v0": 20.0, "b0": 100.0}}, r"eos\[0\].element"),
])
def test_invalid_values_are_named(update, message):
    d = {"data": {"train": "x.xyz"}}
    d.update(update)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(d)


def test_template_parses_back_to_the_defaults(tmp_path):
    text = template()
    parsed = tomllib.loads(text)
    parsed["data"]["train"] = "data.xyz"
    assert config_from_dict(parsed, base_dir=tmp_path) == TrainConfig(data=DataConfig(train="data.xyz"),
                                                                       base_dir=str(tmp_path))
    # the commented [[eos]] block is valid TOML too, with EOSConfig's defaults
    lines = text.splitlines()
    start = lines.index("# [[eos]]")
    eos_text = "\n".join(line[2:] if line.startswith("# ") else line for line in lines[start:])
    eos = tomllib.loads(eos_text)["eos"][0]
    eos.update(element="Si", v0=20.0, b0=100.0)
    parsed["eos"] = [eos]
    assert config_from_dict(parsed).eos == (EOSConfig(element="Si", v0=20.0, b0=100.0),)


def test_load_config_resolves_paths_against_the_file(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.toml").write_text(
        '[data]\ntrain = "data/si.xyz"\n[loss]\nforces_weight = [1, 10]\n[training]\nepochs = 11\n')
    config = load_config(folder / "train.toml")
    assert config.path(config.data.train) == folder / "data" / "si.xyz"
    assert config.loss.forces_weight == (1, 10) and config.training.epochs == 11
    assert [weight_at(config.loss.forces_weight, e, 11) for e in (0, 5, 10)] == [1.0, 5.5, 10.0]
    (folder / "bad.toml").write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(folder / "bad.toml")


def test_overlapping_atoms_are_rejected_whatever_r_min():
    """Two atoms 0.05 Å apart pass no r_min: a default r_min derived from such data
    (0.85 x its shortest distance) would otherwise accept them (issue 20, item 3)."""
    overlapping = si_cell(13, rattle=0.0)
    overlapping.positions[1] = overlapping.positions[0] + [0.05, 0.0, 0.0]
    sample = dataclasses.replace(good_sample("overlap", 13), atoms=overlapping)
    for r_min in (0.0, 0.04, 1.5):
        with pytest.raises(DataError, match=r"overlap: atoms 0 and 1 are 0.050 Å apart: overlapping"):
            validate_samples([sample], elements=["Si"], r_min=r_min)
