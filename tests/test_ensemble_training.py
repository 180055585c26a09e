"""Ensemble training in one process, calibration factors, uncertainty metrics.

References: each member of an ensemble run equals a single-model run with the
member's seed (same data, no bootstrap), trained alone; the calibration factors
equal their numpy formula on the validation predictions; Spearman's rank
correlation equals scipy's; a resumed ensemble run equals an uninterrupted one
bit for bit.

Data and settings follow tests/test_training.py (20 labelled 8-atom Si cells,
r_cut 4 Å, 12 descriptors, one hidden layer of 8), trained in float64 so that
"to rounding" is tight; its fixtures (data set, compilation cache) are reused.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib

import numpy as np
import pytest

from mlip.calculator import MLIPCalculator
from mlip.cli import main
from mlip.files import read_container, write_container
from mlip.io import MODEL_FILE, ModelFileError, load_model, model_content, save_model
from mlip.training.calibration import spearman
from mlip.training.checkpoint import CHECKPOINT
from mlip.training.config import ConfigError, config_from_dict, template
from mlip.training.trainer import bootstrap_counts, load_splits, prepare, train

from test_training import (  # noqa: F401  (compilation_cache, si_file: fixtures)
    assert_params_identical,
    compilation_cache,
    config_dict,
    leaves,
    quiet,
    si_file,
    without_timing,
)

MEMBERS, EPOCHS, STOP = 3, 8, 4


def ensemble_config(data_file, directory, **model):
    """The ensemble test configuration: float64, EPOCHS epochs, ``model`` keys merged."""
    d = config_dict(data_file, directory, model={"ensemble": MEMBERS, **model},
                    training={"epochs": EPOCHS, "dtype": "float64", "keep": "last"})
    return config_from_dict(d, base_dir=directory.parent)


@pytest.fixture(scope="module")
def ensemble_setup(si_file, tmp_path_factory):
    """The ensemble run's configuration (MEMBERS members, no bootstrap)."""
    return ensemble_config(si_file, tmp_path_factory.mktemp("ensemble") / "run")


@pytest.fixture(scope="module")
def ensemble_run(ensemble_setup):
    """One ensemble run (MEMBERS members, no bootstrap)."""
    return train(ensemble_setup, progress=False, log=quiet)


def member_values(model, samples):
    """Every member's energy [S][K] (eV) and forces [S][K, n, 3] (eV/Å), and the
    calculator's uncertainties, through MLIPCalculator(members=True)."""
    calc = MLIPCalculator(model, members=True, extrapolation="off")
    out = []
    for sample in samples:
        atoms = sample.atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        out.append(dict(calc.results))
    return out


@pytest.fixture(scope="module")
def single_runs(si_file, tmp_path_factory):
    """The independent reference: member k trained alone (ensemble = 1, seed k)."""
    runs = []
    for k in range(MEMBERS):
        config = ensemble_config(si_file, tmp_path_factory.mktemp(f"single{k}") / "run", ensemble=1, seed=k)
        runs.append(train(config, progress=False, log=quiet))
    return runs


@pytest.fixture(scope="module")
def bootstrap_run(si_file, tmp_path_factory):
    config = ensemble_config(si_file, tmp_path_factory.mktemp("bootstrap") / "run", bootstrap=True)
    return config, train(config, progress=False, log=quiet)


# ----------------------------------------------------------------------------- one process, one compilation


def test_ensemble_compiles_one_train_step_per_bucket(ensemble_run):
    model = ensemble_run.model
    assert model.config.ensemble == MEMBERS
    assert ensemble_run.n_compilations == 1  # one bucket: one compiled step trains every member
    assert load_model(ensemble_run.directory / "model.mlip").config.ensemble == MEMBERS
    for key, leaf in leaves(model.params).items():
        assert leaf.shape[0] == MEMBERS, key
    record = ensemble_run.history[-1]
    assert len(record["val_loss_members"]) == MEMBERS
    assert record["val_loss"] == pytest.approx(np.mean(record["val_loss_members"]), rel=1e-12)


