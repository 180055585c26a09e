"""Composition model end to end: EMT alloys -> properties -> features -> kernel ridge -> shap.

Computes the unrelaxed mixing energies of random fcc Cu-Ag-Au-Ni alloys with
ASE's EMT, featurises the compositions (fractions, means and spreads of
elemental properties), cross-validates ridge and RBF kernel ridge, writes a parity
plot, and attributes the kernel model's predictions to the features with shap.

    python3 examples/analysis/composition_model.py [OUTDIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mlip.analysis.composition import CompositionFeaturizer
from mlip.analysis.data import alloy_dataset, composition_grid
from mlip.analysis.interpret import shap_feature_values, shap_summary_plot
from mlip.analysis.models import cross_validate, parity_plot_reports, regression_pipeline


def main(outdir: str = "analysis_out") -> None:
    out = Path(outdir)
    elements = ("Cu", "Ag", "Au", "Ni")
    records = alloy_dataset(composition_grid(elements, 0.25), seed=0)
    featurizer = CompositionFeaturizer(elements, ("melting_point", "en_pauling", "atomic_radius"),
                                       include_fractions=False)
    x = featurizer.transform([r.fractions for r in records])
    y = np.array([r.mixing_energy for r in records]) * 1000.0  # meV/atom
    print(f"{len(records)} alloys, E_mix from {y.min():.1f} to {y.max():.1f} meV/atom")

    reports = [cross_validate(regression_pipeline("ridge"), x, y, name="ridge"),
               cross_validate(regression_pipeline("kernel_ridge", alpha=1e-2, gamma=0.1), x, y, name="kernel ridge")]
    for report in reports:
        print(report.row("meV/atom"))
    print("parity plot:", parity_plot_reports(out / "parity.png", reports, "meV/atom"))

    model = regression_pipeline("kernel_ridge", alpha=1e-2, gamma=0.1).fit(x, y)
    background = x[np.random.default_rng(0).choice(len(x), 10, replace=False)]
    values = shap_feature_values(model.predict, x[:12], background)
    print("mean |SHAP| (meV/atom):", dict(zip(featurizer.feature_names, np.abs(values).mean(0).round(2))))
    print("SHAP summary:", shap_summary_plot(out / "shap.png", values, featurizer.feature_names,
                                             "kernel ridge, E_mix"))


if __name__ == "__main__":
    main(*sys.argv[1:])
