"""Contrastive defect embeddings: translation vs defect-type distances and kNN accuracy.

Images (32 x 32, 0.5 Å pixels) of a square-lattice crystal with a vacancy,
interstitial, antisite, edge dislocation or no defect at a random lattice site
(:mod:`mlip.analysis.defects`); all images of one type are lattice translations of
each other with independent noise.  A small flax CNN is trained with a triplet loss
(positives: lattice translations of the anchor, negatives: other defect types) and
compared with raw pixels on held-out images (another seed):

* mean distance between images of one type (lattice translations) and between types;
* their ratio (scale-free), and kNN (k = 3) accuracy of the defect type.

    python3 benchmarks/analysis_defects.py [--steps 300] [--train 40] [--test 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

from analysis_common import finish


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train", type=int, default=40, help="training images per defect type")
    parser.add_argument("--test", type=int, default=20, help="held-out images per defect type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from mlip.analysis.defects import DEFECT_TYPES, defect_images, embedding_report, train_encoder

    start = time.perf_counter()
    train_images, train_labels, _ = defect_images(args.train, seed=args.seed)
    test_images, test_labels, _ = defect_images(args.test, seed=args.seed + 1)
    print(f"{len(train_images)} training and {len(test_images)} held-out images "
          f"{train_images.shape[1:]} in {time.perf_counter() - start:.1f} s")
    t0 = time.perf_counter()
    encoder = train_encoder(train_images, train_labels, steps=args.steps, seed=args.seed)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s on {jax.devices()[0].device_kind}; "
          f"triplet loss {encoder.losses[:10].mean():.3f} (first 10) -> {encoder.losses[-10:].mean():.3f} (last 10)")

    flat = (train_images.reshape(len(train_images), -1), test_images.reshape(len(test_images), -1))
    reports = {"raw pixels": embedding_report(flat[0], train_labels, flat[1], test_labels),
               "contrastive encoder": embedding_report(encoder.embed(train_images), train_labels,
                                                       encoder.embed(test_images), test_labels)}
    print(f"\n{'':<20s} {'within type':>12s} {'between':>10s} {'ratio':>7s} {'kNN acc':>8s}   within type, per type")
    results: dict = {"steps": args.steps, "n_train": len(train_images), "n_test": len(test_images)}
    for name, r in reports.items():
        per_type = " ".join(f"{k[:5]} {v:.2f}" for k, v in zip(DEFECT_TYPES, r.per_type_within))
        print(f"{name:<20s} {r.within_type:12.3f} {r.between_types:10.3f} {r.within_type / r.between_types:7.3f} "
              f"{r.knn_accuracy:8.3f}   {per_type}")
        results[name] = {"within_type": r.within_type, "between_types": r.between_types,
                         "knn_accuracy": r.knn_accuracy,
                         "per_type_within": dict(zip(DEFECT_TYPES, np.round(r.per_type_within, 4).tolist()))}
    return finish(results, args.json, start)


if __name__ == "__main__":
    raise SystemExit(main())
