"""DBSCAN on distance matrices and on mlip symmetry-function environments (mlip.analysis.clustering)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mendeleev")

from ase.build import bulk, fcc100  # noqa: E402

from mlip.analysis.clustering import (  # noqa: E402
    EnvironmentClustering,
    cluster_map,
    dbscan_precomputed,
    environments,
    feature_distances,
    k_distances,
)
from mlip.kernels.symmetry_functions import default_symmetry_functions  # noqa: E402
from mlip.model import Model  # noqa: E402


def test_core_border_noise_on_a_constructed_case():
    # eps 0.15, min_samples 3 (self included), points within eps of each point:
    #   0.0: {0.0, 0.1} -> border; 0.1, 0.2: three -> core; 0.3: {0.2, 0.3, 0.42} -> core;
    #   0.42: {0.3, 0.42} -> border of the first cluster; 5.0: alone -> noise;
    #   2.0 2.1 2.2: a second cluster with core 2.1 and borders 2.0, 2.2.
    points = np.array([0.0, 0.1, 0.2, 0.3, 0.42, 5.0, 2.0, 2.1, 2.2])
    distances = np.abs(points[:, None] - points[None])
    clusters = dbscan_precomputed(distances, eps=0.15, min_samples=3)
    np.testing.assert_array_equal(clusters.core, [False, True, True, True, False, False, False, True, False])
    np.testing.assert_array_equal(clusters.border, [True, False, False, False, True, False, True, False, True])
    np.testing.assert_array_equal(clusters.noise, [False] * 5 + [True] + [False] * 3)
    assert clusters.n_clusters == 2
    assert len(set(clusters.labels[:5])) == 1 and len(set(clusters.labels[6:])) == 1
    assert clusters.labels[0] != clusters.labels[6]
    assert "noise" in clusters.table([str(p) for p in points])
    with pytest.raises(ValueError, match="symmetric"):
        dbscan_precomputed(distances - 1.0, eps=0.1)


def test_feature_distances_are_scaled_euclidean():
    x = np.array([[0.0, 0.0], [1.0, 100.0], [2.0, 300.0]])
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(feature_distances(x), np.linalg.norm(z[:, None] - z[None], axis=-1))
    np.testing.assert_allclose(feature_distances(x, scale=False)[0, 1], np.hypot(1.0, 100.0))


@pytest.fixture(scope="module")
def copper():
    model = Model.create(symmetry_functions=default_symmetry_functions(("Cu",), r_cut=4.5, n_radial=5,
                                                                       n_angular=2))
    rng = np.random.default_rng(0)
    train = []
    for k in range(3):
        crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        crystal.rattle(0.02, seed=k)
        train.append(crystal)
    surface = fcc100("Cu", (2, 2, 8), vacuum=6.0, periodic=True)  # 32 atoms like the bulk: one compilation
    train.append(surface)
    liquid = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    liquid.positions += rng.normal(0.0, 0.35, liquid.positions.shape)
    return model, train, liquid


@pytest.fixture(scope="module")
def copper_environments(copper):
    """Training environments and queries (the liquid, then the first crystal again),
    from one descriptor call."""
    model, train, liquid = copper
    every = environments(model, [*train, liquid, train[0]])

    def part(structures):
        rows = np.isin(every.structure, structures)
        return type(every)(every.element, every.features[rows], every.structure[rows] - structures[0], every.atom[rows])

    return part(list(range(len(train)))), part([len(train), len(train) + 1])


def test_environment_rows_map_to_structures(copper, copper_environments):
    """Rows against the first radial function computed by hand (ASE neighbour list):
    G = sum_j exp(-eta (r_ij - r_s)^2) tanh^3(1 - r_ij / r_c) / tanh^3(1)."""
    from ase.neighborlist import neighbor_list

    model, train, _ = copper
    env, query = copper_environments
    assert len(env.features) == sum(len(a) for a in train)
    first = model.config.symmetry_functions.functions_of("Cu")[0]
    assert first.kind == 2
    for s in range(len(train)):
        i, d = neighbor_list("id", train[s], first.r_cut)
        terms = np.exp(-first.eta * (d - first.r_shift) ** 2) * np.tanh(1 - d / first.r_cut) ** 3 / np.tanh(1) ** 3
        by_hand = np.bincount(i, terms, minlength=len(train[s]))
        rows = env.structure == s
        np.testing.assert_allclose(env.features[rows, 0], by_hand[env.atom[rows]], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(query.features[query.structure == 1], env.features[env.structure == 0],
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="not one of"):
        environments(model, train, "Si")


def test_bulk_surface_families_and_unfamiliar_flags(copper, copper_environments, tmp_path):
    model, train, liquid = copper
    env, query = copper_environments
    groups = np.where(env.structure == 3, "surface", "bulk")
    clustering = EnvironmentClustering(eps=2.0, min_samples=5)
    clusters = clustering.fit(env.features)
    # every bulk environment falls in one cluster, which holds no outer surface atom
    surface_z = train[3].positions[:, 2]
    outer = (env.structure == 3) & np.isin(env.atom, np.flatnonzero(
        (surface_z < surface_z.min() + 0.1) | (surface_z > surface_z.max() - 0.1)))
    bulk_labels = set(clusters.labels[groups == "bulk"])
    assert len(bulk_labels) == 1 and -1 not in bulk_labels
    assert not set(clusters.labels[outer]) & bulk_labels
    # nearest-core distances against brute force in the standardised space
    distance, _ = clustering.nearest_core(query.features)
    scaled = clustering.transform(env.features)[clusters.core]
    brute = np.linalg.norm(clustering.transform(query.features)[:, None] - scaled[None], axis=-1).min(axis=1)
    np.testing.assert_allclose(distance, brute, rtol=1e-10)
    flagged = clustering.unfamiliar(query.features)
    assert flagged[query.structure == 0].mean() > 0.5  # liquid-like: mostly unlike training
    assert not flagged[query.structure == 1].any()  # a training crystal: familiar
    assert np.all(np.diff(k_distances(clustering.transform(env.features), 4)) >= 0)
    assert cluster_map(tmp_path / "map.png", clustering.transform(env.features), clusters).stat().st_size > 1000
    assert "surface" in clusters.table(groups)