def test_members_equal_single_models_trained_alone(ensemble_run, single_runs):
    """Member k (weights of seed k, shared scaling and offsets, shared batches) is the
    single model of seed k trained alone, to rounding; so are its losses."""
    for k, single in enumerate(single_runs):
        member = leaves(ensemble_run.model.member(k).params)
        alone = leaves(single.model.params)
        assert member.keys() == alone.keys()
        for key in alone:
            scale = max(np.abs(alone[key]).max(), 1e-12)
            assert np.abs(member[key] - alone[key]).max() <= 1e-9 * scale, (k, key)
        losses = [r["val_loss_members"][k] for r in ensemble_run.history]
        np.testing.assert_allclose(losses, [r["val_loss"] for r in single.history], rtol=1e-9)
    # members differ from each other (different seeds)
    first, second = leaves(ensemble_run.model.member(0).params), leaves(ensemble_run.model.member(1).params)
    assert any(not np.allclose(first[key], second[key]) for key in first if "Dense" in key)
    # scaling is shared exactly
    for group in ("feature_shift", "feature_scale"):
        for element, values in ensemble_run.model.params[group].items():
            assert np.all(np.asarray(values) == np.asarray(values)[0]), (group, element)


def test_selection_is_the_lowest_mean_validation_loss(ensemble_run):
    content = read_container(ensemble_run.directory / "checkpoints" / "latest.ckpt", CHECKPOINT).content
    meta = json.loads(content["meta"])
    mean_losses = [np.mean(r["val_loss_members"]) for r in ensemble_run.history]
    assert meta["best_epoch"] == 1 + int(np.argmin(mean_losses))
    assert meta["best_loss"] == pytest.approx(min(mean_losses), rel=1e-12)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_counts_are_reproducible_resamples():
    counts = bootstrap_counts(20, 4, seed=7)
    assert counts.shape == (4, 20) and (counts.sum(axis=1) == 20).all()
    np.testing.assert_array_equal(counts, bootstrap_counts(20, 4, seed=7))
    assert not np.array_equal(counts, bootstrap_counts(20, 4, seed=8))
    assert len({tuple(row) for row in counts}) == 4  # every member its own resample
    assert (counts == 0).any()  # some structures left out, as a bootstrap does


def test_bootstrap_members_see_different_data(ensemble_run, bootstrap_run):
    _, result = bootstrap_run
    for k in range(MEMBERS):
        plain, resampled = leaves(ensemble_run.model.member(k).params), leaves(result.model.member(k).params)
        assert any(not np.allclose(plain[key], resampled[key]) for key in plain if "Dense" in key), k


def test_resumed_bootstrap_ensemble_equals_uninterrupted_run(si_file, bootstrap_run, tmp_path):
    """Stopped after epoch STOP and resumed: bit for bit the uninterrupted run (the
    stacked state is one pytree in the checkpoint; the resample is redrawn equal)."""
    config = ensemble_config(si_file, tmp_path / "run", bootstrap=True)
    _, reference = bootstrap_run

    class Stop(Exception):
        pass

    def stop(epoch, record):
        if epoch == STOP:
            raise Stop

    with pytest.raises(Stop):
        train(config, progress=False, log=quiet, on_epoch_end=stop)
    resumed = train(config, resume=True, progress=False, log=quiet)
    assert_params_identical(resumed.model.params, reference.model.params)
    assert without_timing(resumed.history) == without_timing(reference.history)
    assert resumed.n_compilations == 1


# ----------------------------------------------------------------------------- options


def test_bad_ensemble_options_name_the_option(si_file, ensemble_run, tmp_path):
    directory = tmp_path / "run"
    with pytest.raises(ConfigError, match="model.ensemble must be >= 1"):
        ensemble_config(si_file, directory, ensemble=0)
    with pytest.raises(ConfigError, match="model.bootstrap needs model.ensemble >= 2"):
        ensemble_config(si_file, directory, ensemble=1, bootstrap=True)
    start = str(ensemble_run.directory / "model.mlip")
    d = config_dict(si_file, directory, model={"ensemble": 2}, transfer={"init_model": start})
    with pytest.raises(ConfigError, match=f"transfer.init_model .* is an ensemble of {MEMBERS} members but "
                                          "model.ensemble = 2"):
        prepare(config_from_dict(d, base_dir=tmp_path), log=quiet)
    single = tmp_path / "single.mlip"
    save_model(ensemble_run.model.member(0), single)
    d = config_dict(si_file, directory, model={"ensemble": 2}, transfer={"init_model": str(single)})
    with pytest.raises(ConfigError, match="a single start model gives identical members unless model.bootstrap"):
        prepare(config_from_dict(d, base_dir=tmp_path), log=quiet)


