"""Free-energy difference between two crystal structures of one element: fcc and hcp
copper at 300 K, by Frenkel-Ladd thermodynamic integration with an mlip potential.

Everything is made here, nothing downloaded: ASE's EMT potential labels rattled and
strained fcc and hcp cells, a random-feature mlip model is fitted to them in
seconds (:func:`mlip.training.linear.random_feature_model`), both lattices are
relaxed with the model (equation of state), and :func:`mlip.ti.frenkel_ladd` gives
each phase's absolute classical free energy, so

    ΔF(T) = F_hcp - F_fcc = ΔE_static + ΔF_vib.

The script prints both free energies with their statistical errors, the classical
harmonic free energies of the same model from its Γ-point phonons (the anharmonic
remainder is what Frenkel-Ladd adds), ΔF, the model's and EMT's static energy
difference (each at its own equation-of-state minimum), and writes a plot of
<dU/dλ> along the Einstein → model path of both phases::

    python3 examples/free_energy_fcc_hcp.py [--temperature 300] [--plot fcc_hcp.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState

from mlip.calculator import MLIPCalculator
from mlip.ti import frenkel_ladd, harmonic_crystal
from mlip.training.generate import label
from mlip.training.linear import random_feature_model

A_FCC = 3.59  # EMT Cu, Å


def phase(name: str, a: float):
    """Conventional fcc cell repeated 2x2x2 (32 atoms) or orthorhombic hcp 4x2x2 (32 atoms)
    at nearest-neighbour distance ``a / sqrt 2`` (ideal c/a for hcp)."""
    if name == "fcc":
        return bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
    return bulk("Cu", "hcp", a=a / np.sqrt(2.0), c=a / np.sqrt(2.0) * np.sqrt(8.0 / 3.0), orthorhombic=True).repeat(
        (2, 1, 2))


def training_structures(seed: int = 0):
    rng = np.random.default_rng(seed)
    structures = []
    for name in ("fcc", "hcp"):
        for _ in range(10):
            atoms = phase(name, A_FCC * rng.uniform(0.97, 1.03))
            strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
            atoms.set_cell(atoms.cell.array @ (strain + strain.T) / 2, scale_atoms=True)
            atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
            structures.append(atoms)
    return label(structures, EMT())


def relaxed(calc, name: str):
    """The phase at ``calc``'s equilibrium volume (Birch-Murnaghan fit, ideal c/a for
    hcp), and its energy per atom, eV."""
    scale, energies = np.linspace(0.97, 1.03, 9), []
    for s in scale:
        atoms = phase(name, A_FCC * s)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy() / len(atoms))
    volumes = (A_FCC * scale) ** 3 / 4.0
    v0, e0, _ = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return phase(name, (4.0 * v0) ** (1.0 / 3.0)), e0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--points", type=int, default=6, help="Gauss-Legendre nodes")
    parser.add_argument("--production", type=int, default=2000, help="steps per node")
    parser.add_argument("--plot", default="fcc_hcp_free_energy.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    model = random_feature_model(training_structures(), ["Cu"], r_cut=5.5, hidden=96, n_radial=8, n_angular=4)
    results, static, harmonic, emt = {}, {}, {}, {}
    for name in ("fcc", "hcp"):
        atoms, static[name] = relaxed(MLIPCalculator(model), name)
        harmonic[name] = harmonic_crystal(model, atoms, args.temperature)["F_harmonic"] / len(atoms)
        results[name] = frenkel_ladd(model, atoms, args.temperature, n_points=args.points,
                                     production=args.production, progress=True)
        emt[name] = relaxed(EMT(), name)[1]

    f = {name: r.per_atom for name, r in results.items()}
    err = {name: r.free_energy_error / r.n_atoms for name, r in results.items()}
    delta_f = f["hcp"] - f["fcc"]
    delta_err = float(np.hypot(err["hcp"], err["fcc"]))
    delta_e = static["hcp"] - static["fcc"]
    print(f"T = {args.temperature} K, {results['fcc'].n_atoms} atoms per phase")
    for name in ("fcc", "hcp"):
        print(f"  {name}: F = {f[name]:.5f} ± {err[name]:.5f} eV/atom, harmonic {harmonic[name]:.5f} eV/atom, "
              f"static minimum {static[name]:.5f} eV/atom")
    delta_harmonic = harmonic["hcp"] - harmonic["fcc"]
    print(f"ΔF(hcp - fcc) = {delta_f * 1e3:.2f} ± {delta_err * 1e3:.2f} meV/atom (harmonic {delta_harmonic * 1e3:.2f}); "
          f"static ΔE = {delta_e * 1e3:.2f} meV/atom (EMT itself: {(emt['hcp'] - emt['fcc']) * 1e3:.2f}); "
          f"vibrational part {(delta_f - delta_e) * 1e3:.2f} meV/atom")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, r in results.items():
        axis.errorbar(r.ti.lambdas, r.ti.mean_dudl / r.n_atoms, yerr=r.ti.error_dudl / r.n_atoms, marker="o",
                      capsize=3, label=f"{name}: F = {f[name]:.4f} eV/atom")
    axis.set_xlabel("λ (Einstein crystal → model)")
    axis.set_ylabel("<dU/dλ> (eV/atom)")
    axis.set_title(f"Cu at {args.temperature:g} K: ΔF(hcp-fcc) = {delta_f * 1e3:.2f} ± {delta_err * 1e3:.2f} meV/atom",
                   fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "temperature_K": args.temperature, "free_energy_eV_per_atom": f, "error_eV_per_atom": err,
            "delta_f_meV_per_atom": delta_f * 1e3, "delta_f_error_meV_per_atom": delta_err * 1e3,
            "static_delta_e_meV_per_atom": delta_e * 1e3, "harmonic_eV_per_atom": harmonic,
            "harmonic_delta_f_meV_per_atom": delta_harmonic * 1e3,
            "emt_static_delta_e_meV_per_atom": (emt["hcp"] - emt["fcc"]) * 1e3}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
