"""DBSCAN on composition distance matrices and on atomic environments.

DBSCAN (scikit-learn) with radius ``eps`` and ``min_samples``: a point with at
least ``min_samples`` points (itself included) within ``eps`` is a *core*
point; a non-core point within ``eps`` of a core point is a *border* point of
that core point's cluster; every other point is *noise* (label -1).

Atomic environments are mlip's own symmetry-function vectors (raw, from
:func:`mlip.batch.compute_descriptors`), standardised per function.  An
environment whose distance to the nearest *core* environment of the training
set exceeds ``eps`` lies outside every family DBSCAN found: an extrapolation
warning for the potential.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from sklearn.cluster import DBSCAN
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from mlip.analysis.plotting import new_figure, save_figure
from mlip.model import Model
from mlip.batch import compute_descriptors


@dataclass(frozen=True)
class Clusters:
    """DBSCAN result: ``labels`` (cluster index, -1 for noise) and the ``core`` mask."""

    labels: np.ndarray
    core: np.ndarray
    eps: float
    min_samples: int

    @property
    def noise(self) -> np.ndarray:
        return self.labels == -1

    @property
    def border(self) -> np.ndarray:
        return (self.labels >= 0) & ~self.core

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max(initial=-1) + 1)

    def table(self, groups: Sequence[str] | None = None) -> str:
        """One line per cluster (and noise): size, core and border counts, and the
        ``groups`` (e.g. ``config_type`` of each point's structure) it holds."""
        lines = [f"{'cluster':>8s} {'size':>6s} {'core':>6s} {'border':>6s}  groups"]
        for label in [*range(self.n_clusters), -1]:
            members = self.labels == label
            if not members.any():
                continue
            held = "" if groups is None else ", ".join(
                f"{g} {n}" for g, n in Counter(np.asarray(groups)[members]).most_common())
            name = "noise" if label == -1 else str(label)
            lines.append(f"{name:>8s} {members.sum():6d} {(members & self.core).sum():6d} "
                         f"{(members & self.border).sum():6d}  {held}")
        return "\n".join(lines)


def _clusters(fitted: DBSCAN, n: int) -> Clusters:
    core = np.zeros(n, dtype=bool)
    core[fitted.core_sample_indices_] = True
    return Clusters(fitted.labels_.copy(), core, float(fitted.eps), int(fitted.min_samples))


def dbscan_precomputed(distances, eps: float, min_samples: int = 5) -> Clusters:
    """DBSCAN on a square, symmetric, non-negative distance matrix."""
    distances = np.asarray(distances, dtype=float)
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"need a square distance matrix, got shape {distances.shape}")
    if np.any(distances < 0) or not np.allclose(distances, distances.T) or np.any(np.diag(distances) != 0):
        raise ValueError("the distance matrix must be symmetric, non-negative and zero on the diagonal")
    fitted = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(distances)
    return _clusters(fitted, len(distances))


def feature_distances(features, scale: bool = True) -> np.ndarray:
    """Euclidean distance matrix of feature rows (e.g. composition features),
    standardised per column first unless ``scale=False``."""
    features = np.asarray(features, dtype=float)
    return pairwise_distances(StandardScaler().fit_transform(features) if scale else features)


@dataclass(frozen=True)
class Environments:
    """Symmetry-function vectors of one element's atoms in a list of structures.

    Attributes:
        features: ``[n, n_features(element)]`` raw symmetry functions.
        structure: index of each row's structure.
        atom: index of each row's atom within its structure.
    """

    element: str
    features: np.ndarray
    structure: np.ndarray
    atom: np.ndarray


def environments(model: Model, structures: Sequence[Atoms], element: str | None = None) -> Environments:
    """Descriptors of every ``element`` atom (default: the model's only element) in ``structures``."""
    if element is None:
        if len(model.elements) != 1:
            raise ValueError(f"the model has elements {list(model.elements)}: name the element to cluster")
        element = model.elements[0]
    if element not in model.elements:
        raise ValueError(f"element {element!r} is not one of the model's {list(model.elements)}")
    features = compute_descriptors(model, structures)[element]  # rows in structure, then atom order
    rows = [(s, i) for s, atoms in enumerate(structures)
            for i, symbol in enumerate(atoms.get_chemical_symbols()) if symbol == element]
    index = np.array(rows, dtype=int).reshape(-1, 2)
    return Environments(element, features, index[:, 0], index[:, 1])


def k_distances(features, k: int) -> np.ndarray:
    """Sorted distance of every row to its ``k``-th nearest other row (the usual
    DBSCAN ``eps`` heuristic with ``k = min_samples - 1``: pick eps at the knee)."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return np.sort(distances[:, k])


class EnvironmentClustering:
    """Standardise environments, cluster them with DBSCAN and flag unfamiliar ones.

    ``eps`` is in units of the standardised features (each symmetry function
    divided by its spread over the training environments).
    """

    def __init__(self, eps: float, min_samples: int = 10):
        self.eps = float(eps)
        self.min_samples = int(min_samples)

    def fit(self, features) -> Clusters:
        """Cluster the training environments ``[n, d]``; returns their :class:`Clusters`."""
        features = np.asarray(features, dtype=float)
        self.scaler = StandardScaler().fit(features)
        scaled = self.scaler.transform(features)
        self.clusters = _clusters(DBSCAN(eps=self.eps, min_samples=self.min_samples).fit(scaled), len(scaled))
        if not self.clusters.core.any():
            raise ValueError(f"no core environments at eps={self.eps}, min_samples={self.min_samples}: raise eps")
        self._core_labels = self.clusters.labels[self.clusters.core]
        self._core = NearestNeighbors(n_neighbors=1).fit(scaled[self.clusters.core])
        return self.clusters

    def transform(self, features) -> np.ndarray:
        """Standardised features (the space ``eps`` is measured in)."""
        return self.scaler.transform(np.asarray(features, dtype=float))

    def nearest_core(self, features) -> tuple[np.ndarray, np.ndarray]:
        """Distance (standardised units) of each environment to the nearest training
        core environment, and that core environment's cluster."""
        distance, index = self._core.kneighbors(self.transform(features))
        return distance[:, 0], self._core_labels[index[:, 0]]

    def unfamiliar(self, features) -> np.ndarray:
        """True where an environment is farther than ``eps`` from every training core environment."""
        return self.nearest_core(features)[0] > self.eps


def cluster_map(path: str | os.PathLike, features, clusters: Clusters, title: str = "") -> Path:
    """Scatter of the first two principal components coloured by cluster (noise grey,
    border points hollow)."""
    import matplotlib
    from sklearn.decomposition import PCA

    projected = PCA(n_components=2).fit_transform(np.asarray(features, dtype=float))
    fig = new_figure()
    ax = fig.subplots()
    noise = clusters.noise
    ax.scatter(*projected[noise].T, s=6, c="0.7", label=f"noise ({noise.sum()})", rasterized=True)
    cmap = matplotlib.colormaps["tab10"]
    for label in range(clusters.n_clusters):
        members = clusters.labels == label
        color = cmap(label % 10)
        ax.scatter(*projected[members & clusters.core].T, s=8, color=color, label=f"{label} ({members.sum()})",
                   rasterized=True)
        ax.scatter(*projected[members & clusters.border].T, s=14, facecolors="none", edgecolors=color, rasterized=True)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or f"DBSCAN eps={clusters.eps:g}, min_samples={clusters.min_samples}")
    ax.legend(fontsize=7, markerscale=2)
    return save_figure(fig, path)
