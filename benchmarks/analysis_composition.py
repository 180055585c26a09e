"""The three lessons of composition models, with numbers, on EMT alloy data.

Data: structures -> potential -> properties -> composition model.  Random fcc
supercells (32 sites) of binary and ternary alloys of ASE's EMT elements, their
unrelaxed mixing energies (meV/atom) and bulk moduli (GPa) from Birch-Murnaghan
fits (:mod:`mlip.analysis.data`), featurised with element fractions and
composition-weighted means and spreads of mendeleev's elemental properties.

1. kNN classification of the sign of the mixing energy, leave-one-out accuracy,
   raw features (melting points in K dominate the distance) vs standardised.
2. A peaked property: the mixing energy of one binary, E(x) ~ x (1 - x), as a
   function of the fraction x: linear regression vs RBF kernel ridge and SVR (LOOCV).
3. Very few points: ridge (penalty by CV) vs plain least squares on 11 ternary
   features from 8 training compositions, test error on the rest, over many draws.

    python3 benchmarks/analysis_composition.py [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from analysis_common import finish


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--plots", default=None, help="folder for parity plots")
    parser.add_argument("--draws", type=int, default=50, help="random training sets in lesson 3")
    args = parser.parse_args(argv)

    import numpy as np

    from mlip.analysis.composition import CompositionFeaturizer
    from mlip.analysis.data import EMT_ELEMENTS, alloy_dataset, composition_grid
    from mlip.analysis.models import (
        classification_accuracy,
        cross_validate,
        holdout_errors,
        knn_classifier,
        parity_plot_reports,
        regression_pipeline,
    )

    start = time.perf_counter()
    binaries = [{a: x, b: 1 - x} for a, b in itertools.combinations(EMT_ELEMENTS, 2) for x in np.arange(1, 8) / 8]
    binary_data = alloy_dataset(binaries, seed=0)
    peak_pair = ("Ag", "Ni")
    series = alloy_dataset([{peak_pair[0]: x, peak_pair[1]: 1 - x} for x in np.arange(0, 33) / 32], seed=1000)
    ternary = ("Cu", "Ag", "Au")
    ternary_data = alloy_dataset(composition_grid(ternary, 1 / 8), seed=2000)
    n_structures = len(binary_data) + len(series) + len(ternary_data)
    print(f"EMT data: {n_structures} random fcc alloys (32 atoms, 5 volumes each) in "
          f"{time.perf_counter() - start:.1f} s")
    results: dict = {"n_alloys": n_structures}

    # 1. kNN, raw vs standardised
    featurizer = CompositionFeaturizer(EMT_ELEMENTS)
    x = featurizer.transform([r.fractions for r in binary_data])
    mixing = np.array([r.mixing_energy for r in binary_data]) * 1000.0
    labels = (mixing < 0).astype(int)
    print(f"\n1. kNN (k=5) of sign(E_mix) over {len(labels)} binaries ({labels.sum()} with E_mix < 0), LOOCV accuracy")
    for scale in (False, True):
        accuracy, _ = classification_accuracy(knn_classifier(5, scale=scale), x, labels)
        name = "standardised" if scale else "raw features"
        print(f"   {name:<14s} {accuracy:.3f}")
        results[f"knn_accuracy_{'scaled' if scale else 'raw'}"] = accuracy
    print(f"   majority class {max(labels.mean(), 1 - labels.mean()):.3f}")
    results["knn_majority"] = float(max(labels.mean(), 1 - labels.mean()))

    # 2. peaked property: linear vs kernel
    fraction = np.array([[r.fractions.get(peak_pair[0], 0.0)] for r in series])
    e_series = np.array([r.mixing_energy for r in series]) * 1000.0
    print(f"\n2. E_mix of {peak_pair[0]}(x){peak_pair[1]}(1-x), {len(series)} compositions, peak "
          f"{e_series.max():.1f} meV/atom; LOOCV on x alone")
    reports = [cross_validate(regression_pipeline("linear"), fraction, e_series, name="linear"),
               cross_validate(regression_pipeline("kernel_ridge", alpha=1e-2, gamma=1.0), fraction, e_series,
                              name="kernel ridge (RBF)"),
               cross_validate(regression_pipeline("svr", C=300.0, epsilon=1.0, gamma=1.0), fraction, e_series,
                              name="SVR (RBF)")]
    for report in reports:
        print("   " + report.row("meV/atom"))
        results[f"peaked_{report.name.split()[0]}_mae"] = report.mae
    results["peaked_max_mev"] = float(e_series.max())
    if args.plots:
        print("   parity plot:", parity_plot_reports(Path(args.plots) / "peaked_parity.png", reports, "meV/atom"))

    # 3. very few points: ridge vs least squares
    tern_featurizer = CompositionFeaturizer(ternary)
    xt = tern_featurizer.transform([r.fractions for r in ternary_data])
    for target, unit, values in (("E_mix", "meV/atom", np.array([r.mixing_energy for r in ternary_data]) * 1000.0),
                                 ("B", "GPa", np.array([r.bulk_modulus for r in ternary_data]))):
        rng = np.random.default_rng(0)
        maes = {"least squares": [], "ridge (CV penalty)": []}
        for _ in range(args.draws):
            order = rng.permutation(len(values))
            train, test = order[:8], order[8:]
            for name, kind in (("least squares", "linear"), ("ridge (CV penalty)", "ridge")):
                maes[name].append(holdout_errors(regression_pipeline(kind), xt[train], values[train],
                                                 xt[test], values[test]).mae)
        print(f"\n3. {target} of {'-'.join(ternary)}: {xt.shape[1]} features, 8 training and "
              f"{len(values) - 8} test compositions, {args.draws} draws: test MAE {unit}")
        for name, values_ in maes.items():
            print(f"   {name:<20s} median {np.median(values_):9.3f}   mean {np.mean(values_):9.3f}")
            results[f"few_{target}_{name.split()[0]}_median_mae"] = float(np.median(values_))
        wins = np.mean(np.array(maes["ridge (CV penalty)"]) < np.array(maes["least squares"]))
        print(f"   ridge better in {wins:.0%} of draws")
        results[f"few_{target}_ridge_wins"] = float(wins)
    return finish(results, args.json, start)


if __name__ == "__main__":
    raise SystemExit(main())
