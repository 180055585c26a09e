"""Files of an MD run: the CSV thermo log, trajectory frames, restart files.

* thermo log: a header row (:func:`start_thermo`), then rows appended after every
  block (:func:`append_thermo`), the step as an integer and the rest with 10
  significant digits;
* trajectory: one frame per ``trajectory_every`` steps (:func:`append_frame`),
  extxyz or ASE ``.traj`` (from the suffix), with energy, forces and, for periodic
  cells, stress (:func:`trajectory_frame`);
* restart file: an :mod:`mlip.files` container (atomic, checksummed) of kind
  :data:`RESTART_FILE` holding the whole state and what it belongs to
  (:func:`save_restart`, :func:`load_restart`);
* resuming: :func:`truncate_outputs` drops the log rows and frames written after
  the restart file, and a partial last row or frame of a killed run (saying so),
  after checking every file and before rewriting any (atomically).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.files import ContainerKind, atomic_path, atomic_write, read_container, write_container
from mlip.md.settings import MDSettings, Outputs
from mlip.md.state import MDState
from mlip.md.system import MDSystem
from mlip.model import virial_to_stress

RESTART_MAGIC = b"MLIP-MD-RESTART\n"
#: The MD restart file as a :mod:`mlip.files` container.
RESTART_FILE = ContainerKind("mlip MD restart", RESTART_MAGIC)


def start_thermo(path: str | os.PathLike, columns: Sequence[str]) -> None:
    """Create the thermo log ``path`` (and its folder) with a header row of
    ``columns``, unless it exists (a resumed run appends to it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with atomic_write(path, "w", newline="") as handle:
            csv.writer(handle).writerow(columns)


def append_thermo(path: str | os.PathLike, rows: Sequence[Sequence[float]]) -> None:
    """Append thermo ``rows`` (step first) to the log ``path``."""
    with open(path, "a", newline="") as handle:
        csv.writer(handle).writerows([[int(r[0])] + [f"{x:.10g}" for x in r[1:]] for r in rows])


def trajectory_frame(system: MDSystem, state: MDState, step: int) -> Atoms:
    """The real atoms of ``state`` with momenta, and a calculator holding energy,
    forces (and stress for periodic cells); ``info["step"]`` is ``step``."""
    atoms = system.to_atoms(state.position, state.momentum, state.cell)
    n = system.n_atoms
    results = {"energy": float(state.energy), "forces": np.asarray(state.force, np.float64)[:n]}
    if all(system.pbc):
        results["stress"] = virial_to_stress(np.asarray(state.virial, np.float64), np.asarray(state.cell))
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["step"] = step
    return atoms


def _trajectory_format(path: Path) -> str:
    return "traj" if path.suffix == ".traj" else "extxyz"


def append_frame(path: str | os.PathLike, atoms: Atoms) -> None:
    """Append ``atoms`` to the trajectory ``path`` (``.traj``: ASE trajectory, else extxyz).

    An extxyz frame is formatted in memory and appended with one write, so a kill
    leaves at most one partial frame at the end of the file (and ASE's ``.traj``
    updates its frame count only after the frame's data); :func:`truncate_outputs`
    drops such a frame when the run resumes."""
    path = Path(path)
    if _trajectory_format(path) == "traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(path, "a") as trajectory:
            trajectory.write(atoms)
        return
    import io

    from ase.io import write

    text = io.StringIO()
    write(text, atoms, format="extxyz")
    with open(path, "ab") as handle:
        handle.write(text.getvalue().encode())


class OutputRepairWarning(UserWarning):
    """Resuming found a partial last row or frame in an output file (a run killed
    while writing it) and dropped it; the message names the file."""


@dataclass
class _Cut:
    """What resuming keeps of one output file: its first ``keep`` bytes (tables,
    extxyz) or frames (``.traj``); 0 deletes the file, ``keep == whole`` leaves it."""

    path: Path
    kind: str
    keep: int
    whole: int
    note: str | None = None
    traj: bool = False


class _Partial(Exception):
    """A row or frame that ends before it is complete."""


def _damaged(name: str, path: Path, where: str, why: str) -> ValueError:
    return ValueError(f"cannot resume: the {name} {path} is damaged at {where} ({why}) and more data follow it; "
                      "it is not a partial last entry that resuming could drop (no output file was changed)")


def _partial_note(name: str, path: Path, what: str, step: int) -> str:
    return (f"resuming at step {step}: dropped a partial last {what} of the {name} {path} "
            "(the run was killed while writing it)")


def _plan_table(path: Path, step: int, name: str, row_step) -> _Cut:
    """Keep a table's header and its complete rows up to ``step``; ``row_step(line)``
    is a row's step, or raises ``ValueError`` for a line that is not a row."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.readline()
        if not header.endswith(b"\n"):  # killed while creating it: start again
            return _Cut(path, name, 0, size, _partial_note(name, path, "header", step))
        keep = offset = len(header)
        for number, line in enumerate(handle, start=2):
            end = offset + len(line)
            try:
                if not line.endswith(b"\n"):
                    raise _Partial("no end of line")
                at = row_step(line.decode())
            except (ValueError, UnicodeDecodeError, _Partial) as error:
                if end == size:
                    return _Cut(path, name, keep, size, _partial_note(name, path, f"row (line {number})", step))
                raise _damaged(name, path, f"line {number}", str(error) or "not a row") from None
            if at > step:
                break
            keep = offset = end
    return _Cut(path, name, keep, size)


def _thermo_step(columns: int):
    def row_step(line: str) -> int:
        row = next(csv.reader([line]))
        if len(row) != columns:
            raise ValueError(f"{len(row)} columns, the header has {columns}")
        for x in row[1:]:
            float(x)
        return int(row[0])

    return row_step


def _model_devi_step(line: str) -> int:
    from mlip.uncertainty import MODEL_DEVI_COLUMNS

    row = line.split()
    if len(row) != len(MODEL_DEVI_COLUMNS):
        raise ValueError(f"{len(row)} columns, not {len(MODEL_DEVI_COLUMNS)}")
    for x in row[1:]:
        float(x)
    return int(row[0])


def _extxyz_columns(comment: str) -> tuple[int, int]:
    """The columns of an extxyz frame's atom lines and its ``step`` (0 if absent)."""
    from ase.io.extxyz import key_val_str_to_dict

    info = key_val_str_to_dict(comment)
    fields = str(info.get("Properties", "species:S:1:pos:R:3")).split(":")
    return sum(int(count) for count in fields[2::3]), int(info.get("step", 0))


def _plan_extxyz(path: Path, step: int, name: str) -> _Cut:
    """Keep the complete frames of an extxyz file up to ``step``, read one line at a
    time (a partial last frame is dropped; a damaged frame with data after it is an
    error)."""
    size = path.stat().st_size
    keep = offset = 0
    frame = 0
    with open(path, "rb") as handle:
        while offset < size:
            frame += 1
            start = offset
            try:
                lines = 0

                def line() -> bytes:
                    nonlocal offset, lines
                    text = handle.readline()
                    offset += len(text)
                    lines += 1
                    if not text.endswith(b"\n"):
                        raise _Partial(f"line {lines} of the frame ends without an end of line")
                    return text

                try:
                    n_atoms = int(line())
                    columns, at = _extxyz_columns(line().decode())
                except (ValueError, UnicodeDecodeError) as error:
                    raise _Partial(f"bad frame header: {error}") from None
                if n_atoms < 0:
                    raise _Partial(f"negative atom count {n_atoms}")
                for _ in range(n_atoms):
                    if len(line().split()) != columns:
                        raise _Partial(f"line {lines} of the frame does not have {columns} columns")
            except _Partial as error:
                rest = handle.read(1)
                if not rest:  # the file ends inside this frame: a partial last frame
                    return _Cut(path, name, keep, size,
                                _partial_note(name, path, f"frame (frame {frame}, from byte {start})", step))
                raise _damaged(name, path, f"frame {frame} (from byte {start})", str(error)) from None
            if at > step:
                break
            keep = offset
    return _Cut(path, name, keep, size)


_ULM_HEADER = 56  # ASE's .traj (ulm) header: tag, version, frame count, offsets position, first offset


def _plan_traj(path: Path, step: int, name: str) -> _Cut:
    """Keep the readable frames of an ASE ``.traj`` file up to ``step`` (a last
    frame that does not read is dropped)."""
    from ase.io.trajectory import TrajectoryReader

    size = path.stat().st_size
    try:
        reader = TrajectoryReader(str(path))
    except Exception as error:
        if size < _ULM_HEADER:  # killed while writing its first frame
            return _Cut(path, name, 0, 1, _partial_note(name, path, "frame (frame 1)", step), True)
        raise ValueError(f"cannot resume: the {name} {path} is not a readable ASE trajectory ({error}; "
                         "no output file was changed)") from None
    with reader:
        total = len(reader)
        keep = 0
        for index in range(total):
            try:
                at = int(reader[index].info.get("step", 0))
            except Exception as error:
                if index == total - 1:
                    return _Cut(path, name, keep, total,
                                _partial_note(name, path, f"frame (frame {index + 1})", step), True)
                raise _damaged(name, path, f"frame {index + 1}", str(error)) from None
            if at > step:
                break
            keep = index + 1
    return _Cut(path, name, keep, total, traj=True)


def _apply(cut: _Cut) -> None:
    if cut.keep == cut.whole:
        return
    if cut.keep == 0:
        cut.path.unlink()
        return
    with atomic_path(cut.path) as temporary:
        if cut.traj:
            from ase.io.trajectory import Trajectory, TrajectoryReader

            with TrajectoryReader(str(cut.path)) as reader, Trajectory(temporary, "w") as writer:
                for index in range(cut.keep):
                    writer.write(reader[index])
        else:
            with open(cut.path, "rb") as source, open(temporary, "xb") as target:
                left = cut.keep
                while left:
                    chunk = source.read(min(left, 1 << 20))
                    target.write(chunk)
                    left -= len(chunk)


def truncate_outputs(outputs: Outputs, step: int, frames: Sequence[str | os.PathLike | None] = (),
                     tables: Sequence[str | os.PathLike | None] = ()) -> list[str]:
    """Drop what was written after ``step`` (the restart file's step): thermo rows,
    trajectory frames, and the frames and model-deviation rows of the extra
    ``frames`` files (extxyz or ``.traj``) and ``tables`` (model_devi.out files).

    A partial last row or frame (a run killed while writing it) is dropped too,
    with an :class:`OutputRepairWarning` naming the file.  Every file is checked
    before any is changed: a file damaged elsewhere raises ``ValueError`` naming it
    and its line or frame, and no file is changed.  Each file is rewritten
    atomically (or removed when nothing of it is kept).  Returns the notes of the
    warnings."""
    step = int(step)
    planned: list[_Cut] = []
    entries = [("thermo log", outputs.thermo, "thermo")] + [("trajectory", outputs.trajectory, "frames")]
    entries += [("frames file", path, "frames") for path in frames]
    entries += [("model deviation file", path, "model_devi") for path in tables]
    for name, path, kind in entries:
        if not path or not Path(path).exists():
            continue
        path = Path(path)
        if kind == "thermo":
            with open(path, "rb") as handle:
                header = handle.readline().decode(errors="replace")
            planned.append(_plan_table(path, step, name, _thermo_step(len(next(csv.reader([header]), [])))))
        elif kind == "model_devi":
            planned.append(_plan_table(path, step, name, _model_devi_step))
        elif _trajectory_format(path) == "traj":
            planned.append(_plan_traj(path, step, name))
        else:
            planned.append(_plan_extxyz(path, step, name))
    notes = []
    for cut in planned:
        _apply(cut)
        if cut.note:
            notes.append(cut.note)
            warnings.warn(cut.note, OutputRepairWarning, stacklevel=2)
    return notes


def save_restart(path: str | os.PathLike, state: MDState, settings: MDSettings, system: MDSystem) -> None:
    """Atomic, checksummed restart file of ``state``."""
    write_container(path, RESTART_FILE, {
        "state": flax.serialization.to_bytes([np.asarray(x) for x in jax.tree_util.tree_leaves(state)]),
        "meta": json.dumps({"settings": settings.__dict__, "n_atoms": system.n_atoms,
                            "n_rows": int(system.position.shape[0]),
                            "species": system.species.tolist(), "elements": list(system.model.elements)}),
    })


def load_restart(path: str | os.PathLike, template: MDState, system: MDSystem) -> MDState:
    """The state saved by :func:`save_restart`; ``ValueError`` if it belongs to another
    system (:class:`~mlip.files.ContainerError` if it is not a readable restart file)."""
    content = read_container(path, RESTART_FILE).content
    meta = json.loads(content["meta"])
    if meta["species"] != system.species.tolist() or meta["elements"] != list(system.model.elements):
        raise ValueError(f"restart file {path} belongs to another system ({meta['n_atoms']} atoms of "
                         f"{meta['elements']}), not to this one ({system.n_atoms} atoms)")
    leaves, treedef = jax.tree_util.tree_flatten(template)
    restored = flax.serialization.from_bytes([np.asarray(x) for x in leaves], content["state"])
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x, t.dtype) for x, t in zip(restored, leaves)])
