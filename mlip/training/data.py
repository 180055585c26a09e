"""Labelled structures for training: reading, validation and splitting.

A :class:`Sample` is one structure with its reference labels in ASE units: total
energy (eV), forces (eV/Å) and, for periodic cells, stress (eV/Å^3, ASE sign and
Voigt order xx yy zz yz xz xy).  Labels are read either from the structure's
calculator (what ``ase.io`` attaches for extxyz ``energy``/``forces``/``stress``,
``.traj``, ``.db`` and RuNNer/n2p2 ``input.data`` files) or from named ``info`` /
``arrays`` keys such as MACE's ``REF_energy``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from mlip.batch import closest_pair
from mlip.kernels.neighbor_list import check_cell


class DataError(ValueError):
    """A data set cannot be used for training; the message lists every problem."""


@dataclass(frozen=True)
class LabelKeys:
    """Where the labels live in each structure.

    ``None`` (the default) reads the structure's calculator results (extxyz keys
    ``energy``, ``forces``, ``stress``); a name reads ``atoms.info[name]`` (energy,
    stress: 6 Voigt or 9 numbers) or ``atoms.arrays[name]`` (forces).
    """

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    config_type: str = "config_type"


@dataclass(frozen=True)
class Sample:
    """One labelled structure.

    Attributes:
        atoms: the structure (positions Å, cell Å).
        energy: total energy, eV (NaN if missing: rejected by :func:`validate_samples`).
        forces: ``[n, 3]`` eV/Å, or ``None`` if missing.
        stress: ``[6]`` eV/Å^3 (ASE sign, Voigt order), or ``None``.
        config_type: group name for reports and per-group loss weights.
        name: where it came from (``file:index``), for error messages.
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray | None
    stress: np.ndarray | None
    config_type: str
    name: str

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


def _label(atoms: Atoms, prop: str, key: str | None, store: dict):
    """``store[key]`` when a key is named; otherwise the calculator's result for
    ``prop``, falling back to ``store[prop]``."""
    if key is not None:
        return store.get(key)
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    value = results.get(prop)
    return store.get(prop) if value is None else value


def _stress_voigt(value) -> np.ndarray | None:
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if value.shape == (3, 3):
        return value.reshape(9)[[0, 4, 8, 5, 2, 1]]
    return value.reshape(-1)  # 6 Voigt values; any other size is reported by validate_samples


def sample_from_atoms(atoms: Atoms, keys: LabelKeys = LabelKeys(), name: str = "") -> Sample:
    """Wrap one structure and its labels (see :class:`LabelKeys`)."""
    energy = _label(atoms, "energy", keys.energy, atoms.info)
    forces = _label(atoms, "forces", keys.forces, atoms.arrays)
    stress = _label(atoms, "stress", keys.stress, atoms.info)
    bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    config_type = str(atoms.info.get(keys.config_type, "default"))
    bare.info["config_type"] = config_type
    return Sample(
        atoms=bare,
        energy=float(energy) if energy is not None else float("nan"),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        stress=_stress_voigt(stress),
        config_type=config_type,
        name=name,
    )


def read_samples(path: str | os.PathLike, keys: LabelKeys = LabelKeys(), format: str | None = None,
                 index: str = ":") -> list[Sample]:
    """Read every structure of a data file that ASE can read.

    ``format`` is ASE's format name (e.g. ``"extxyz"``, ``"traj"``, ``"db"``,
    ``"runnerdata"`` for n2p2/RuNNer ``input.data``, whose atomic units ASE converts
    to eV and Å); ``None`` lets ASE guess, and a file called ``input.data`` is read
    as ``runnerdata``.
    """
    from ase.io import read

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path} does not exist")
    if format is None and os.path.basename(path) == "input.data":
        format = "runnerdata"
    try:
        frames = read(path, index=index, format=format)
    except Exception as error:  # ASE raises many kinds; all mean "unreadable"
        raise DataError(f"cannot read {path}: {type(error).__name__}: {error}") from error
    if isinstance(frames, Atoms):
        frames = [frames]
    return [sample_from_atoms(atoms, keys, f"{path}:{n}") for n, atoms in enumerate(frames)]


#: Atoms closer than this (Å) overlap: no bond is this short (H2: 0.74 Å), so training
#: data with such a pair is rejected whatever r_min is.
OVERLAP = 0.5


