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
  the restart file, rewriting both atomically.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
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
    """Append ``atoms`` to the trajectory ``path`` (``.traj``: ASE trajectory, else extxyz)."""
    path = Path(path)
    if _trajectory_format(path) == "traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(path, "a") as trajectory:
            trajectory.write(atoms)
        return
    from ase.io import write

    write(path, atoms, format="extxyz", append=True)


def truncate_outputs(outputs: Outputs, step: int) -> None:
    """Drop thermo rows and frames after ``step`` (written after the restart file)."""
    if outputs.thermo and Path(outputs.thermo).exists():
        with open(outputs.thermo, newline="") as handle:
            rows = list(csv.reader(handle))
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        with atomic_write(outputs.thermo, "w", newline="") as handle:
            csv.writer(handle).writerows(kept)
    if outputs.trajectory and Path(outputs.trajectory).exists():
        from ase.io import read, write

        path = Path(outputs.trajectory)
        fmt = _trajectory_format(path)
        frames = [f for f in read(path, index=":", format=fmt) if f.info.get("step", 0) <= step]
        if not frames:
            path.unlink()
            return
        with atomic_path(path) as temporary:
            write(temporary, frames, format=fmt)


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
