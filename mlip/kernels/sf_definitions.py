"""Behler-Parrinello atom-centred symmetry functions with n2p2's conventions.

Three element-resolved types are provided, numbered and written as in n2p2's
``input.nn`` (``symfunction_short`` lines); all distances in Å, eta in Å^-2:

* type 2, radial::

    G_i = sum_{j != i, e_j = e1} exp(-eta (r_ij - r_s)^2) f_c(r_ij)

* type 3, narrow angular::

    G_i = 2^(1-zeta) sum_{j != i} sum_{k > j, {e_j, e_k} = {e1, e2}}
          (1 + lambda cos theta_ijk)^zeta
          exp(-eta [(r_ij - r_s)^2 + (r_ik - r_s)^2 + (r_jk - r_s)^2])
          f_c(r_ij) f_c(r_ik) f_c(r_jk)

* type 9, wide angular: as type 3 without the r_jk terms.

The JAX kernel that evaluates them is :mod:`mlip.kernels.descriptors_jax`, the
compiled one :mod:`mlip.kernels.native`; :func:`mlip.kernels.descriptors.make_descriptor_kernel`
picks one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from mlip.kernels.cutoff import CUTOFF_TYPES, cutoff_name

RADIAL_TYPES = (2,)
ANGULAR_TYPES = (3, 9)


def _exact(value: float) -> str:
    """``value`` in E notation with the fewest digits (7 to 17 significant) that
    parse back to the same float."""
    for digits in range(6, 16):
        text = f"{value:.{digits}E}"
        if float(text) == value:
            return text
    return f"{value:.16E}"


@dataclass(frozen=True, order=True)
class SymmetryFunction:
    """One symmetry function of n2p2 type 2, 3 or 9.

    Attributes:
        kind: n2p2 type number (2 radial, 3 narrow angular, 9 wide angular).
        element: symbol of the central atom.
        neighbors: one symbol (radial) or two symbols (angular, stored sorted).
        eta: Gaussian width parameter, Å^-2.
        r_cut: cutoff radius, Å.
        r_shift: Gaussian centre r_s, Å.
        lam: lambda = +1 or -1 (angular only).
        zeta: angular exponent >= 1 (angular only).
    """

    kind: int
    element: str
    neighbors: tuple[str, ...]
    eta: float
    r_cut: float
    r_shift: float = 0.0
    lam: float = 1.0
    zeta: float = 1.0

    def __post_init__(self):
        for name in ("eta", "r_cut", "r_shift", "lam", "zeta"):  # plain floats: weakly typed in JAX
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "kind", int(self.kind))
        if self.kind not in RADIAL_TYPES + ANGULAR_TYPES:
            raise ValueError(f"symmetry function type {self.kind} is not supported (2, 3 or 9)")
        n_expected = 1 if self.kind in RADIAL_TYPES else 2
        if len(self.neighbors) != n_expected:
            raise ValueError(
                f"type {self.kind} needs {n_expected} neighbour element(s), got {self.neighbors}"
            )
        if self.kind in ANGULAR_TYPES:
            object.__setattr__(self, "neighbors", tuple(sorted(self.neighbors)))
            if self.lam not in (1.0, -1.0):
                raise ValueError(f"lambda must be +1 or -1, got {self.lam}")
            if self.zeta < 1.0:
                raise ValueError(f"zeta must be >= 1, got {self.zeta}")
        if self.eta < 0 or self.r_cut <= 0:
            raise ValueError(f"need eta >= 0 and r_cut > 0, got eta={self.eta}, r_cut={self.r_cut}")

    @property
    def environment_key(self) -> tuple:
        """Everything except the central element: equal keys give equal values."""
        return (self.kind, self.neighbors, self.eta, self.r_cut, self.r_shift, self.lam, self.zeta)

    def to_n2p2(self) -> str:
        """The ``symfunction_short`` line n2p2 uses for this function.

        Numbers are written with as many digits as :meth:`from_n2p2` needs to get
        back exactly the same floats (at least 7 significant digits, up to 17),
        since model files store their symmetry functions as these lines.
        """
        if self.kind in RADIAL_TYPES:
            return (
                f"symfunction_short {self.element:2s} 2 {self.neighbors[0]:2s} "
                f"{_exact(self.eta)} {_exact(self.r_shift)} {_exact(self.r_cut)}"
            )
        e1, e2 = self.neighbors
        return (
            f"symfunction_short {self.element:2s} {self.kind} {e1:2s} {e2:2s} {_exact(self.eta)} "
            f"{self.lam:+.0f} {_exact(self.zeta)} {_exact(self.r_cut)} {_exact(self.r_shift)}"
        )

    @classmethod
    def from_n2p2(cls, line: str) -> "SymmetryFunction":
        """Parse an n2p2 ``symfunction_short`` line (types 2, 3, 9)."""
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "symfunction_short":
            raise ValueError(f"not a symfunction_short line: {line!r}")
        try:
            element, kind = words[1], int(words[2])
            if kind == 2:
                return cls(2, element, (words[3],), float(words[4]), float(words[6]), float(words[5]))
            if kind in ANGULAR_TYPES:
                r_shift = float(words[9]) if len(words) > 9 else 0.0
                return cls(
                    kind, element, (words[3], words[4]), float(words[5]), float(words[8]),
                    r_shift, float(words[6]), float(words[7]),
                )
        except (IndexError, ValueError) as error:
            raise ValueError(f"malformed symfunction_short line {line!r}: {error}") from error
        raise ValueError(f"symmetry function type {kind} is not supported (2, 3 or 9): {line!r}")


@dataclass(frozen=True)
class SymmetryFunctionSet:
    """All symmetry functions of a model plus the shared cutoff function.

    Attributes:
        elements: chemical symbols, in the order used for species indices.
        functions: the symmetry functions, any order; each element's features are
            its functions in the order given here.
        cutoff_type: cutoff function name or n2p2 number (n2p2 ``cutoff_type``).
        cutoff_alpha: inner cutoff as a fraction of r_c (n2p2 ``cutoff_type`` 2nd arg).
    """

    elements: tuple[str, ...]
    functions: tuple[SymmetryFunction, ...]
    cutoff_type: str = "tanh"
    cutoff_alpha: float = 0.0
    _union: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "elements", tuple(self.elements))
        object.__setattr__(self, "functions", tuple(self.functions))
        object.__setattr__(self, "cutoff_type", cutoff_name(self.cutoff_type))
        known = set(self.elements)
        for function in self.functions:
            unknown = ({function.element} | set(function.neighbors)) - known
            if unknown:
                raise ValueError(f"symmetry function {function} uses unknown element(s) {sorted(unknown)}")
        for element in self.elements:
            if not any(f.element == element for f in self.functions):
                raise ValueError(f"element {element} has no symmetry functions")
        union = tuple(dict.fromkeys(f.environment_key for f in self.functions))
        object.__setattr__(self, "_union", union)

    @property
    def union_keys(self) -> tuple[tuple, ...]:
        """The distinct :attr:`SymmetryFunction.environment_key` values, in the order of
        the union feature columns every atom gets."""
        return self._union

    @property
    def max_cutoff(self) -> float:
        """Largest cutoff radius of any function, Å."""
        return max(f.r_cut for f in self.functions)

    def functions_of(self, element: str) -> tuple[SymmetryFunction, ...]:
        """The functions whose central atom is ``element``, in feature order."""
        return tuple(f for f in self.functions if f.element == element)

    def n_features(self, element: str) -> int:
        return len(self.functions_of(element))

    def feature_columns(self, element: str) -> np.ndarray:
        """Columns of the union feature matrix that form ``element``'s features."""
        position = {key: n for n, key in enumerate(self._union)}
        return np.array([position[f.environment_key] for f in self.functions_of(element)], dtype=np.int32)

    @property
    def n_union(self) -> int:
        """Number of distinct environment functions computed for every atom."""
        return len(self._union)

    def to_n2p2(self) -> str:
        """n2p2 ``input.nn`` fragment: cutoff_type plus one line per function."""
        lines = [f"cutoff_type {CUTOFF_TYPES[self.cutoff_type]} {self.cutoff_alpha}"]
        lines += [f.to_n2p2() for f in self.functions]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {
            "elements": list(self.elements),
            "cutoff_type": self.cutoff_type,
            "cutoff_alpha": self.cutoff_alpha,
            "functions": [f.to_n2p2() for f in self.functions],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "SymmetryFunctionSet":
        return cls(
            elements=tuple(data["elements"]),
            functions=tuple(SymmetryFunction.from_n2p2(line) for line in data["functions"]),
            cutoff_type=data["cutoff_type"],
            cutoff_alpha=float(data["cutoff_alpha"]),
        )


def default_symmetry_functions(
    elements: tuple[str, ...] | list[str],
    r_cut: float = 6.0,
    n_radial: int = 8,
    n_angular: int = 4,
    zetas: tuple[float, ...] = (1.0, 4.0),
    r_lower: float = 1.0,
    angular_type: int = 9,
    grid: str = "shifted",
    cutoff_type: str = "tanh",
    cutoff_alpha: float = 0.0,
) -> SymmetryFunctionSet:
    """Element-resolved parameter grids after n2p2's ``sfparamgen`` (Imbalzano 2018).

    Radial functions, for every (central, neighbour) element pair:

    * ``grid="shifted"``: centres r_s equidistant on [r_lower, r_cut] with spacing
      dr, all with eta = 1 / (2 dr^2);
    * ``grid="centered"``: r_s = 0 and eta_n = 1 / (2 r_n^2) for r_n equidistant on
      [r_lower, r_cut].

    Angular functions (type ``angular_type``) for every central element and every
    unordered neighbour pair: ``n_angular`` centred widths eta_n = 1 / (2 r_n^2)
    (r_n equidistant on [r_lower, r_cut]), each with every zeta in ``zetas`` and
    lambda = +1, -1.

    Args:
        elements: chemical symbols.
        r_cut: cutoff radius, Å.
        r_lower: smallest distance the grids resolve, Å.

    Returns:
        A :class:`SymmetryFunctionSet`.
    """
    if n_radial < 2 or n_angular < 1:
        raise ValueError("need n_radial >= 2 and n_angular >= 1")
    if not 0 < r_lower < r_cut:
        raise ValueError(f"need 0 < r_lower < r_cut, got {r_lower}, {r_cut}")
    elements = tuple(elements)
    radii = np.linspace(r_lower, r_cut, n_radial)
    if grid == "shifted":
        spacing = radii[1] - radii[0]
        radial = [(1.0 / (2.0 * spacing**2), float(r_s)) for r_s in radii]
    elif grid == "centered":
        radial = [(1.0 / (2.0 * r**2), 0.0) for r in radii]
    else:
        raise ValueError(f"grid must be 'shifted' or 'centered', got {grid!r}")
    angular_etas = [1.0 / (2.0 * r**2) for r in np.linspace(r_lower, r_cut, n_angular + 1)[1:]]

    functions = []
    for center in elements:
        for neighbor in elements:
            functions += [SymmetryFunction(2, center, (neighbor,), eta, r_cut, r_s) for eta, r_s in radial]
        for e1, e2 in itertools.combinations_with_replacement(elements, 2):
            for eta, zeta, lam in itertools.product(angular_etas, zetas, (1.0, -1.0)):
                functions.append(
                    SymmetryFunction(angular_type, center, (e1, e2), eta, r_cut, 0.0, lam, float(zeta))
                )
    return SymmetryFunctionSet(elements, tuple(functions), cutoff_type, cutoff_alpha)
