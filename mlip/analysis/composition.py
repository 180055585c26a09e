"""Composition features: element fractions and property statistics (rule of mixtures).

For atom fractions ``x_e`` and an elemental property ``p_e`` (from mendeleev's
bundled tables, offline) the features of a composition are::

    fractions:  x_e over a fixed element list
    mean:       <p> = sum_e x_e p_e                       (rule of mixtures)
    spread:     sqrt(sum_e x_e (p_e - <p>)^2)             (composition-weighted std)

as matminer's ``ElementProperty`` computes them.  Units are those of the table:
``melting_point`` K, ``atomic_radius`` pm, ``atomic_weight`` u, ``en_pauling``
(dimensionless), ``density`` g/cm^3, ``metallic_radius`` pm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

DEFAULT_PROPERTIES = ("melting_point", "en_pauling", "atomic_radius", "atomic_weight")
_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")


def parse_formula(formula: str | Mapping[str, float] | Atoms) -> dict[str, float]:
    """Atom fractions (summing to 1) of a formula (``"Al3Cu"``, ``"Cu0.25Au0.75"``),
    a ``{element: amount}`` mapping or an ASE structure.

    Raises:
        ValueError: unparsable text, unknown element, negative or all-zero amounts.
    """
    if isinstance(formula, Atoms):
        symbols = formula.get_chemical_symbols()
        amounts = {s: float(symbols.count(s)) for s in set(symbols)}
    elif isinstance(formula, Mapping):
        amounts = {str(k): float(v) for k, v in formula.items()}
    else:
        text = str(formula).replace(" ", "")
        if not text or _TOKEN.sub("", text):
            raise ValueError(f"cannot parse formula {formula!r}: expected element symbols with amounts, e.g. 'Al3Cu'")
        amounts = {}
        for symbol, amount in _TOKEN.findall(text):
            amounts[symbol] = amounts.get(symbol, 0.0) + (float(amount) if amount else 1.0)
    unknown = sorted(s for s in amounts if s not in chemical_symbols[1:])
    if unknown:
        raise ValueError(f"unknown element symbol(s) {unknown} in {formula!r}")
    if any(v < 0 for v in amounts.values()) or sum(amounts.values()) <= 0:
        raise ValueError(f"amounts must be non-negative and not all zero, got {amounts}")
    total = sum(amounts.values())
    return {s: v / total for s, v in sorted(amounts.items()) if v > 0}


def formula_string(fractions: Mapping[str, float], digits: int = 4) -> str:
    """``{"Cu": 0.75, "Au": 0.25}`` -> ``"Au0.25Cu0.75"`` (sorted symbols)."""
    return "".join(f"{s}{round(x, digits):g}" for s, x in sorted(fractions.items()))


@lru_cache(maxsize=1)
def _element_table():
    """mendeleev's element table (by symbol) with melting points joined in."""
    from mendeleev.fetch import fetch_table

    elements = fetch_table("elements")
    melting = fetch_table("phasetransitions").dropna(subset=["melting_point"])
    melting = melting.groupby("atomic_number")["melting_point"].first()
    elements["melting_point"] = elements["atomic_number"].map(melting)
    return elements.set_index("symbol")


def element_properties(elements: Sequence[str], properties: Sequence[str] = DEFAULT_PROPERTIES) -> np.ndarray:
    """``[n_elements, n_properties]`` table of elemental properties (units in the module docstring).

    Raises:
        ValueError: unknown property name, unknown element or a missing table value.
    """
    table = _element_table()
    unknown = [p for p in properties if p not in table.columns]
    if unknown:
        raise ValueError(f"unknown elemental propert(ies) {unknown}; mendeleev's table has e.g. {list(DEFAULT_PROPERTIES)}")
    missing_elements = [e for e in elements if e not in table.index]
    if missing_elements:
        raise ValueError(f"unknown element(s) {missing_elements}")
    values = table.loc[list(elements), list(properties)].to_numpy(dtype=float)
    if np.isnan(values).any():
        holes = [(elements[i], properties[j]) for i, j in zip(*np.nonzero(np.isnan(values)))]
        raise ValueError(f"mendeleev has no value for (element, property) {holes}")
    return values


@dataclass(frozen=True)
class CompositionFeaturizer:
    """Fraction vector plus mean and spread of elemental properties (see module docstring).

    Attributes:
        elements: element list of the fraction vector; compositions must use only these.
        properties: mendeleev column names.
        include_fractions: put the fraction vector first.
    """

    elements: tuple[str, ...]
    properties: tuple[str, ...] = DEFAULT_PROPERTIES
    include_fractions: bool = True
    table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "elements", tuple(self.elements))
        object.__setattr__(self, "properties", tuple(self.properties))
        object.__setattr__(self, "table", element_properties(self.elements, self.properties))

    @property
    def feature_names(self) -> list[str]:
        names = [f"x_{e}" for e in self.elements] if self.include_fractions else []
        return names + [f"mean_{p}" for p in self.properties] + [f"spread_{p}" for p in self.properties]

    def fractions(self, compositions: Sequence) -> np.ndarray:
        """``[n, n_elements]`` atom fractions; ``ValueError`` for an element outside :attr:`elements`."""
        rows = []
        for composition in compositions:
            fractions = parse_formula(composition)
            outside = sorted(set(fractions) - set(self.elements))
            if outside:
                raise ValueError(f"{composition!r} contains {outside}, not in the featurizer's elements {list(self.elements)}")
            rows.append([fractions.get(e, 0.0) for e in self.elements])
        return np.array(rows, dtype=float).reshape(-1, len(self.elements))

    def transform(self, compositions: Sequence) -> np.ndarray:
        """``[n, len(feature_names)]`` features of ``compositions``."""
        x = self.fractions(compositions)
        mean = x @ self.table
        spread = np.sqrt(np.maximum(x @ self.table**2 - mean**2, 0.0))
        return np.hstack(([x] if self.include_fractions else []) + [mean, spread])