def validate_samples(samples: Sequence[Sample], elements: Sequence[str], r_min: float,
                     stress_required: bool = False, max_listed: int = 20) -> None:
    """Check every sample before any compute; raise one :class:`DataError` listing
    all problems.

    Problems: no structures, missing or non-finite energy, forces missing, of the
    wrong shape or non-finite, stress of the wrong size or non-finite, unknown
    elements, NaN positions, degenerate periodic cells, atoms closer than ``r_min``
    (Å) or overlapping (closer than :data:`OVERLAP`, whatever ``r_min``), and, when ``stress_required`` (non-zero stress weight), stress present for
    some fully periodic structures but missing for others.
    """
    if len(samples) == 0:
        raise DataError("the data set has no structures")
    known = set(elements)
    problems: list[str] = []
    periodic_with, periodic_without = [], []
    for sample in samples:
        atoms, n = sample.atoms, sample.n_atoms
        issues = []
        if not np.isfinite(sample.energy):
            issues.append("energy missing or not finite")
        elif abs(sample.energy) > 1e4 * max(n, 1):  # implausible label
            issues.append(f"energy {sample.energy:g} eV is implausible (> 1e4 eV/atom)")
        if sample.forces is None:
            issues.append("forces missing")
        elif sample.forces.shape != (n, 3):
            issues.append(f"forces have shape {sample.forces.shape}, expected {(n, 3)}")
        elif not np.all(np.isfinite(sample.forces)):
            issues.append("forces contain NaN/inf")
        if sample.stress is not None:
            if sample.stress.shape != (6,):
                issues.append(f"stress has {sample.stress.size} values, expected 6 (Voigt) or 9")
            elif not np.all(np.isfinite(sample.stress)):
                issues.append("stress contains NaN/inf")
        unknown = sorted(set(atoms.get_chemical_symbols()) - known)
        if unknown:
            issues.append(f"unknown element(s) {unknown} (model has {sorted(known)})")
        positions = atoms.positions
        if not np.all(np.isfinite(positions)):
            issues.append("positions contain NaN/inf")
        else:
            try:
                check_cell(atoms.cell.array, atoms.pbc)
                found = closest_pair(atoms, max(r_min, OVERLAP))
                if found is not None:
                    a, b, distance = found
                    if distance < OVERLAP:
                        issues.append(f"atoms {a} and {b} are {distance:.3f} Å apart: overlapping (closer than "
                                      f"{OVERLAP} Å, shorter than any bond; a duplicated atom?)")
                    else:
                        issues.append(f"atoms {a} and {b} are {distance:.3f} Å apart, closer than r_min = {r_min} Å")
            except ValueError as error:
                issues.append(str(error))
        if atoms.pbc.all():
            (periodic_with if sample.stress is not None else periodic_without).append(sample.name)
        if issues:
            problems.append(f"{sample.name}: " + "; ".join(issues))
    if stress_required and periodic_with and periodic_without:
        listed = ", ".join(periodic_without[:max_listed])
        problems.append(
            f"stress weight is non-zero and {len(periodic_with)} periodic structures have stress but "
            f"{len(periodic_without)} do not ({listed}); give stress for all or set the stress weight to 0"
        )
    if problems:
        shown = problems[:max_listed]
        more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise DataError(f"{len(problems)} problem(s) in the data:\n  " + "\n  ".join(shown) + more)


def split_samples(samples: Sequence[Sample], validation_fraction: float, seed: int = 0
                  ) -> tuple[list[Sample], list[Sample]]:
    """Random train/validation split by fraction (at least one validation structure
    when the fraction is positive), reproducible for a given ``seed``."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    n_validation = int(round(validation_fraction * len(samples)))
    if validation_fraction > 0:
        n_validation = max(1, n_validation)
    if n_validation >= len(samples):
        raise DataError(f"{len(samples)} structures are too few for a validation fraction of {validation_fraction}")
    order = np.random.default_rng(seed).permutation(len(samples))
    validation = sorted(order[:n_validation].tolist())
    train = sorted(order[n_validation:].tolist())
    return [samples[n] for n in train], [samples[n] for n in validation]


def describe(samples: Sequence[Sample]) -> str:
    """One line: structure and atom counts per config_type."""
    counts = Counter(s.config_type for s in samples)
    groups = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return f"{len(samples)} structures, {sum(s.n_atoms for s in samples)} atoms ({groups})"


def elements_of(samples: Sequence[Sample]) -> tuple[str, ...]:
    """Chemical symbols present, ordered by atomic number."""
    from ase.data import atomic_numbers

    symbols = {s for sample in samples for s in sample.atoms.get_chemical_symbols()}
    return tuple(sorted(symbols, key=atomic_numbers.__getitem__))