def test_transfer_from_an_ensemble_of_the_same_size(si_file, ensemble_run, tmp_path):
    """An ensemble start model of the same size continues as an ensemble: its
    feature scaling is kept exactly and its networks are the starting point."""
    start = load_model(ensemble_run.directory / "model.mlip")
    d = config_dict(si_file, tmp_path / "run", model={"ensemble": MEMBERS},
                    transfer={"init_model": str(ensemble_run.directory / "model.mlip")},
                    training={"epochs": 2, "dtype": "float64"})
    result = train(config_from_dict(d, base_dir=tmp_path), progress=False, log=quiet)
    assert result.model.config.ensemble == MEMBERS and result.n_compilations == 1
    for group in ("feature_shift", "feature_scale"):
        assert_params_identical(result.model.params[group], start.params[group])
    assert result.model.calibration is not None and result.model.calibration != start.calibration


def test_template_lists_the_ensemble_options():
    text = template()
    assert "ensemble = 1  # members trained together" in text
    assert "bootstrap = false  # ensemble:" in text
    parsed = config_from_dict({**tomllib.loads(text), "data": {"train": "x.xyz"}})
    assert parsed.model.ensemble == 1 and parsed.model.bootstrap is False


# ----------------------------------------------------------------------------- calibration


def numpy_factors(model, samples) -> dict[str, float]:
    """The documented factors from the members' values in numpy: s_E =
    sqrt(mean (e_E / std_k E_k)^2), s_F = sqrt(mean_atoms |e_F|^2 / devi_f^2)."""
    energy_ratios, force_ratios = [], []
    for sample, results in zip(samples, member_values(model, samples)):
        energies, forces = results["member_energy"], results["member_forces"]
        energy_ratios.append((energies.mean() - sample.energy) / energies.std())
        devi_f = np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=-1), axis=0))
        force_ratios.append(np.sum((forces.mean(axis=0) - sample.forces) ** 2, axis=-1) / devi_f**2)
    return {"energy": float(np.sqrt(np.mean(np.square(energy_ratios)))),
            "forces": float(np.sqrt(np.mean(np.concatenate(force_ratios))))}


def test_calibration_equals_the_numpy_formula_on_the_validation_split(ensemble_setup, ensemble_run):
    _, validation, _ = load_splits(ensemble_setup)
    assert len(validation) == 2
    stored = load_model(ensemble_run.directory / "model.mlip").calibration
    assert stored == ensemble_run.model.calibration
    expected = numpy_factors(ensemble_run.model, validation)
    assert stored["energy"] == pytest.approx(expected["energy"], rel=1e-8)
    assert stored["forces"] == pytest.approx(expected["forces"], rel=1e-8)
    summary = json.loads((ensemble_run.directory / "metrics.json").read_text())
    assert summary["calibration"] == stored and "validation" in summary["uncertainty"]


def test_calculator_applies_the_calibration(ensemble_setup, ensemble_run):
    _, validation, _ = load_splits(ensemble_setup)
    factors = ensemble_run.model.calibration
    results = member_values(ensemble_run.model, validation[:1])[0]
    assert results["energy_uncertainty_raw"] == pytest.approx(np.std(results["member_energy"]), rel=1e-12)
    assert results["energy_uncertainty"] == pytest.approx(factors["energy"] * results["energy_uncertainty_raw"],
                                                          rel=1e-14)
    np.testing.assert_allclose(results["forces_uncertainty"], factors["forces"] * results["forces_uncertainty_raw"],
                               rtol=1e-14)
    uncalibrated = member_values(dataclasses.replace(ensemble_run.model, calibration=None), validation[:1])[0]
    assert uncalibrated["energy_uncertainty"] == uncalibrated["energy_uncertainty_raw"]
    np.testing.assert_array_equal(uncalibrated["forces_uncertainty"], results["forces_uncertainty_raw"])



