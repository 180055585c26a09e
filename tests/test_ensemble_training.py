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

import json
import tomllib

import numpy as np
import pytest

from mlip.files import read_container
from mlip.io import load_model, save_model
from mlip.training.checkpoint import CHECKPOINT
from mlip.training.config import ConfigError, config_from_dict, template
from mlip.training.trainer import bootstrap_counts, prepare, train

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
def ensemble_run(si_file, tmp_path_factory):
    """One ensemble run (MEMBERS members, no bootstrap)."""
    config = ensemble_config(si_file, tmp_path_factory.mktemp("ensemble") / "run")
    return train(config, progress=False, log=quiet)


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


def test_template_lists_the_ensemble_options():
    text = template()
    assert "ensemble = 1  # members trained together" in text
    assert "bootstrap = false  # ensemble:" in text
    parsed = config_from_dict({**tomllib.loads(text), "data": {"train": "x.xyz"}})
    assert parsed.model.ensemble == 1 and parsed.model.bootstrap is False
