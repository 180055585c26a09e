"""Contrastive embeddings of crystal-defect images (flax encoder, triplet loss).

Structures: a square-lattice crystal (lattice constant ``a`` Å, ``layers`` atoms
per column along z, host element) with one defect near the middle of the field
of view: ``pristine``, ``vacancy`` (a missing column), ``interstitial`` (an extra
column at a cell centre), ``antisite`` (one column of the solute element) or
``dislocation`` (an edge dislocation, Burgers vector ``a x``, isotropic-elastic
displacement field with Poisson ratio 0.3).

Images: projected column intensities, as in annular dark-field STEM, on a
``size x size`` grid of ``a / pixels_per_cell`` Å pixels::

    I(p) = sum_atoms Z^1.7 exp(-|p - r_xy|^2 / (2 sigma^2)) / (layers * Z_host^1.7)

plus Gaussian pixel noise.  Moving the defect by a lattice vector moves the
image by ``pixels_per_cell`` pixels; such translations are the positives of the
triplet loss::

    L = mean(max(0, |f(a) - f(p)|^2 - |f(a) - f(n)|^2 + margin))

with embeddings ``f`` on the unit sphere, negatives being images of another
defect type.  kNN classification (scikit-learn) of the embeddings of held-out
images gives the accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ase import Atoms
from ase.data import atomic_numbers
from sklearn.neighbors import KNeighborsClassifier

DEFECT_TYPES = ("pristine", "vacancy", "interstitial", "antisite", "dislocation")
POISSON_RATIO = 0.3


@dataclass(frozen=True)
class ImageSettings:
    """Lattice and rendering parameters (lengths in Å)."""

    size: int = 32  # pixels per side
    pixels_per_cell: int = 4
    lattice_constant: float = 2.0
    layers: int = 2
    sigma: float = 0.45  # column width
    noise: float = 0.05  # pixel noise, in units of a host column's peak
    jitter: float = 0.03  # random displacement of every atom
    host: str = "Cu"
    solute: str = "Au"
    max_shift: int = 2  # defect placed up to this many cells from the centre

    @property
    def pixel(self) -> float:
        return self.lattice_constant / self.pixels_per_cell


def defect_structure(kind: str, site: tuple[int, int], settings: ImageSettings = ImageSettings()) -> Atoms:
    """The crystal with one ``kind`` defect at lattice ``site`` (cell indices of the
    field of view, whose lower-left corner is the origin); the crystal extends two
    cells beyond the field of view on each side."""
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {kind!r}: choose one of {DEFECT_TYPES}")
    a = settings.lattice_constant
    n = settings.size // settings.pixels_per_cell
    grid = np.arange(-2, n + 3)
    xy = np.array([(i, j) for i in grid for j in grid], dtype=float)
    site_xy = np.asarray(site, dtype=float)
    symbols = np.full(len(xy), settings.host, dtype=object)
    at_site = np.all(xy == site_xy, axis=1)
    if kind == "vacancy":
        xy, symbols = xy[~at_site], symbols[~at_site]
    elif kind == "interstitial":
        xy = np.vstack([xy, site_xy + 0.5])
        symbols = np.append(symbols, settings.host)
    elif kind == "antisite":
        symbols[at_site] = settings.solute
    elif kind == "dislocation":
        xy = xy + edge_dislocation_displacement(xy - (site_xy + 0.5), burgers=1.0)
    positions = np.array([(x * a, y * a, k * a) for (x, y), k in
                          ((p, k) for p in xy for k in range(settings.layers))])
    return Atoms(np.repeat(symbols, settings.layers).tolist(), positions=positions)


def edge_dislocation_displacement(xy: np.ndarray, burgers: float, nu: float = POISSON_RATIO) -> np.ndarray:
    """Isotropic-elastic displacement ``[n, 2]`` of an edge dislocation along z with
    Burgers vector ``burgers`` along x, at points ``xy`` relative to the core."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = np.maximum(x * x + y * y, 1e-12)
    ux = burgers / (2 * np.pi) * (np.arctan2(y, x) + x * y / (2 * (1 - nu) * r2))
    uy = -burgers / (2 * np.pi) * ((1 - 2 * nu) / (4 * (1 - nu)) * np.log(r2) + (x * x - y * y) / (4 * (1 - nu) * r2))
    return np.column_stack([ux, uy])


def render(atoms: Atoms, settings: ImageSettings = ImageSettings(), rng: np.random.Generator | None = None) -> np.ndarray:
    """Projected column-intensity image ``[size, size]`` (see module docstring);
    ``rng`` adds the position jitter and pixel noise, ``None`` renders exactly."""
    xy = atoms.positions[:, :2]
    if rng is not None:
        xy = xy + rng.normal(0.0, settings.jitter, xy.shape)
    weights = np.array([atomic_numbers[s] for s in atoms.get_chemical_symbols()], dtype=float) ** 1.7
    weights /= settings.layers * atomic_numbers[settings.host] ** 1.7
    centres = (np.arange(settings.size) + 0.5) * settings.pixel
    gx = np.exp(-((centres[None, :] - xy[:, :1]) ** 2) / (2 * settings.sigma**2))  # [atoms, size]
    gy = np.exp(-((centres[None, :] - xy[:, 1:]) ** 2) / (2 * settings.sigma**2))
    image = np.einsum("a,ax,ay->yx", weights, gx, gy)
    if rng is not None:
        image = image + rng.normal(0.0, settings.noise, image.shape)
    return image