def test_model_file_keeps_and_checks_the_calibration(ensemble_run, tmp_path):
    model = ensemble_run.model
    path = save_model(model, tmp_path / "calibrated.mlip")
    assert load_model(path).calibration == model.calibration
    assert load_model(save_model(dataclasses.replace(model, calibration=None), tmp_path / "raw.mlip")).calibration \
        is None
    for bad, message in (({"forces": -1.0}, "calibration factor of forces must be a finite positive number"),
                         ({"energy": float("nan")}, "calibration factor of energy"),
                         ({"stress": 2.0}, "calibration names unknown quantities \\['stress'\\]")):
        with pytest.raises(ValueError, match=message):
            save_model(dataclasses.replace(model, calibration=bad), tmp_path / "bad.mlip")
        content = model_content(model)
        content["calibration"] = bad
        write_container(tmp_path / "tampered.mlip", MODEL_FILE, content)
        with pytest.raises(ModelFileError, match="tampered.mlip: " + message):
            load_model(tmp_path / "tampered.mlip")
    with pytest.raises(ValueError, match="calibration factors need an ensemble model"):
        save_model(dataclasses.replace(model.member(0), calibration={"energy": 1.0}), tmp_path / "single.mlip")
    assert not (tmp_path / "bad.mlip").exists() and not (tmp_path / "single.mlip").exists()


# ----------------------------------------------------------------------------- metrics, mlip evaluate


def test_spearman_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for x, y in ((rng.normal(size=50), rng.normal(size=50)),
                 (rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 40).astype(float)),  # many ties
                 (np.arange(10.0), np.arange(10.0) ** 3)):
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_evaluate_prints_the_uncertainty_metrics(si_file, ensemble_run, tmp_path, capsys):
    """The metrics of ``mlip evaluate`` equal their definitions on the calculator's
    member values (scipy's Spearman, numpy fractions)."""
    stats = pytest.importorskip("scipy.stats")
    model_path = ensemble_run.directory / "model.mlip"
    assert main(["evaluate", str(model_path), str(si_file), "--json", str(tmp_path / "m.json"),
                 "--plot", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    for column in ("spearman F atom", "spearman F max", "spearman E", "F within 1σ raw", "F within 1σ cal"):
        assert column in printed
    assert f"ensemble of {MEMBERS}" in printed
    assert (tmp_path / f"eval_{si_file.stem}_calibration.png").stat().st_size > 0
    found = json.loads((tmp_path / "m.json").read_text())["uncertainty"][si_file.name]

    from mlip.training.data import read_samples

    samples = read_samples(si_file)
    model = load_model(model_path)
    values = member_values(model, samples)
    sigma = np.concatenate([r["forces_uncertainty_raw"] for r in values])
    error = np.concatenate([r["member_forces"].mean(axis=0) - s.forces for r, s in zip(values, samples)])
    size = np.linalg.norm(error, axis=1)
    assert found["spearman F atom"] == pytest.approx(stats.spearmanr(sigma, size).statistic, abs=1e-9)
    maxima = [(r["forces_uncertainty_raw"].max(), np.linalg.norm(r["member_forces"].mean(axis=0) - s.forces,
                                                                   axis=1).max()) for r, s in zip(values, samples)]
    assert found["spearman F max"] == pytest.approx(stats.spearmanr(*np.array(maxima).T).statistic, abs=1e-9)
    energy_sigma = np.array([r["energy_uncertainty_raw"] / len(s.atoms) for r, s in zip(values, samples)])
    energy_error = np.array([abs(r["member_energy"].mean() - s.energy) / len(s.atoms) for r, s in zip(values, samples)])
    assert found["spearman E"] == pytest.approx(stats.spearmanr(energy_sigma, energy_error).statistic, abs=1e-9)
    component_sigma = sigma[:, None] / np.sqrt(3.0)
    assert found["F within 1σ raw"] == pytest.approx(np.mean(np.abs(error) <= component_sigma), abs=1e-12)
    s_f = model.calibration["forces"]
    assert found["F within 1σ cal"] == pytest.approx(np.mean(np.abs(error) <= s_f * component_sigma), abs=1e-12)
    assert found["s_F"] == s_f
