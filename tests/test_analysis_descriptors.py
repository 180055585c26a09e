"""Shannon radii, tolerance / octahedral factors and power-law fits (mlip.analysis.descriptors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mendeleev")

from mlip.analysis.descriptors import (  # noqa: E402
    fit_power_law,
    octahedral_factor,
    perovskite_factors,
    shannon_radius,
    tolerance_factor,
)


def test_shannon_radii_match_shannon_1976():
    # Shannon, Acta Cryst. A32, 751 (1976): Sr2+ XII 1.44, Ti4+ VI 0.605, O2- VI 1.40,
    # Fe2+ VI high spin 0.78, low spin 0.61 (Å)
    assert shannon_radius("Sr", 2, "XII") == pytest.approx(1.44)
    assert shannon_radius("Ti", 4, "VI") == pytest.approx(0.605)
    assert shannon_radius("O", -2, "VI") == pytest.approx(1.40)
    assert shannon_radius("Fe", 2, "VI", "HS") == pytest.approx(0.78)
    assert shannon_radius("Fe", 2, "VI", "LS") == pytest.approx(0.61)
    with pytest.raises(ValueError, match="spin"):
        shannon_radius("Fe", 2, "VI")
    with pytest.raises(ValueError, match="the table has"):
        shannon_radius("Sr", 2, "III")
    with pytest.raises(ValueError, match="charge"):
        shannon_radius("Sr", 5, "VI")


def test_perovskite_factors_by_hand():
    t, mu = perovskite_factors(("Sr", 2), ("Ti", 4))
    assert t == pytest.approx((1.44 + 1.40) / (math.sqrt(2) * (0.605 + 1.40)))
    assert mu == pytest.approx(0.605 / 1.40)
    assert tolerance_factor(1.0, math.sqrt(2) - 1.0, 1.0) == pytest.approx(2 / (math.sqrt(2) * math.sqrt(2)))
    assert octahedral_factor(0.5, 2.0) == 0.25


def test_power_law_exact_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 5.0, (10, 3))
    y = 3.7 * x[:, 0] ** 1.5 * x[:, 1] ** -0.25 * x[:, 2] ** 2.0
    fit = fit_power_law(x, y)
    np.testing.assert_allclose(fit.exponents, [1.5, -0.25, 2.0], atol=1e-10)
    assert fit.prefactor == pytest.approx(3.7, rel=1e-10)
    np.testing.assert_allclose(fit.predict(x), y, rtol=1e-10)
    assert fit.r2 == pytest.approx(1.0)


def test_power_law_uncertainties_cover_the_truth():
    """Noisy synthetic data: the standard errors match the spread of the estimates
    over repeated draws, and the true exponents lie within 3 standard errors."""
    truth = np.array([0.8, -1.2])
    estimates, errors = [], []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0.5, 4.0, (40, 2))
        y = 2.0 * np.prod(x**truth, axis=1) * np.exp(rng.normal(0.0, 0.05, 40))
        fit = fit_power_law(x, y)
        estimates.append(fit.exponents)
        errors.append(fit.exponent_errors)
        assert np.all(np.abs(fit.exponents - truth) < 4 * fit.exponent_errors)
    np.testing.assert_allclose(np.std(estimates, axis=0), np.mean(errors, axis=0), rtol=0.3)


def test_power_law_bad_input():
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([[1.0], [-2.0], [3.0]], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_power_law([[1.0, 2.0], [2.0, 3.0]], [1.0, 2.0])
    one = fit_power_law([1.0, 2.0, 4.0], [3.0, 12.0, 48.0])  # y = 3 x^2, one variable as a vector
    assert one.exponents[0] == pytest.approx(2.0) and one.prefactor == pytest.approx(3.0)
