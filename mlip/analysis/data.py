"""Composition-property data computed with a potential: random fcc alloys under ASE's EMT.

For each composition a random fcc supercell (exact atom counts, random site
occupation) is scaled homogeneously over a few volumes around a Vegard's-law
lattice constant; a Birch-Murnaghan fit (:class:`ase.eos.EquationOfState`) gives
the equilibrium energy, volume and bulk modulus.  The mixing energy is::

    E_mix = E0(alloy) / N - sum_e x_e E0(e)      (eV/atom)

with ``E0(e)`` the energy per atom of pure fcc ``e`` at its own equilibrium
volume.  Atomic positions are not relaxed inside the cell (ideal sites), so the
numbers are unrelaxed mixing energies: fine as a smooth, non-linear property of
composition for the models in :mod:`mlip.analysis.models`.  Any ASE calculator
can replace EMT (an :class:`~mlip.calculator.MLIPCalculator` included).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState
from ase.units import GPa

from mlip.analysis.composition import formula_string, parse_formula

EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")  # elements ASE's EMT has parameters for
LATTICE_STRAINS = (-0.02, -0.01, 0.0, 0.01, 0.02)  # linear strains of the EOS scan


def emt() -> Calculator:
    """ASE's effective-medium-theory calculator (default parameters)."""
    from ase.calculators.emt import EMT

    return EMT()


@dataclass(frozen=True)
class AlloyRecord:
    """Properties of one alloy composition.

    Attributes:
        formula: reduced formula of the atom fractions, e.g. ``"Au0.25Cu0.75"``.
        fractions: atom fraction of each element.
        mixing_energy: eV/atom, relative to the pure fcc elements at their own volumes.
        bulk_modulus: GPa, from the Birch-Murnaghan fit.
        volume: equilibrium volume per atom, Å^3.
    """

    formula: str
    fractions: Mapping[str, float]
    mixing_energy: float
    bulk_modulus: float
    volume: float


def site_counts(fractions: Mapping[str, float], n_sites: int) -> dict[str, int]:
    """Integer atom counts summing to ``n_sites`` closest to ``fractions`` (largest remainders)."""
    symbols = sorted(fractions)
    exact = np.array([fractions[s] * n_sites for s in symbols])
    counts = np.floor(exact + 1e-9).astype(int)
    for index in np.argsort(-(exact - counts))[: n_sites - counts.sum()]:
        counts[index] += 1
    return {s: int(c) for s, c in zip(symbols, counts) if c > 0}


def random_fcc_alloy(composition, repeat: int = 2, lattice_constant: float | None = None,
                     seed: int = 0, calculator_factory: Callable[[], Calculator] = emt) -> Atoms:
    """Cubic fcc supercell (``4 repeat^3`` sites) with species placed at random.

    Args:
        composition: formula or ``{element: fraction}`` (see :func:`parse_formula`).
        repeat: conventional cells along each axis.
        lattice_constant: Å; default Vegard's law over the pure elements' equilibrium
            lattice constants under ``calculator_factory``.
        seed: random occupation.
    """
    fractions = parse_formula(composition)
    if lattice_constant is None:
        lattice_constant = sum(x * pure_element(e, calculator_factory)[1] for e, x in fractions.items())
    atoms = bulk("Cu", "fcc", a=lattice_constant, cubic=True).repeat(repeat)
    symbols = [s for s, c in site_counts(fractions, len(atoms)).items() for _ in range(c)]
    atoms.set_chemical_symbols(np.random.default_rng(seed).permutation(symbols))
    return atoms


def equation_of_state(atoms: Atoms, calculator: Calculator,
                      strains: Sequence[float] = LATTICE_STRAINS) -> tuple[float, float, float]:
    """``(E0 eV/atom, V0 Å^3/atom, B GPa)`` from a Birch-Murnaghan fit of homogeneous scans."""
    volumes, energies = [], []
    for strain in strains:
        scaled = atoms.copy()
        scaled.set_cell(atoms.cell * (1.0 + strain), scale_atoms=True)
        scaled.calc = calculator
        volumes.append(scaled.get_volume() / len(atoms))
        energies.append(scaled.get_potential_energy() / len(atoms))
    v0, e0, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float(e0), float(v0), float(b / GPa)


@lru_cache(maxsize=None)
def pure_element(element: str, calculator_factory: Callable[[], Calculator] = emt) -> tuple[float, float]:
    """``(E0 eV/atom, a0 Å)`` of pure fcc ``element`` at its equilibrium volume."""
    from ase.data import chemical_symbols, reference_states

    state = reference_states[chemical_symbols.index(element)] or {}
    guess = bulk(element, "fcc", a=state.get("a", 4.0), cubic=True)
    e0, v0, _ = equation_of_state(guess, calculator_factory(), strains=np.linspace(-0.04, 0.04, 9))
    atoms = bulk(element, "fcc", a=(4.0 * v0) ** (1.0 / 3.0), cubic=True)
    e0, v0, _ = equation_of_state(atoms, calculator_factory())
    return e0, (4.0 * v0) ** (1.0 / 3.0)


def alloy_record(composition, repeat: int = 2, seed: int = 0,
                 calculator_factory: Callable[[], Calculator] = emt) -> AlloyRecord:
    """Mixing energy, bulk modulus and volume of one random fcc alloy (see module docstring)."""
    atoms = random_fcc_alloy(composition, repeat, seed=seed, calculator_factory=calculator_factory)
    counts = site_counts(parse_formula(composition), len(atoms))
    fractions = {e: c / len(atoms) for e, c in counts.items()}
    e0, v0, b = equation_of_state(atoms, calculator_factory())
    reference = sum(x * pure_element(e, calculator_factory)[0] for e, x in fractions.items())
    return AlloyRecord(formula_string(fractions), fractions, e0 - reference, b, v0)


def composition_grid(elements: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every composition of ``elements`` whose fractions are multiples of ``step``
    (pure elements included), e.g. ``step=0.25`` over two elements gives 5."""
    n = round(1.0 / step)
    if not np.isclose(n * step, 1.0):
        raise ValueError(f"step must divide 1, got {step}")
    grid = []
    for parts in itertools.product(range(n + 1), repeat=len(elements) - 1):
        if sum(parts) <= n:
            counts = (*parts, n - sum(parts))
            grid.append({e: c / n for e, c in zip(elements, counts) if c})
    return grid


def alloy_dataset(compositions: Sequence, repeat: int = 2, seed: int = 0,
                  calculator_factory: Callable[[], Calculator] = emt) -> list[AlloyRecord]:
    """:func:`alloy_record` of every composition (seed ``seed + index`` for the occupation)."""
    return [alloy_record(c, repeat, seed + n, calculator_factory) for n, c in enumerate(compositions)]
