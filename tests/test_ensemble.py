"""Ensemble models: members stacked on a leading axis, descriptors computed once.

References: every member evaluated on its own (a single-model calculator each);
the uncertainties from those members' values in numpy; an ensemble of identical
members has zero spread.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mlip.calculator import MLIPCalculator
from mlip.io import load_model, save_model
from mlip.model import Model, init_params, stack_models
from mlip.n2p2 import N2P2Error, write_n2p2
from conftest import random_structure

N_MEMBERS = 3


@pytest.fixture(scope="module")
def members(model):
    """Members: the session model's scaling with other random weights."""
    out = []
    for seed in range(N_MEMBERS):
        params = init_params(model.config, seed=10 + seed)
        params["feature_shift"], params["feature_scale"] = model.params["feature_shift"], model.params["feature_scale"]
        params["reference_energies"] = {e: v + 0.1 * seed for e, v in model.params["reference_energies"].items()}
        out.append(Model(model.config, params, model.feature_range))
    return out


@pytest.fixture(scope="module")
def ensemble(members):
    return stack_models(members)


def _evaluate(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), calc.results


def test_mean_and_spread_equal_the_members_one_by_one(members, ensemble):
    atoms = random_structure(seed=21)
    singles = [_evaluate(MLIPCalculator(m, skin=0.0, extrapolation="off"), atoms) for m in members]
    energies = np.array([s[0] for s in singles])
    forces = np.array([s[1] for s in singles])
    stresses = np.array([s[2] for s in singles])
    calc = MLIPCalculator(ensemble, skin=0.0, extrapolation="off", members=True)
    energy, force, stress, results = _evaluate(calc, atoms)
    assert energy == pytest.approx(energies.mean(), abs=1e-10)
    np.testing.assert_allclose(force, forces.mean(axis=0), atol=1e-10)
    np.testing.assert_allclose(stress, stresses.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(results["member_energy"], energies, atol=1e-10)
    np.testing.assert_allclose(results["member_forces"], forces, atol=1e-10)
    np.testing.assert_allclose(results["member_stress"], stresses, atol=1e-12)
    assert results["energy_uncertainty"] == pytest.approx(np.std(energies), abs=1e-10)
    devi_f = np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=-1), axis=0))
    np.testing.assert_allclose(results["forces_uncertainty"], devi_f, atol=1e-10)
    np.testing.assert_allclose(results["stress_uncertainty"], np.std(stresses, axis=0), atol=1e-12)
    assert results["energy_uncertainty"] > 0.05  # the members' offsets differ by 0.1 eV per atom
    # the mean model (what MD and LAMMPS use) is the members' mean, at the cost of one model
    cheap = MLIPCalculator(ensemble, skin=0.0, extrapolation="off", uncertainty="energy")
    energy_only, force_only, stress_only, cheap_results = _evaluate(cheap, atoms)
    assert energy_only == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(force_only, force, atol=1e-10)
    np.testing.assert_allclose(stress_only, stress, atol=1e-12)
    assert cheap_results["energy_uncertainty"] == pytest.approx(results["energy_uncertainty"], abs=1e-10)
    assert "forces_uncertainty" not in cheap_results


def test_identical_members_have_no_spread(members):
    same = stack_models([members[0]] * N_MEMBERS)
    atoms = random_structure(seed=22)
    energy, forces, _, results = _evaluate(MLIPCalculator(same, skin=0.0, extrapolation="off"), atoms)
    single_energy, single_forces, _, _ = _evaluate(MLIPCalculator(members[0], skin=0.0, extrapolation="off"), atoms)
    assert results["energy_uncertainty"] == pytest.approx(0.0, abs=1e-10)
    assert np.max(results["forces_uncertainty"]) < 1e-10
    assert np.max(results["stress_uncertainty"]) < 1e-12
    assert energy == pytest.approx(single_energy, abs=1e-10)
    np.testing.assert_allclose(forces, single_forces, atol=1e-10)


