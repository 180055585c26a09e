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
                 index: str = ":", progress: bool | None = None) -> list[Sample]:
    """Read every structure of a data file that ASE can read, as a stream.

    ``format`` is ASE's format name (e.g. ``"extxyz"``, ``"traj"``, ``"db"``,
    ``"runnerdata"`` for n2p2/RuNNer ``input.data``, whose atomic units ASE converts
    to eV and Å); ``None`` lets ASE guess, and a file called ``input.data`` is read
    as ``runnerdata``.

    The file is read one structure at a time (memory for reading is bounded by the
    largest structure, not the file); an extxyz frame's atom count is checked
    against what is left of the file before the frame is parsed, so a header that
    claims 500 million atoms fails at once.  ``progress``: a progress bar (default:
    for files over :data:`PROGRESS_BYTES`).  Every error names the file and the
    structure (``file:index``, counting from 0).

    Raises:
        DataError: missing or unreadable file, a frame that cannot be parsed, or no
            memory left (the file and frame named).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path} does not exist")
    if os.path.isdir(path):
        raise DataError(f"data file {path} is a folder, not a file")
    if format is None and os.path.basename(path) == "input.data":
        format = "runnerdata"
    size = os.path.getsize(path)
    if format is None:
        from ase.io.formats import filetype

        try:
            guessed = filetype(path, read=False)
        except Exception:  # ASE guesses from the content next
            guessed = None
    else:
        guessed = format
    show = size > PROGRESS_BYTES if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}")
    samples: list[Sample] = []
    try:
        if guessed == "extxyz" and index == ":":
            frames = _extxyz_frames(path, size, bar)
        else:
            frames = _ase_frames(path, format, index)
        for atoms in frames:
            samples.append(sample_from_atoms(atoms, keys, f"{path}:{len(samples)}"))
            if bar is not None and guessed != "extxyz":
                bar.set_postfix_str(f"{len(samples)} structures")
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"cannot read {path}: out of memory after {len(samples)} structures "
                        f"({sum(s.n_atoms for s in samples)} atoms); the structure {path}:{len(samples)} or the "
                        "data set does not fit") from None
    except Exception as error:  # ASE raises many kinds; all mean "unreadable"
        raise DataError(f"cannot read {path}:{len(samples)} (structure {len(samples)}, counting from 0): "
                        f"{type(error).__name__}: {error}") from error
    finally:
        if bar is not None:
            bar.close()
    return samples


#: files larger than this (bytes) are read with a progress bar by default
PROGRESS_BYTES = 50 * 2**20


def _ase_frames(path: str, format: str | None, index: str):
    """ASE's own frame-by-frame reader (``iread``)."""
    from ase.io import iread

    frames = iread(path, index=index, format=format)
    yield from frames


def _extxyz_frames(path: str, size: int, bar=None):
    """The frames of an extxyz file, one at a time: the atom count is checked
    against the bytes left before the frame's lines are read, and each frame is
    parsed on its own by ASE (errors name the frame and its first line)."""
    import io

    from ase.io import read

    line_number = 0
    frame = 0
    with open(path, "rb") as handle:
        while True:
            header = handle.readline()
            line_number += 1
            if not header:
                return
            if not header.strip():  # blank lines between or after frames
                continue
            first = line_number
            where = f"{path}:{frame} (structure {frame}, counting from 0, line {first})"
            try:
                n_atoms = int(header)
            except ValueError:
                raise DataError(f"cannot read {where}: the first line of a frame must be its number of atoms, "
                                f"got {header[:60].decode(errors='replace').strip()!r}") from None
            if n_atoms < 0:
                raise DataError(f"cannot read {where}: negative number of atoms {n_atoms}")
            comment = handle.readline()
            line_number += 1
            columns = _extxyz_columns(comment)
            left = size - handle.tell()
            needed = n_atoms * 2 * columns  # at least one character and a separator per column
            if needed > left:
                raise DataError(f"cannot read {where}: the header claims {n_atoms} atoms, but only {left} bytes "
                                f"follow (at least {needed} needed for {columns} columns per atom); a wrong atom "
                                "count or a truncated file")
            lines = [header, comment]
            for _ in range(n_atoms):
                line = handle.readline()
                if not line:
                    raise DataError(f"cannot read {where}: the file ends after {len(lines) - 2} of {n_atoms} "
                                    "atom lines")
                lines.append(line)
            line_number += n_atoms
            raw = b"".join(lines)
            text = raw.decode(errors="replace")
            try:
                atoms = read(io.StringIO(text), format="extxyz")
            except Exception as error:
                raise DataError(f"cannot read {where}: {type(error).__name__}: {error}") from None
            if bar is not None:
                bar.update(len(raw))
                bar.set_postfix_str(f"{frame + 1} structures")
            yield atoms
            frame += 1


def _extxyz_columns(comment: bytes) -> int:
    """Columns per atom line that an extxyz comment line's ``Properties`` declares
    (4 without one: species and position)."""
    import re

    found = re.search(rb"Properties=(\S+)", comment, flags=re.IGNORECASE)
    if not found:
        return 4
    fields = found.group(1).decode(errors="replace").strip("\"'").split(":")
    try:
        return max(1, sum(int(count) for count in fields[2::3]))
    except ValueError:
        return 1


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
