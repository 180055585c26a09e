"""Defect images, the triplet loss and a small contrastive encoder (mlip.analysis.defects)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mendeleev")

import jax.numpy as jnp  # noqa: E402

from mlip.analysis.defects import (  # noqa: E402
    DEFECT_TYPES,
    ImageSettings,
    defect_images,
    defect_structure,
    edge_dislocation_displacement,
    embedding_report,
    render,
    sample_triplets,
    train_encoder,
    triplet_loss,
)

SETTINGS = ImageSettings()


def test_structures_have_the_defect():
    site = (4, 4)
    counts = {kind: len(defect_structure(kind, site)) for kind in DEFECT_TYPES}
    layers = SETTINGS.layers
    assert counts["vacancy"] == counts["pristine"] - layers
    assert counts["interstitial"] == counts["pristine"] + layers
    assert counts["antisite"] == counts["dislocation"] == counts["pristine"]
    antisite = defect_structure("antisite", site)
    assert antisite.get_chemical_symbols().count(SETTINGS.solute) == layers
    with pytest.raises(ValueError, match="unknown defect type"):
        defect_structure("grain boundary", site)


def test_edge_dislocation_closure_failure_is_the_burgers_vector():
    """A circuit around the core picks up u(+0) - u(-0) = b across the cut (x < 0, y = 0)."""
    above = edge_dislocation_displacement(np.array([[-3.0, 1e-9]]), burgers=1.0)
    below = edge_dislocation_displacement(np.array([[-3.0, -1e-9]]), burgers=1.0)
    np.testing.assert_allclose(above - below, [[1.0, 0.0]], atol=1e-8)


def test_render_integral_and_lattice_translation():
    pristine = render(defect_structure("pristine", (4, 4)))
    # a lattice translation of a defect is an image shift by pixels_per_cell pixels
    vacancy = render(defect_structure("vacancy", (3, 4)))
    moved = render(defect_structure("vacancy", (4, 4)))
    inner = slice(8, 24)
    np.testing.assert_allclose(np.roll(vacancy, SETTINGS.pixels_per_cell, axis=1)[inner, inner], moved[inner, inner],
                               atol=1e-12)
    # each host column integrates to 2 pi sigma^2 / pixel^2 (normalised weight 1)
    expected = 2 * np.pi * SETTINGS.sigma**2 / SETTINGS.pixel**2
    assert (pristine - moved).sum() == pytest.approx(expected, rel=1e-6)
    # the antisite column is brighter by (Z_Au / Z_Cu)^1.7
    antisite = render(defect_structure("antisite", (4, 4)))
    assert (antisite - pristine).sum() == pytest.approx(expected * ((79 / 29) ** 1.7 - 1), rel=1e-6)


def test_triplet_loss_and_sampling():
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(6, 4)) for _ in range(3))
    expected = np.mean(np.maximum(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 0.3, 0.0))
    assert float(triplet_loss(jnp.asarray(a), jnp.asarray(p), jnp.asarray(n), 0.3)) == pytest.approx(expected)
    labels = np.repeat(np.arange(3), 4)
    triplets = sample_triplets(labels, 50, rng)
    assert np.all(labels[triplets[:, 0]] == labels[triplets[:, 1]])
    assert np.all(triplets[:, 0] != triplets[:, 1])
    assert np.all(labels[triplets[:, 0]] != labels[triplets[:, 2]])


def test_encoder_separates_defect_types():
    settings = ImageSettings(size=24)
    train_images, train_labels, _ = defect_images(12, seed=0, settings=settings)
    test_images, test_labels, _ = defect_images(6, seed=1, settings=settings)
    encoder = train_encoder(train_images, train_labels, steps=40, batch=16, seed=0)
    assert encoder.losses[-10:].mean() < 0.5 * encoder.losses[:5].mean()
    embedded = encoder.embed(np.concatenate([train_images, test_images]))  # one compilation
    report = embedding_report(embedded[:len(train_images)], train_labels, embedded[len(train_images):], test_labels)
    assert report.within_type < 0.5 * report.between_types
    assert report.knn_accuracy >= 0.8
