"""mlip.analysis composition features, EMT alloy data and scikit-learn model reports."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mendeleev")

from ase.calculators.emt import EMT  # noqa: E402
from sklearn.linear_model import Ridge, RidgeCV  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from mlip.analysis._extra import require  # noqa: E402
from mlip.analysis.composition import CompositionFeaturizer, formula_string, parse_formula  # noqa: E402
from mlip.analysis.data import (  # noqa: E402
    alloy_record,
    composition_grid,
    equation_of_state,
    pure_element,
    random_fcc_alloy,
    site_counts,
)
from mlip.analysis.models import (  # noqa: E402
    classification_accuracy,
    cross_validate,
    holdout_errors,
    knn_classifier,
    parity_plot_reports,
    regression_pipeline,
)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    with pytest.raises(ImportError, match=r"needs sklearn, no_such_module_xyz.*pip install -e '\.\[analysis\]'"):
        require("sklearn", "no_such_module_xyz", "numpy")


def test_core_never_imports_analysis():
    import ast
    from pathlib import Path

    import mlip

    root = Path(mlip.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "analysis" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("mlip.analysis")]
    assert offenders == []


def test_parse_formula():
    assert parse_formula("Al3Cu") == {"Al": 0.75, "Cu": 0.25}
    assert parse_formula("Cu0.25Au0.75") == {"Au": 0.75, "Cu": 0.25}
    assert parse_formula({"Ni": 2, "Al": 2}) == {"Al": 0.5, "Ni": 0.5}
    assert parse_formula("CuCu") == {"Cu": 1.0}
    assert formula_string({"Cu": 0.75, "Au": 0.25}) == "Au0.25Cu0.75"
    for bad in ("", "al3", "Al3-Cu", "Xx2"):
        with pytest.raises(ValueError):
            parse_formula(bad)


def test_features_against_hand_computation():
    # Literature values, independent of the library table: melting points (K) and
    # Pauling electronegativities of Al and Cu.
    t_al, t_cu, en_al, en_cu = 933.47, 1357.77, 1.61, 1.90
    featurizer = CompositionFeaturizer(("Al", "Cu", "Ni"), ("melting_point", "en_pauling"))
    features = featurizer.transform(["Al3Cu", "Ni"])
    assert featurizer.feature_names == ["x_Al", "x_Cu", "x_Ni", "mean_melting_point", "mean_en_pauling",
                                        "spread_melting_point", "spread_en_pauling"]
    mean_t = 0.75 * t_al + 0.25 * t_cu
    mean_en = 0.75 * en_al + 0.25 * en_cu
    expected = [0.75, 0.25, 0.0, mean_t, mean_en,
                math.sqrt(0.75 * (t_al - mean_t) ** 2 + 0.25 * (t_cu - mean_t) ** 2),
                math.sqrt(0.75 * (en_al - mean_en) ** 2 + 0.25 * (en_cu - mean_en) ** 2)]
    np.testing.assert_allclose(features[0], expected, rtol=2e-4)
    np.testing.assert_allclose(features[1, 5:], 0.0, atol=1e-9)  # a pure element has no spread
    with pytest.raises(ValueError, match="not in the featurizer's elements"):
        featurizer.transform(["AuCu"])
    with pytest.raises(ValueError, match="unknown elemental propert"):
        CompositionFeaturizer(("Al",), ("no_such_property",))


def test_site_counts_and_grid():
    assert site_counts({"Cu": 0.5, "Au": 0.5}, 32) == {"Au": 16, "Cu": 16}
    counts = site_counts({"Al": 1 / 3, "Cu": 1 / 3, "Ni": 1 / 3}, 32)
    assert sum(counts.values()) == 32 and sorted(counts.values()) == [10, 11, 11]
    # compositions of 3 elements in steps of 1/4: C(4 + 2, 2) = 15
    grid = composition_grid(("Al", "Cu", "Ni"), 0.25)
    assert len(grid) == 15 and all(math.isclose(sum(c.values()), 1.0) for c in grid)
    with pytest.raises(ValueError, match="divide 1"):
        composition_grid(("Al", "Cu"), 0.3)


def test_alloy_record_against_direct_emt():
    record = alloy_record("AuCu", repeat=1, seed=3)
    atoms = random_fcc_alloy("AuCu", repeat=1, seed=3)
    e0_cu, a_cu = pure_element("Cu")
    e0_au, _ = pure_element("Au")
    # The fitted equilibrium: energy at V0 directly from EMT, and dE/dV = 0 there.
    scale = (record.volume * len(atoms) / atoms.get_volume()) ** (1 / 3)
    at_v0 = atoms.copy()
    at_v0.set_cell(atoms.cell * scale, scale_atoms=True)
    at_v0.calc = EMT()
    energy = at_v0.get_potential_energy() / len(atoms)
    assert record.mixing_energy == pytest.approx(energy - 0.5 * (e0_cu + e0_au), abs=2e-4)
    assert abs(np.trace(at_v0.get_stress(voigt=False))) / 3 < 2e-4  # eV/Å^3 (~0.03 GPa)
    # pure Cu: zero mixing energy and EMT's lattice constant (3.59 Å) and bulk modulus (~134 GPa)
    pure = alloy_record("Cu", repeat=1)
    assert pure.mixing_energy == pytest.approx(0.0, abs=1e-6)
    assert a_cu == pytest.approx((4 * pure.volume) ** (1 / 3), rel=1e-6)
    assert 120 < pure.bulk_modulus < 150
    e, v, b = equation_of_state(at_v0, EMT())
    assert v == pytest.approx(record.volume, rel=1e-3)


@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    return x, np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * rng.normal(size=12)


def test_loocv_matches_manual_loop(regression_data):
    x, y = regression_data
    report = cross_validate(regression_pipeline("ridge"), x, y)
    manual = []
    for k in range(len(y)):
        train = np.arange(len(y)) != k
        scaler = StandardScaler().fit(x[train])
        model = RidgeCV(alphas=np.logspace(-6, 3, 28)).fit(scaler.transform(x[train]), y[train])
        manual.append(model.predict(scaler.transform(x[k:k + 1]))[0])
    np.testing.assert_allclose(report.predicted, manual, rtol=1e-10)
    assert report.mae == pytest.approx(np.mean(np.abs(np.array(manual) - y)))
    assert report.rmse == pytest.approx(np.sqrt(np.mean((np.array(manual) - y) ** 2)))


def test_pipelines_are_sklearn_models_unchanged(regression_data):
    x, y = regression_data
    ours = holdout_errors(regression_pipeline("ridge", scale=False, alphas=(0.3,)), x[:8], y[:8], x[8:], y[8:])
    theirs = Ridge(alpha=0.3).fit(x[:8], y[:8]).predict(x[8:])
    np.testing.assert_allclose(ours.predicted, theirs, rtol=1e-10)
    for kind, params in (("linear", {}), ("kernel_ridge", {"alpha": 0.1, "gamma": 0.5}), ("svr", {"C": 3.0})):
        report = cross_validate(regression_pipeline(kind, **params), x, y, cv=4)
        assert np.isfinite(report.mae) and report.rmse >= report.mae
    with pytest.raises(ValueError, match="unknown model kind"):
        regression_pipeline("forest")


def test_knn_loocv_accuracy_matches_manual_loop():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 1, (8, 2)), rng.normal(2.5, 1, (8, 2))]) * [1.0, 100.0]
    labels = np.repeat([0, 1], 8)
    accuracy, predicted = classification_accuracy(knn_classifier(3, scale=False), x, labels)
    manual = [KNeighborsClassifier(3).fit(np.delete(x, k, 0), np.delete(labels, k)).predict(x[k:k + 1])[0]
              for k in range(len(labels))]
    np.testing.assert_array_equal(predicted, manual)
    assert accuracy == pytest.approx(np.mean(np.array(manual) == labels))


def test_parity_plot_written(tmp_path, regression_data):
    x, y = regression_data
    report = cross_validate(regression_pipeline("linear"), x, y, name="linear")
    path = parity_plot_reports(tmp_path / "parity.png", [report], unit="eV")
    assert path.stat().st_size > 1000
