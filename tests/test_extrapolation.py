"""Extrapolation flags: the training range stored in the model, checked per atom.

References: the flags are compared with a numpy evaluation of the definition
(symmetry functions from :func:`mlip.batch.compute_descriptors`, compared with the
stored G_min/G_max); training structures never extrapolate; a 20 %-compressed
cell does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.build import bulk

from mlip.batch import compute_descriptors
from mlip.calculator import MLIPCalculator
from mlip.extrapolation import ExtrapolationError, ExtrapolationWarning
from mlip.io import load_model, save_model
from mlip.model import Model
from mlip.n2p2 import read_n2p2, write_n2p2
from mlip.training.generate import label, stillinger_weber_si, strained_diamond_cells
from mlip.training.linear import random_feature_model
from mlip.training.scaling import with_feature_range


def _training_structures(n: int = 6, seed: int = 3):
    return label(strained_diamond_cells(n, seed, strain=0.03, rattle_amplitude=0.05), stillinger_weber_si())


@pytest.fixture(scope="module")
def trained():
    structures = _training_structures()
    return random_feature_model(structures, ["Si"], r_cut=4.0, hidden=8), structures


@pytest.fixture(scope="module")
def calculator(trained):
    return MLIPCalculator(trained[0], skin=0.0)


def _compressed(scale: float = 0.8):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    return atoms


def test_range_is_the_training_sets(trained):
    model, structures = trained
    features = compute_descriptors(model, structures)["Si"]
    np.testing.assert_array_equal(model.feature_range["Si"][:, 0], features.min(axis=0))
    np.testing.assert_array_equal(model.feature_range["Si"][:, 1], features.max(axis=0))


def test_training_structures_never_extrapolate(trained, calculator):
    _, structures = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calculator
            atoms.get_potential_energy()
            assert not calculator.results["extrapolation_count"].any()
            assert not calculator.results["extrapolation_excursion"].any()


def test_compressed_cell_extrapolates_as_defined(trained, calculator):
    model, _ = trained
    atoms = _compressed()
    atoms.calc = calculator
    with pytest.warns(ExtrapolationWarning, match="8 of 8 atoms extrapolate"):
        atoms.get_potential_energy()
    count = calculator.results["extrapolation_count"]
    excursion = calculator.results["extrapolation_excursion"]
    # the definition in numpy, on the batch path's descriptors
    g = compute_descriptors(model, [atoms])["Si"]
    low, high = model.feature_range["Si"].T
    outside = np.maximum(low - g, g - high)
    np.testing.assert_array_equal(count, (outside > 0).sum(axis=1))
    np.testing.assert_allclose(excursion, np.max(np.maximum(outside, 0) / (high - low), axis=1), rtol=1e-10)
    assert count.min() > 0


def test_raise_policy_and_off(trained):
    model, _ = trained
    atoms = _compressed()
    atoms.calc = MLIPCalculator(model, skin=0.0, extrapolation="raise")
    with pytest.raises(ExtrapolationError, match="outside the training range"):
        atoms.get_potential_energy()
    quiet = MLIPCalculator(model, skin=0.0, extrapolation="off")
    atoms.calc = quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        energy = atoms.get_potential_energy()
    assert "extrapolation_count" not in quiet.results
    flagged = MLIPCalculator(model, skin=0.0)
    with pytest.warns(ExtrapolationWarning):
        assert energy == pytest.approx(flagged.get_potential_energy(_compressed()), abs=1e-12)


def test_policy_needs_a_range(trained):
    model, _ = trained
    bare = Model(model.config, model.params)
    assert MLIPCalculator(bare, skin=0.0).extrapolation == "off"  # auto: nothing to compare with
    with pytest.raises(ValueError, match="extrapolation='warn' needs a model with a stored feature range"):
        MLIPCalculator(bare, extrapolation="warn")
    with pytest.raises(ValueError, match="extrapolation must be one of"):
        MLIPCalculator(model, extrapolation="sometimes")


def test_model_file_keeps_the_range(trained, tmp_path):
    model, _ = trained
    path = save_model(model, tmp_path / "si.mlip")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.feature_range["Si"], model.feature_range["Si"])
    assert load_model(save_model(Model(model.config, model.params), tmp_path / "bare.mlip")).feature_range is None
    wrong = with_feature_range(model, {"Si": np.zeros((3, model.config.symmetry_functions.n_features("Si")))})
    wrong.feature_range["Si"][0, 0] = 1.0  # G_min > G_max
    with pytest.raises(ValueError, match="G_min > G_max"):
        save_model(wrong, tmp_path / "wrong.mlip")
    with pytest.raises(ValueError, match="has shape"):
        save_model(Model(model.config, model.params, {"Si": np.zeros((2, 2))}), tmp_path / "shape.mlip")


def test_n2p2_files_carry_the_range(trained, tmp_path):
    model, structures = trained
    write_n2p2(model, tmp_path)  # scaling.data gets the model's own range
    back = read_n2p2(tmp_path)  # functions in n2p2's order: compare with back's own descriptors
    features = compute_descriptors(back, structures)["Si"]
    np.testing.assert_allclose(back.feature_range["Si"][:, 0], features.min(axis=0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(back.feature_range["Si"][:, 1], features.max(axis=0), rtol=1e-13, atol=1e-15)


def test_md_checks_flag_write_and_stop(trained, calculator, tmp_path):
    from ase.io import read

    from mlip.md.driver import run_md
    from mlip.md.settings import ExtrapolationChecks, MDSettings

    model, _ = trained
    settings = MDSettings(steps=10, block=5, temperature=0.0)
    frames = tmp_path / "flagged.extxyz"
    with pytest.warns(ExtrapolationWarning) as caught:
        result = run_md(model, _compressed(), settings, extrapolation=ExtrapolationChecks(5, frames=frames))
    assert [str(w.message).split(":")[0] for w in caught] == ["step 5", "step 10"]
    assert "8 of 8 atoms extrapolate" in str(caught[0].message)
    assert [r.step for r in result.extrapolation] == [5, 10]
    written = read(frames, index=":")
    assert [f.info["step"] for f in written] == [5, 10]
    # the compiled check agrees with the calculator's flags on the same frame
    last = written[-1]
    atoms = last.copy()
    atoms.calc = calculator
    calculator.reset()
    with pytest.warns(ExtrapolationWarning):
        atoms.get_potential_energy()
    np.testing.assert_array_equal(last.arrays["extrapolation_count"], calculator.results["extrapolation_count"])
    np.testing.assert_allclose(last.arrays["extrapolation_excursion"], calculator.results["extrapolation_excursion"],
                               rtol=1e-9)
    assert result.extrapolation[-1].values == int(calculator.results["extrapolation_count"].sum())
    # maxew: past the limit the run stops with the step named, after writing the frame
    stop = tmp_path / "stop.extxyz"
    with pytest.raises(ExtrapolationError, match=r"step 5: .* exceed the maximum of 3"):
        run_md(model, _compressed(), settings, extrapolation=ExtrapolationChecks(5, max_warnings=3, frames=stop))
    assert len(read(stop, index=":")) == 1


def test_md_check_options_are_validated(trained):
    from mlip.md.driver import run_md
    from mlip.md.settings import ExtrapolationChecks, MDSettings

    with pytest.raises(ValueError, match="non-negative integer"):
        ExtrapolationChecks(-1)
    with pytest.raises(ValueError, match="need checks"):
        ExtrapolationChecks(0, max_warnings=5)
    model, _ = trained
    with pytest.raises(ValueError, match="extrapolation checks='warn' needs a model with a stored feature range"):
        run_md(Model(model.config, model.params), _compressed(), MDSettings(steps=5, block=5),
               extrapolation=ExtrapolationChecks(5))
