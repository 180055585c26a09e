"""TorchANI's side of bench_peers: its ANI AEV (``torchani.AEVComputer``, pure
PyTorch "pyaev" strategy, eager mode) and a 24-25-25-1 tanh network, energy and
forces by ``torch.autograd.grad``.

ANI's functions are not Behler-Parrinello type 3 or 9; the closest configuration:

* radial: ``ANIRadial`` 0.25 exp(-eta (r - r_s)^2) f_c(r) with mlip's 8 shifts
  r_s = 1..6 Å and width eta = 0.98 Å^-2 (type 2 up to the factor 0.25);
* angular: ``ANIAngular.cover_linearly`` 2 ((1 + cos(theta' - theta_s)) / 2)^zeta
  exp(-eta ((r_ij + r_ik)/2 - r_s)^2) f_c f_c with cos theta' = 0.95 cos theta,
  4 shifts r_s from 1 Å (spacing 1.25 Å, eta = 0.32 Å^-2) x 4 sections theta_s,
  zeta = 4: 16 functions with no r_jk factor, like type 9.  TorchANI allows one
  eta and one zeta per angular term, so the four widths and zeta ∈ {1, 4} of the
  BP set become four shifts and four angle sections.

Cosine cutoff 6 Å (the angular one 1e-6 Å shorter: TorchANI requires it strictly
below the radial cutoff).  Periodic boundaries through ``cell``/``pbc`` of its
cell list, built once outside the timed calls (as for mlip); each call forms the
pair vectors from the positions and the stored periodic shifts.
"""

from __future__ import annotations

import math
from importlib.metadata import version

import harness
import torch
from torchani.aev import AEVComputer
from torchani.aev._terms import ANIAngular, ANIRadial
from torchani.neighbors import Neighbors, reconstruct_shifts

ANGULAR_SHIFTS, ANGULAR_SECTIONS, ANGULAR_ZETA = 4, 4, 4.0


def main() -> None:
    args = harness.parse_args(["ani"])
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    positions, cell, _ = harness.load_structure(args.structure)
    n = len(positions)

    spacing = (harness.R_CUT - 1.0) / ANGULAR_SHIFTS
    radial = ANIRadial(float(harness.RADIAL_ETA), [float(r) for r in harness.RADIAL_SHIFTS], harness.R_CUT)
    angular = ANIAngular.cover_linearly(start=1.0, cutoff=harness.R_CUT - 1e-6, eta=1.0 / (2.0 * spacing**2),
                                        zeta=ANGULAR_ZETA, num_shifts=ANGULAR_SHIFTS,
                                        num_sections=ANGULAR_SECTIONS)
    aev = AEVComputer(radial, angular, num_species=1, strategy="pyaev", neighborlist="cell_list").to(dtype)
    width = aev.out_dim
    torch.manual_seed(0)
    layers = [width, *harness.HIDDEN]
    modules: list[torch.nn.Module] = []
    for a, b in zip(layers[:-1], layers[1:]):
        modules += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    network = torch.nn.Sequential(*modules, torch.nn.Linear(layers[-1], 1)).to(dtype)

    species = torch.zeros((1, n), dtype=torch.long)
    coords = torch.tensor(positions, dtype=dtype).unsqueeze(0)
    cell_t = torch.tensor(cell, dtype=dtype)
    pbc = torch.tensor([True, True, True])
    with torch.no_grad():
        pairs = aev.neighborlist(radial.cutoff, species, coords, cell_t, pbc)
        shifts = reconstruct_shifts(coords, pairs)
    first, second = pairs.indices

    def call():
        r = coords.clone().requires_grad_(True)
        flat = r.view(-1, 3)
        vectors = flat.index_select(0, first) - flat.index_select(0, second) + shifts
        neighbors = Neighbors(pairs.indices, vectors.norm(dim=-1), vectors)
        energy = network(aev.compute_from_neighbors(species, r, neighbors)).sum()
        (gradient,) = torch.autograd.grad(energy, r)
        return float(energy), -gradient[0].numpy()

    timing = harness.time_calls(call, args.repeats)
    harness.emit({
        "code": "torchani", "version": version("torchani"), "torch": torch.__version__,
        "workload": args.workload, "dtype": args.dtype, "atoms": n,
        "config": f"ANI AEV {width} functions: 8 ANIRadial (eta {harness.RADIAL_ETA:.3f}, shifts 1..6 Å) + "
                  f"{angular.num_feats} ANIAngular (eta {1.0 / (2.0 * spacing**2):.3f}, zeta {ANGULAR_ZETA:g}, "
                  f"{ANGULAR_SHIFTS} shifts from 1 Å x {ANGULAR_SECTIONS} sections from "
                  f"{math.pi / ANGULAR_SECTIONS / 2:.3f} rad), cos cutoff 6 Å, cell list outside the timing, "
                  f"{first.numel()} pairs, energy+forces (no virial)",
        **timing,
    })


if __name__ == "__main__":
    main()