def test_ensemble_file_round_trip_and_members(ensemble, members, tmp_path):
    loaded = load_model(save_model(ensemble, tmp_path / "ensemble.mlip"))
    assert loaded.config.ensemble == N_MEMBERS
    for k, member in enumerate(members):
        for a, b in zip(jax.tree_util.tree_leaves(loaded.member(k).params), jax.tree_util.tree_leaves(member.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.member(0).config == members[0].config
    single = load_model(save_model(members[0], tmp_path / "single.mlip"))
    assert "ensemble" not in single.config.to_dict()  # single-model files keep their layout


def test_bad_ensembles_are_named(members, ensemble, tmp_path):
    from mlip.kernels.symmetry_functions import default_symmetry_functions
    from mlip.model import ModelConfig

    other = ModelConfig(default_symmetry_functions(("Si", "C"), r_cut=3.5), hidden_layers=(8, 8), r_min=0.8)
    with pytest.raises(ValueError, match="member 1 differs from member 0 in its descriptor sets"):
        stack_models([members[0], Model(other, init_params(other))])
    with pytest.raises(ValueError, match="at least two members"):
        stack_models(members[:1])
    with pytest.raises(ValueError, match="needs an ensemble model"):
        MLIPCalculator(members[0], uncertainty="forces")
    with pytest.raises(N2P2Error, match="export one member"):
        write_n2p2(ensemble, tmp_path)


def test_md_model_deviation_file_equals_the_calculator(members, ensemble, tmp_path):
    from ase.io import read

    from mlip.md.deviation import ModelDeviationError
    from mlip.md.driver import run_md
    from mlip.md.settings import ModelDeviationChecks, MDSettings
    from mlip.uncertainty import MODEL_DEVI_COLUMNS

    atoms = random_structure(seed=23)
    settings = MDSettings(steps=10, block=5, temperature=300.0, timestep=0.5)
    devi_file, dump = tmp_path / "model_devi.out", tmp_path / "candidates.extxyz"
    result = run_md(ensemble, atoms, settings,
                    deviation=ModelDeviationChecks(5, devi_file, dump_above=0.0, dump_file=dump))
    header, *lines = devi_file.read_text().splitlines()
    assert header.split()[1:] == list(MODEL_DEVI_COLUMNS)
    table = np.array([line.split() for line in lines], float)
    np.testing.assert_array_equal(table[:, 0], [5, 10])
    np.testing.assert_allclose(table, result.model_devi, rtol=1e-6)  # the file holds 7 digits
    # the last row from the calculator's member values on the written frame (DeePMD's formulas)
    frame = read(dump, index=-1)
    assert frame.info["step"] == 10
    calc = MLIPCalculator(ensemble, skin=0.0, extrapolation="off", members=True)
    frame.calc = calc
    frame.get_potential_energy()
    n = len(frame)
    forces = calc.results["member_forces"]
    devi_f = np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=-1), axis=0))
    np.testing.assert_allclose(frame.arrays["devi_f"], devi_f, rtol=1e-5, atol=1e-8)
    virial = -calc.results["member_stress"][:, [0, 5, 4, 5, 1, 3, 4, 3, 2]] * frame.get_volume() / n
    devi_v = np.std(virial, axis=0)
    expected = [devi_v.max(), devi_v.min(), np.linalg.norm(devi_v) / 3, devi_f.max(), devi_f.min(), devi_f.mean(),
                np.std(calc.results["member_energy"] / n)]
    # the frame went through extxyz text (positions to ~1e-8 Å), hence 1e-5
    np.testing.assert_allclose(result.model_devi[-1, 1:], expected, rtol=1e-5, atol=1e-8)
    # stop above: the run ends at the first row whose max_devi_f passes the threshold
    with pytest.raises(ModelDeviationError, match="step 5: .* above stop_above"):
        run_md(ensemble, atoms, settings, deviation=ModelDeviationChecks(5, stop_above=0.0))
    with pytest.raises(ValueError, match="needs an ensemble model"):
        run_md(members[0], atoms, settings, deviation=ModelDeviationChecks(5))
    with pytest.raises(ValueError, match="dump-above needs a file"):
        ModelDeviationChecks(5, dump_above=0.1)
