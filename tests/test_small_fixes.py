"""Smaller robustness items of issue 20 (item 10): the calculator leaves JAX's
process-wide compilation cache alone unless asked (and says when mlip sets it),
the built-in data set says it is being generated, the training progress bar's ETA
leaves out the first (compiling) epoch, and parity plots give force errors in
meV/Å like the metrics table.  (The summary after a resume is checked in
tests/test_training_resume.py.)"""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlip.plots import ERROR_TEXT_GID, ParityPanel, parity_figure


@pytest.fixture
def no_cache_folder():
    before = jax.config.jax_compilation_cache_dir
    assert before is None, "the test session must not have a compilation cache folder"
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_calculator_leaves_the_process_wide_cache_alone_by_default(si_model, monkeypatch, no_cache_folder):
    from mlip.calculator import MLIPCalculator

    monkeypatch.delenv("MLIP_COMPILATION_CACHE", raising=False)
    MLIPCalculator(si_model)
    assert jax.config.jax_compilation_cache_dir is None
    MLIPCalculator(si_model, compilation_cache=False)
    assert jax.config.jax_compilation_cache_dir is None


def test_asking_for_the_cache_sets_it_and_says_so(si_model, monkeypatch, tmp_path, caplog, no_cache_folder):
    from mlip.calculator import MLIPCalculator

    monkeypatch.setenv("MLIP_COMPILATION_CACHE", str(tmp_path / "jax"))  # an explicit opt-in
    with caplog.at_level(logging.INFO, logger="mlip"):
        MLIPCalculator(si_model)
        MLIPCalculator(si_model)  # already set: not again
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
    lines = [r.getMessage() for r in caplog.records if "compilation cache" in r.getMessage()]
    assert len(lines) == 1 and str(tmp_path / "jax") in lines[0] and "process-wide" in lines[0]


def test_generating_the_built_in_data_set_says_so(tmp_path):
    from mlip.training.generate import default_si_dataset

    lines = []
    small = dict(n_rattled=2, n_strained=1, n_volume=1, n_vacancy=0, n_surface=0, n_md=0)
    default_si_dataset(tmp_path / "si.xyz", log=lines.append, **small)
    assert lines[0].startswith(f"generating the built-in Si data set in {tmp_path / 'si.xyz'}")
    assert any("rattled: 2 structures labelled" in line for line in lines)
    assert lines[-1].startswith(f"wrote 4 structures to {tmp_path / 'si.xyz'}")
    lines.clear()
    default_si_dataset(tmp_path / "si.xyz", log=lines.append)  # read back: nothing to say
    assert lines == []


def test_force_errors_in_parity_plots_are_in_mev_per_angstrom(monkeypatch, tmp_path):
    reference = np.linspace(-1.0, 1.0, 30).reshape(10, 3)
    figure = parity_figure([ParityPanel("Forces", reference, reference + 0.05, "eV/Å", error_unit="meV/Å",
                                        error_factor=1e3)])
    text = [t.get_text() for ax in figure.axes for t in ax.texts if t.get_gid() == ERROR_TEXT_GID][0]
    assert "MAE  = 50 meV/Å" in text
    assert figure.axes[0].get_xlabel() == "Reference forces (eV/Å)"  # axes stay in eV/Å

    import mlip.plots
    from mlip.training.data import sample_from_atoms
    from mlip.training.evaluate import PredictionSet, write_parity_plot

    captured = {}
    monkeypatch.setattr(mlip.plots, "parity_plot", lambda path, panels: captured.setdefault("panels", panels))
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.2, 1.2, 1.2]], cell=[5, 5, 5], pbc=True)
    samples = [sample_from_atoms(atoms)]
    write_parity_plot(tmp_path / "p.png", PredictionSet(samples, np.zeros(1), np.zeros(1), np.zeros((2, 3)),
                                                        np.zeros((2, 3)), np.zeros((1, 6)), np.zeros((1, 6))))
    forces = captured["panels"][1]
    assert forces.unit == "eV/Å" and forces.error_unit == "meV/Å" and forces.error_factor == 1e3


def test_the_eta_leaves_out_the_first_epoch(monkeypatch, tmp_path):
    """The bar's rate restarts after the first epoch of a call (compilation)."""
    import tqdm.auto

    from mlip.training.config import config_from_dict
    from mlip.training.generate import generate_structures, stillinger_weber_si, write_dataset
    from mlip.training.trainer import train

    bars = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    structures = generate_structures(stillinger_weber_si(), n_rattled=4, n_strained=0, n_volume=2, n_vacancy=0,
                                     n_surface=0, n_md=0)
    write_dataset([s for s in structures if len(s) == 8], tmp_path / "si.xyz")
    config = config_from_dict({
        "data": {"train": "si.xyz", "validation_fraction": 0.0},
        "model": {"r_cut": 4.0, "n_radial": 2, "n_angular": 1, "hidden_layers": [4]},
        "training": {"epochs": 3, "batch_atoms": 16},
        "output": {"directory": "run", "plots": False},
    }, base_dir=tmp_path)
    train(config, progress=True, log=lambda line: None)
    training = [bar for bar in bars if bar.desc == "training"]
    assert len(training) == 1
    bar = training[0]
    assert bar.n == 3 and bar.initial == 1  # the rate counts epochs 2 and 3 only
    assert bar.smoothing == 0
