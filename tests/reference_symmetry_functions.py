"""Brute-force reference symmetry functions, written from n2p2's formulas.

A second, independent implementation for the tests: explicit Python loops over
neighbours j and pairs (j, k > j) from ASE's neighbour list, no factorisation,
no padding, no JAX.
"""

from __future__ import annotations

import math

import numpy as np
from ase.neighborlist import primitive_neighbor_list


def cutoff_reference(r: float, r_c: float, kind: str, alpha: float = 0.0) -> float:
    if r >= r_c:
        return 0.0
    if kind == "tanh":
        return math.tanh(1.0 - r / r_c) ** 3 / math.tanh(1.0) ** 3
    if kind == "tanhu":
        return math.tanh(1.0 - r / r_c) ** 3
    if kind == "hard":
        return 1.0
    r_i = alpha * r_c
    if r <= r_i:
        return 1.0
    x = (r - r_i) / (r_c - r_i)
    if kind == "cos":
        return 0.5 * (math.cos(math.pi * x) + 1.0)
    if kind == "exp":
        return math.exp(1.0 - 1.0 / (1.0 - x * x))
    if kind == "poly1":
        return 1.0 - 3.0 * x**2 + 2.0 * x**3
    if kind == "poly2":
        return 1.0 - 10.0 * x**3 + 15.0 * x**4 - 6.0 * x**5
    if kind == "poly3":
        return 1.0 - 35.0 * x**4 + 84.0 * x**5 - 70.0 * x**6 + 20.0 * x**7
    if kind == "poly4":
        return 1.0 - 126.0 * x**5 + 420.0 * x**6 - 540.0 * x**7 + 315.0 * x**8 - 70.0 * x**9
    raise ValueError(kind)


def reference_symmetry_functions(atoms, sf_set) -> list[np.ndarray]:
    """Per atom, the values of its element's symmetry functions, in feature order."""
    r_max = sf_set.max_cutoff
    i_list, j_list, d_vec = primitive_neighbor_list(
        "ijD", atoms.pbc, atoms.cell.array, atoms.positions, r_max, self_interaction=False
    )
    symbols = atoms.get_chemical_symbols()
    kind, alpha = sf_set.cutoff_type, sf_set.cutoff_alpha

    def fc(r, r_c):
        return cutoff_reference(r, r_c, kind, alpha)

    result = []
    for i, symbol in enumerate(symbols):
        neighbors = [(j_list[n], d_vec[n]) for n in np.flatnonzero(i_list == i)]
        values = []
        for sf in sf_set.functions_of(symbol):
            total = 0.0
            if sf.kind == 2:
                for j, v in neighbors:
                    r = np.linalg.norm(v)
                    if symbols[j] == sf.neighbors[0]:
                        total += math.exp(-sf.eta * (r - sf.r_shift) ** 2) * fc(r, sf.r_cut)
            else:
                for a in range(len(neighbors)):
                    for b in range(a + 1, len(neighbors)):
                        (j, vj), (k, vk) = neighbors[a], neighbors[b]
                        if sorted((symbols[j], symbols[k])) != list(sf.neighbors):
                            continue
                        rij, rik = np.linalg.norm(vj), np.linalg.norm(vk)
                        rjk = np.linalg.norm(vk - vj)
                        cos = vj @ vk / (rij * rik)
                        radial = (rij - sf.r_shift) ** 2 + (rik - sf.r_shift) ** 2
                        cut = fc(rij, sf.r_cut) * fc(rik, sf.r_cut)
                        if sf.kind == 3:
                            radial += (rjk - sf.r_shift) ** 2
                            cut *= fc(rjk, sf.r_cut)
                        total += max(0.0, 1.0 + sf.lam * cos) ** sf.zeta * math.exp(-sf.eta * radial) * cut
                total *= 2.0 ** (1.0 - sf.zeta)
            values.append(total)
        result.append(np.array(values))
    return result
