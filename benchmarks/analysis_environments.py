"""DBSCAN families of atomic environments in the mlearn Si training set, and
extrapolation flags for test and out-of-distribution structures.

Environments are mlip's symmetry-function vectors (default grid of
``default_symmetry_functions(("Si",))``: 8 radial + 16 angular functions, r_c = 6 Å;
the descriptor, not a trained network, is what is clustered), standardised per
function.  DBSCAN (``eps`` in standardised units, default at the 85th percentile
of the 9th-neighbour distances) gives core, border and noise environments; a new
environment farther than ``eps`` from every training core environment is flagged
as unlike the training set.  Coordination numbers (neighbours within 2.75 Å)
label the rows for reading the families.

    python3 benchmarks/analysis_environments.py [--eps E] [--min-samples 10] [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analysis_common import finish

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "si_mlearn"
BOND_CUTOFF = 2.75  # Å, between the first (2.35) and second (3.84) shells of diamond Si


def coordination(atoms):
    import numpy as np
    from ase.neighborlist import neighbor_list

    return np.bincount(neighbor_list("i", atoms, BOND_CUTOFF), minlength=len(atoms))


def out_of_distribution():
    """Structures the mlearn set does not hold, each with a reason."""
    from ase.build import bulk

    return {
        "diamond a=5.43 (in-distribution control)": bulk("Si", "diamond", a=5.43, cubic=True).repeat(2),
        "diamond compressed 10 % (a=4.89)": bulk("Si", "diamond", a=4.89, cubic=True).repeat(2),
        "bcc (a=3.08, CN 8)": bulk("Si", "bcc", a=3.08, cubic=True).repeat(3),
        "simple cubic (a=2.53, CN 6)": bulk("Si", "sc", a=2.53).repeat(4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=None, help="default: 85th percentile of k-distances")
    parser.add_argument("--min-samples", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plots", default=None)
    args = parser.parse_args(argv)
    if not (SHARED / "train.xyz").exists():
        print(f"skipped: {SHARED / 'train.xyz'} not found")
        return 0

    import numpy as np
    from ase.io import read
    from sklearn.preprocessing import StandardScaler

    from mlip.analysis.clustering import EnvironmentClustering, cluster_map, environments, k_distances
    from mlip.model import Model

    start = time.perf_counter()
    train = read(SHARED / "train.xyz", ":")
    test = read(SHARED / "test.xyz", ":")
    extra = out_of_distribution()
    model = Model.create(("Si",))
    every = environments(model, [*train, *test, *extra.values()])
    print(f"{len(every.features)} environments ({len(train)} train, {len(test)} test, {len(extra)} extra "
          f"structures), {every.features.shape[1]} symmetry functions, in {time.perf_counter() - start:.1f} s")
    in_train = every.structure < len(train)
    features = every.features[in_train]
    per_structure = [coordination(a) for a in train]
    cn = np.array([per_structure[s][i] for s, i in zip(every.structure[in_train], every.atom[in_train])])
    config = np.array([train[s].info.get("config_type", "?") for s in every.structure[in_train]])
    cn_class = np.where(cn < 4, "CN<4", np.where(cn > 4, "CN>4", "CN4"))

    kd = k_distances(StandardScaler().fit_transform(features), args.min_samples - 1)
    eps = args.eps if args.eps is not None else float(np.quantile(kd, 0.85))
    print(f"k-distance (k={args.min_samples - 1}) quantiles 50/85/95 %: "
          + " / ".join(f"{q:.2f}" for q in np.quantile(kd, [0.5, 0.85, 0.95])) + f"; eps = {eps:.2f}")
    clustering = EnvironmentClustering(eps, args.min_samples)
    clusters = clustering.fit(features)
    print(f"\nDBSCAN eps={eps:.2f}, min_samples={args.min_samples}: {clusters.n_clusters} clusters, "
          f"{clusters.core.sum()} core, {clusters.border.sum()} border, {clusters.noise.sum()} noise\n")
    print(clusters.table(np.char.add(np.char.add(config, " "), cn_class)))
    print("\nnoise fraction by coordination:")
    results: dict = {"eps": eps, "min_samples": args.min_samples, "n_clusters": clusters.n_clusters,
                     "n_core": int(clusters.core.sum()), "n_border": int(clusters.border.sum()),
                     "n_noise": int(clusters.noise.sum()), "noise_fraction_by_cn": {}, "unfamiliar": {}}
    for n in sorted(set(cn.tolist())):
        rows = cn == n
        print(f"   CN {n}: {clusters.noise[rows].mean():6.1%} of {rows.sum()}")
        results["noise_fraction_by_cn"][int(n)] = float(clusters.noise[rows].mean())

    print("\nenvironments farther than eps from every training core environment:")
    test_rows = (every.structure >= len(train)) & (every.structure < len(train) + len(test))
    test_config = np.array([test[s - len(train)].info.get("config_type", "?") for s in every.structure[test_rows]])
    flagged = clustering.unfamiliar(every.features[test_rows])
    for group in sorted(set(test_config)):
        print(f"   test {group:<36s} {flagged[test_config == group].mean():6.1%} of {(test_config == group).sum()}")
        results["unfamiliar"][f"test {group}"] = float(flagged[test_config == group].mean())
    for k, name in enumerate(extra):
        rows = every.structure == len(train) + len(test) + k
        fraction = float(clustering.unfamiliar(every.features[rows]).mean())
        distance, _ = clustering.nearest_core(every.features[rows])
        print(f"   {name:<41s} {fraction:6.1%} of {rows.sum()} (median distance {np.median(distance):.2f})")
        results["unfamiliar"][name] = fraction
    if args.plots:
        print("cluster map:", cluster_map(Path(args.plots) / "si_environments.png", clustering.transform(features),
                                          clusters, "mlearn Si training environments"))
    return finish(results, args.json, start)


if __name__ == "__main__":
    raise SystemExit(main())