def defect_images(n_per_type: int, seed: int = 0, settings: ImageSettings = ImageSettings(),
                  kinds: Sequence[str] = DEFECT_TYPES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images [n, size, size], labels [n] (index into kinds), sites [n, 2])``: every
    kind at random lattice sites within ``max_shift`` cells of the centre, with noise."""
    rng = np.random.default_rng(seed)
    centre = settings.size // settings.pixels_per_cell // 2
    images, labels, sites = [], [], []
    for label, kind in enumerate(kinds):
        for _ in range(n_per_type):
            site = tuple(int(centre + s) for s in rng.integers(-settings.max_shift, settings.max_shift + 1, 2))
            images.append(render(defect_structure(kind, site, settings), settings, rng))
            labels.append(label)
            sites.append(site)
    return np.array(images, dtype=np.float32), np.array(labels), np.array(sites)


class Encoder(nn.Module):
    """Convolutions (2x2 average pooling between them), mean- and max-pooled over the
    image, then a dense map to the unit sphere."""

    channels: tuple[int, ...] = (8, 16)
    embedding: int = 16

    @nn.compact
    def __call__(self, images):
        x = images[..., None]
        for n, width in enumerate(self.channels):
            if n:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Conv(width, (3, 3))(x))
        pooled = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
        z = nn.Dense(self.embedding)(nn.relu(nn.Dense(32)(pooled)))
        return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def init_params(module: nn.Module, sample, seed: int = 0) -> dict:
    """LeCun-normal kernels (variance 1 / fan-in) and zero biases, drawn with numpy
    on the shapes of ``module.init``: compiling flax's own initialisers costs
    ~15 s on a loaded 2-core CPU, longer than the training itself."""
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), sample)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if getattr(path[-1], "key", None) == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0.0, fan_in**-0.5, leaf.shape), leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def triplet_loss(anchor, positive, negative, margin: float):
    """Mean hinge ``max(0, |a - p|^2 - |a - n|^2 + margin)`` over the batch."""
    d_pos = jnp.sum((anchor - positive) ** 2, axis=-1)
    d_neg = jnp.sum((anchor - negative) ** 2, axis=-1)
    return jnp.mean(jnp.maximum(d_pos - d_neg + margin, 0.0))


def sample_triplets(labels: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """``[batch, 3]`` indices (anchor, positive of the same label, negative of another label)."""
    by_label = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    anchors = rng.integers(len(labels), size=batch)
    rows = []
    for anchor in anchors:
        same = by_label[labels[anchor]]
        positive = rng.choice(same[same != anchor]) if len(same) > 1 else anchor
        negative = rng.choice(np.flatnonzero(labels != labels[anchor]))
        rows.append((anchor, positive, negative))
    return np.array(rows)


@dataclass
class TrainedEncoder:
    """An encoder and its parameters; ``losses`` per step."""

    module: Encoder
    params: dict
    losses: np.ndarray

    @cached_property
    def _apply(self):
        return jax.jit(self.module.apply)

    def embed(self, images) -> np.ndarray:
        """Embeddings ``[n, embedding]`` (unit vectors) of ``images [n, size, size]``."""
        return np.asarray(self._apply(self.params, jnp.asarray(images, jnp.float32)))


def train_encoder(images: np.ndarray, labels: np.ndarray, steps: int = 300, batch: int = 32,
                  margin: float = 0.5, learning_rate: float = 3e-3, seed: int = 0,
                  module: Encoder = Encoder()) -> TrainedEncoder:
    """Train ``module`` with the triplet loss on ``images`` (Adam, optax)."""
    images = jnp.asarray(images, jnp.float32)
    params = init_params(module, images[:1], seed)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, images, triplets):
        def loss_fn(p):
            embedded = module.apply(p, images[triplets.T.ravel()]).reshape(3, triplets.shape[0], -1)
            return triplet_loss(*embedded, margin)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, images, jnp.asarray(sample_triplets(labels, batch, rng)))
        losses.append(float(loss))
    return TrainedEncoder(module, params, np.array(losses))


@dataclass(frozen=True)
class EmbeddingReport:
    """Mean embedding distances and kNN accuracy on held-out images.

    Attributes:
        within_type: mean distance between images of one type (lattice translations + noise).
        between_types: mean distance between images of different types.
        knn_accuracy: fraction of held-out images whose type kNN predicts correctly.
        per_type_within: mean within-type distance of each type.
    """

    within_type: float
    between_types: float
    knn_accuracy: float
    per_type_within: np.ndarray


def embedding_report(train_embeddings, train_labels, test_embeddings, test_labels,
                     n_neighbors: int = 3) -> EmbeddingReport:
    """Distances among the test embeddings and kNN accuracy (fitted on the training ones)."""
    test_embeddings = np.asarray(test_embeddings, dtype=float).reshape(len(test_labels), -1)
    train_embeddings = np.asarray(train_embeddings, dtype=float).reshape(len(train_labels), -1)
    distances = np.linalg.norm(test_embeddings[:, None] - test_embeddings[None], axis=-1)
    same = test_labels[:, None] == test_labels[None]
    off_diagonal = ~np.eye(len(test_labels), dtype=bool)
    per_type = np.array([distances[np.ix_(test_labels == k, test_labels == k)][off_diagonal[np.ix_(
        test_labels == k, test_labels == k)]].mean() for k in np.unique(test_labels)])
    knn = KNeighborsClassifier(n_neighbors=n_neighbors).fit(train_embeddings, train_labels)
    accuracy = float(np.mean(knn.predict(test_embeddings) == test_labels))
    return EmbeddingReport(float(distances[same & off_diagonal].mean()), float(distances[~same].mean()),
                           accuracy, per_type)
