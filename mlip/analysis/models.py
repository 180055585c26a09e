"""scikit-learn pipelines for composition models and their cross-validated errors.

Every pipeline optionally standardises its inputs first (``StandardScaler``:
zero mean, unit variance per feature, fitted inside each training fold, so
cross-validation never sees the held-out points' statistics).  The models are
scikit-learn's own, unchanged:

* ``"linear"``: ordinary least squares (``LinearRegression``);
* ``"ridge"``: ``RidgeCV``, penalty chosen by efficient leave-one-out CV over ``alphas``;
* ``"kernel_ridge"``: ``KernelRidge`` with an RBF kernel;
* ``"svr"``: ``SVR`` with an RBF kernel;
* :func:`knn_classifier`: ``KNeighborsClassifier``.

Errors (MAE, RMSE) are in the unit of the target and come from
:func:`sklearn.model_selection.cross_val_predict`, leave-one-out by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from mlip.plots import ParityPanel, error_summary, parity_plot

DEFAULT_ALPHAS = tuple(np.logspace(-6, 3, 28))


def regression_pipeline(kind: str, scale: bool = True, alphas=DEFAULT_ALPHAS, **params) -> Pipeline:
    """A regression pipeline (see module docstring); ``params`` go to the estimator
    (e.g. ``alpha``, ``gamma`` for ``kernel_ridge``; ``C``, ``epsilon``, ``gamma`` for ``svr``)."""
    if kind == "linear":
        estimator: BaseEstimator = LinearRegression(**params)
    elif kind == "ridge":
        estimator = RidgeCV(alphas=np.asarray(alphas, dtype=float), **params)
    elif kind == "kernel_ridge":
        estimator = KernelRidge(kernel="rbf", **params)
    elif kind == "svr":
        estimator = SVR(kernel="rbf", **params)
    else:
        raise ValueError(f"unknown model kind {kind!r}: choose 'linear', 'ridge', 'kernel_ridge' or 'svr'")
    return make_pipeline(StandardScaler(), estimator) if scale else make_pipeline(estimator)


def knn_classifier(n_neighbors: int = 3, scale: bool = True, **params) -> Pipeline:
    """k-nearest-neighbour classifier, standardised inputs unless ``scale=False``."""
    estimator = KNeighborsClassifier(n_neighbors=n_neighbors, **params)
    return make_pipeline(StandardScaler(), estimator) if scale else make_pipeline(estimator)


@dataclass(frozen=True)
class CVReport:
    """Cross-validated predictions of one model.

    Attributes:
        name: label of the model.
        reference: targets.
        predicted: each target predicted by the model fitted without it (its fold).
        mae, rmse: errors, unit of the targets.
    """

    name: str
    reference: np.ndarray
    predicted: np.ndarray
    mae: float
    rmse: float

    def row(self, unit: str = "") -> str:
        return f"{self.name:<28s} MAE {self.mae:10.4g} {unit:<8s} RMSE {self.rmse:10.4g} {unit}"


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need features [n, d] and n targets, got shapes {x.shape} and {y.shape}")
    if len(y) < 3:
        raise ValueError(f"need at least 3 samples for cross-validation, got {len(y)}")
    return x, y


def cross_validate(pipeline: Pipeline, x, y, cv=None, name: str = "") -> CVReport:
    """Cross-validated MAE and RMSE of ``pipeline`` (``cv``: leave-one-out by default,
    an int for k-fold, or any scikit-learn splitter)."""
    x, y = _check_xy(x, y)
    predicted = cross_val_predict(pipeline, x, y.astype(float), cv=LeaveOneOut() if cv is None else cv)
    mae, rmse = error_summary(y, predicted)
    return CVReport(name or pipeline.steps[-1][0], y.astype(float), predicted, mae, rmse)


def holdout_errors(pipeline: Pipeline, x_train, y_train, x_test, y_test, name: str = "") -> CVReport:
    """MAE and RMSE on a held-out test set of ``pipeline`` fitted to the training set."""
    x_train, y_train = np.asarray(x_train, dtype=float), np.asarray(y_train, dtype=float)
    predicted = pipeline.fit(x_train, y_train).predict(np.asarray(x_test, dtype=float))
    mae, rmse = error_summary(np.asarray(y_test, dtype=float), predicted)
    return CVReport(name or pipeline.steps[-1][0], np.asarray(y_test, dtype=float), predicted, mae, rmse)


def classification_accuracy(pipeline: Pipeline, x, labels, cv=None) -> tuple[float, np.ndarray]:
    """Cross-validated (leave-one-out by default) accuracy and the predicted labels."""
    x, labels = _check_xy(x, labels)
    predicted = cross_val_predict(pipeline, x, labels, cv=LeaveOneOut() if cv is None else cv)
    return float(np.mean(predicted == labels)), predicted


def parity_plot_reports(path: str | os.PathLike, reports: list[CVReport], unit: str = "") -> Path:
    """One parity panel per report (cross-validated prediction vs reference)."""
    return parity_plot(path, [ParityPanel(r.name, r.reference, r.predicted, unit) for r in reports])
