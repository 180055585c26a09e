"""Descriptor engineering: perovskite tolerance and octahedral factors, power-law fits.

For a perovskite ABX3 with Shannon ionic radii r_A, r_B, r_X (Å)::

    Goldschmidt tolerance factor   t  = (r_A + r_X) / (sqrt(2) (r_B + r_X))
    octahedral factor              mu = r_B / r_X

Radii come from Shannon's 1976 table as bundled with mendeleev (``ionicradii``;
``ionic_radius`` in pm, converted to Å here), keyed by charge, coordination
(Roman numeral, e.g. ``"XII"`` for A, ``"VI"`` for B and X) and spin.

A power law ``y = a * x1^b1 * x2^b2 ...`` is fitted by ordinary least squares in
log space, ``ln y = ln a + sum_k b_k ln x_k``, giving the exponents with their
standard errors ``sqrt(diag(s^2 (A^T A)^-1))``, ``s^2`` the residual variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _ionic_radii():
    from mendeleev.fetch import fetch_table

    radii = fetch_table("ionicradii")
    symbols = fetch_table("elements")[["atomic_number", "symbol"]]
    return radii.merge(symbols, on="atomic_number")


def shannon_radius(symbol: str, charge: int, coordination: str, spin: str | None = None) -> float:
    """Shannon ionic radius, Å, of ``symbol`` with ``charge`` at ``coordination``
    (Roman numeral, e.g. ``"VI"``); ``spin`` ``"HS"``/``"LS"`` where the table splits them.

    Raises:
        ValueError: no such entry (the message lists the coordinations that exist).
    """
    table = _ionic_radii()
    rows = table[(table.symbol == symbol) & (table.charge == int(charge))]
    if rows.empty:
        raise ValueError(f"no Shannon radius for {symbol} with charge {charge:+d}")
    matching = rows[rows.coordination == coordination]
    if spin is not None:
        matching = matching[matching.spin == spin]
    if len(matching) != 1:
        options = sorted({(c, s or "") for c, s in zip(rows.coordination, rows.spin.fillna(""))})
        what = "no" if matching.empty else "several (give spin='HS' or 'LS')"
        raise ValueError(f"{what} Shannon radius for {symbol}{charge:+d} at coordination {coordination!r}"
                         f"{'' if spin is None else f', spin {spin!r}'}; the table has {options}")
    return float(matching.ionic_radius.iloc[0]) / 100.0


def tolerance_factor(r_a: float, r_b: float, r_x: float) -> float:
    """Goldschmidt tolerance factor from the A, B and X radii (any one length unit)."""
    return float((r_a + r_x) / (np.sqrt(2.0) * (r_b + r_x)))


def octahedral_factor(r_b: float, r_x: float) -> float:
    """Octahedral factor ``r_B / r_X``."""
    return float(r_b / r_x)


def perovskite_factors(a: tuple[str, int], b: tuple[str, int], x: tuple[str, int] = ("O", -2),
                       coordinations: tuple[str, str, str] = ("XII", "VI", "VI")) -> tuple[float, float]:
    """``(t, mu)`` of ABX3 from ``(symbol, charge)`` of each site and Shannon radii at
    the given coordinations (A 12-fold, B and X 6-fold by default)."""
    r_a, r_b, r_x = (shannon_radius(s, q, c) for (s, q), c in zip((a, b, x), coordinations))
    return tolerance_factor(r_a, r_b, r_x), octahedral_factor(r_b, r_x)


@dataclass(frozen=True)
class PowerLawFit:
    """``y = prefactor * prod_k x_k^exponents[k]`` with standard errors.

    Attributes:
        prefactor: ``a`` (unit of y).
        exponents: ``b_k``.
        exponent_errors: standard errors of ``b_k`` (NaN with no residual degrees of freedom).
        log_prefactor_error: standard error of ``ln a``.
        r2: coefficient of determination in log space.
    """

    prefactor: float
    exponents: np.ndarray
    exponent_errors: np.ndarray
    log_prefactor_error: float
    r2: float

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float).reshape(len(x), -1)
        return self.prefactor * np.prod(x ** self.exponents, axis=1)


def fit_power_law(x, y) -> PowerLawFit:
    """Fit ``y = a * prod_k x_k^b_k`` by linear least squares on ``ln y`` (see module docstring).

    Args:
        x: ``[n, k]`` positive inputs (or ``[n]`` for one variable).
        y: ``[n]`` positive targets.

    Raises:
        ValueError: non-positive values, shape mismatch, fewer points than parameters.
    """
    x = np.asarray(x, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need x [n, k] and y [n], got shapes {x.shape} and {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power-law fit in log space needs strictly positive x and y")
    design = np.hstack([np.ones((len(y), 1)), np.log(x)])
    if len(y) < design.shape[1]:
        raise ValueError(f"need at least {design.shape[1]} points for {x.shape[1]} exponents, got {len(y)}")
    target = np.log(y)
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residuals = target - design @ coefficients
    dof = len(y) - design.shape[1]
    variance = residuals @ residuals / dof if dof > 0 else np.nan
    errors = np.sqrt(variance * np.diag(np.linalg.pinv(design.T @ design)))
    total = np.sum((target - target.mean()) ** 2)
    r2 = 1.0 - residuals @ residuals / total if total > 0 else 1.0
    return PowerLawFit(float(np.exp(coefficients[0])), coefficients[1:], errors[1:], float(errors[0]), float(r2))
