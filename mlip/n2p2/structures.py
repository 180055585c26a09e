"""n2p2/RuNNer ``input.data`` structure files in both directions."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase import Atoms

from mlip.n2p2.common import N2P2Error, format_number, parse_units


def read_input_data(path: str | os.PathLike, units: str = "angstrom,ev", index: str | int = ":") -> list[Atoms]:
    """Structures of an n2p2/RuNNer ``input.data`` file, converted to Å and eV.

    Parsing is ASE's (``ase.io.runner``, read without its unit conversion);
    ``units`` are the file's ``"length,energy"`` units as in :func:`read_n2p2`
    (RuNNer files are often ``"bohr,hartree"``).  Energies and forces come as a
    single-point calculator (eV, eV/Å), like ``ase.io.read`` gives them.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read
    from ase.io.runner.runneratoms import Units

    length, energy = parse_units(units)
    if not Path(path).is_file():
        raise N2P2Error(f"structure file {path} does not exist")
    frames = read(path, index=index, format="runnerdata", input_units=Units.ASE)
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    result = []
    for atoms in frames:
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        converted = atoms.copy()
        converted.positions = atoms.positions * length
        converted.cell = atoms.cell.array * length
        if "energy" in results:
            results["energy"] = results["energy"] * energy
        if "forces" in results:
            results["forces"] = results["forces"] * (energy / length)
        converted.calc = SinglePointCalculator(converted, **results) if results else None
        result.append(converted)
    return result


def write_input_data(path: str | os.PathLike, images: Atoms | Iterable[Atoms], units: str = "angstrom,ev",
                     comment: str | None = None) -> Path:
    """Write structures as an n2p2 ``input.data`` (atomic lines ``atom x y z element
    charge 0 fx fy fz``), in ``units`` (default Å and eV, as n2p2 potentials in
    those units expect).

    Energies and forces are taken from each structure's calculator results when
    present (else 0), charges from ``initial_charges``.  ASE's ``runnerdata``
    writer always converts to Bohr and Hartree and writes an extended header
    that n2p2 rejects, hence this writer.  Periodic structures must be periodic
    in all three directions (n2p2 has no partial periodicity).
    """
    from mlip.files import write_bytes_atomic

    length, energy = parse_units(units)
    images = [images] if isinstance(images, Atoms) else list(images)
    if comment is not None and "\n" in comment:
        raise ValueError("the comment must be a single line")
    blocks = []
    for number, atoms in enumerate(images):
        if any(atoms.pbc) and not all(atoms.pbc):
            raise N2P2Error(f"structure {number} is periodic along {list(atoms.pbc)}: n2p2 needs all three "
                            "directions periodic or none")
        results = atoms.calc.results if atoms.calc is not None else {}
        forces = np.asarray(results.get("forces", np.zeros((len(atoms), 3)))) / (energy / length)
        charges = atoms.get_initial_charges()
        lines = ["begin"]
        if comment is not None:
            lines.append(f"comment {comment}")
        if all(atoms.pbc):
            lines += ["lattice " + " ".join(format_number(v) for v in row / length) for row in atoms.cell.array]
        for position, symbol, charge, force in zip(atoms.positions / length, atoms.get_chemical_symbols(),
                                                   charges, forces):
            lines.append("atom " + " ".join(format_number(v) for v in position)
                         + f" {symbol:2s} {format_number(charge)} "
                         + format_number(0.0) + " " + " ".join(format_number(v) for v in force))
        lines.append(f"energy {format_number(float(results.get('energy', 0.0)) / energy)}")
        lines.append(f"charge {format_number(float(np.sum(charges)))}")
        lines.append("end")
        blocks.append("\n".join(lines) + "\n")
    return write_bytes_atomic(path, "".join(blocks).encode())
