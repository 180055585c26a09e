"""Labelled training data from any ASE calculator, and a cached default Si data set.

:func:`label` attaches energies (eV), forces (eV/Å) and, for fully periodic cells,
stress (eV/Å³, ASE sign convention, Voigt order xx yy zz yz xz xy) computed by any
ASE calculator to copies of structures, as ASE ``SinglePointCalculator`` results,
so they survive ``ase.io.write(..., format="extxyz")``.

:func:`generate_structures` builds a small, diverse, deterministic set of labelled
structures of one element in a cubic crystal structure (8 to 64 atoms each), in
groups named by ``atoms.info["config_type"]``:

* ``"rattled"``: bulk supercells with Gaussian displacements of several amplitudes;
* ``"strained"``: random symmetric strains plus an isotropic volume scan (an E-V curve);
* ``"vacancy"``: supercells minus one atom, rattled;
* ``"surface"``: low-index slabs with vacuum in a fully periodic cell, rattled;
* ``"md"``: snapshots of Langevin molecular dynamics driven by the calculator.

:func:`default_si_dataset` generates (once, then reads a cached extxyz file) the
project's default Si data set labelled with the Stillinger-Weber potential of
matscipy (:func:`stillinger_weber_si`); nothing is downloaded. From the shell::

    python -m mlip.training.generate OUTPUT.xyz
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, surface
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.neighborlist import neighbor_list

from mlip.files import atomic_write

__all__ = [
    "GROUPS",
    "default_si_dataset",
    "generate_structures",
    "label",
    "stillinger_weber_si",
    "write_dataset",
]

#: ``info["config_type"]`` of the groups made by :func:`generate_structures`, in output order.
GROUPS = ("rattled", "strained", "vacancy", "surface", "md")

# one independent random stream per group: changing one group's count leaves the others unchanged
_STREAM = {name: k for k, name in enumerate(GROUPS)}

_MIN_ATOMS, _MAX_ATOMS = 8, 64


def label(atoms_list: Iterable[Atoms], calculator: Calculator, config_type: str | None = None) -> list[Atoms]:
    """Copies of ``atoms_list`` labelled by ``calculator``.

    Each copy gets a ``SinglePointCalculator`` holding the energy (eV), the forces
    (eV/Å) and, only if the cell is periodic in all three directions, the stress
    (eV/Å³, Voigt order xx yy zz yz xz xy), so that ``get_potential_energy()``,
    ``get_forces()`` and ``get_stress()`` return them and extxyz files store them.
    The input structures are not modified.

    Args:
        atoms_list: structures to label.
        calculator: any ASE calculator implementing energy, forces (and stress for
            periodic cells). It is attached to each copy in turn and detached again.
        config_type: if given, stored as ``info["config_type"]`` of every copy;
            otherwise an existing ``info["config_type"]`` is kept.
    """
    labelled = []
    for atoms in atoms_list:
        atoms = atoms.copy()  # copies info and arrays, not the calculator
        if config_type is not None:
            atoms.info["config_type"] = config_type
        atoms.calc = calculator
        results = {
            "energy": float(atoms.get_potential_energy()),
            "forces": np.array(atoms.get_forces(), dtype=np.float64),
        }
        if atoms.pbc.all():
            results["stress"] = np.array(atoms.get_stress(voigt=True), dtype=np.float64)
        atoms.calc = SinglePointCalculator(atoms, **results)
        labelled.append(atoms)
    return labelled


def stillinger_weber_si() -> Calculator:
    """matscipy's Stillinger-Weber calculator for Si (Phys. Rev. B 31, 5262 (1985)).

    Cohesive energy -4.3366 eV/atom at the diamond lattice constant 5.431 Å;
    cutoff 1.8 * 2.0951 = 3.771 Å. It computes energy, forces and stress analytically.
    Note that it also returns a stress for non-periodic cells (normalised by the
    cell volume); :func:`label` only keeps stress for fully periodic cells.
    """
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
        StillingerWeber,
        Stillinger_Weber_PRB_31_5262_Si,
    )

    return Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))


def generate_structures(
    calculator: Calculator,
    element: str = "Si",
    lattice: str = "diamond",
    a: float = 5.431,
    seed: int = 0,
    *,
    n_rattled: int = 48,
    n_strained: int = 40,
    n_volume: int = 17,
    n_vacancy: int = 16,
    n_surface: int = 24,
    n_md: int = 60,
    rattle_amplitudes: Sequence[float] = (0.02, 0.05, 0.1, 0.15),
    max_strain: float = 0.05,
    volume_range: tuple[float, float] = (0.92, 1.08),
    surface_indices: Sequence[tuple[int, int, int]] = ((1, 0, 0), (1, 1, 0), (1, 1, 1)),
    surface_layers: int = 2,
    vacuum: float = 5.0,
    md_temperatures: Sequence[float] = (600.0, 1200.0),
    md_timestep: float = 2.0,
    md_interval: int = 10,
    md_equilibration: int = 50,
    md_friction: float = 0.02,
    md_repeat: tuple[int, int, int] = (2, 2, 2),
    min_distance: float | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Atoms]:
    """Labelled structures of ``element`` in groups ``GROUPS`` (``info["config_type"]``).

    Deterministic for a given ``seed`` (NumPy ``Generator`` streams, one per group,
    also driving the Langevin thermostat). Structures have 8 to 64 atoms (surface
    slabs ``surface_layers`` conventional cells thick). Setting a count to 0 drops
    the corresponding structures.

    Args:
        calculator: ASE calculator giving energy (eV), forces (eV/Å), stress (eV/Å³).
        element, lattice, a: a cubic ASE ``bulk`` crystal (e.g. ``"diamond"``,
            ``"fcc"``, ``"bcc"``) with conventional lattice constant ``a`` in Å;
            use the calculator's equilibrium value.
        seed: random seed.
        n_rattled: bulk supercells with Gaussian displacements, amplitude (standard
            deviation per Cartesian component, Å) cycling through ``rattle_amplitudes``.
        n_strained: supercells with random symmetric strain, components uniform in
            ``[-max_strain, max_strain]``, rattled by 0.02-0.05 Å ("strained").
        n_volume: conventional cells scaled isotropically to volume ratios evenly
            spaced over ``volume_range``, rattled by 0.01 Å (also "strained").
        n_vacancy: supercells of at least 32 atoms minus one random atom, rattled.
        n_surface: slabs cycling through ``surface_indices`` with ``vacuum`` Å on each
            side (fully periodic cell), rattled with amplitudes up to 0.1 Å.
        n_md: snapshots, split evenly over ``md_temperatures`` (K), of Langevin MD of
            the conventional cell repeated ``md_repeat`` times, taken every
            ``md_interval`` steps of ``md_timestep`` fs after ``md_equilibration``
            steps; ``md_friction`` in 1/fs.
        log: called with one line per group once it is labelled (count, seconds).
        min_distance: rattled atoms are redrawn until no two are closer than this
            (Å); default 0.8 times the nearest-neighbour distance of the crystal.

    Returns:
        The structures in group order, labelled as by :func:`label`.
    """
    counts = dict(n_rattled=n_rattled, n_strained=n_strained, n_volume=n_volume, n_vacancy=n_vacancy,
                  n_surface=n_surface, n_md=n_md)
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if len(rattle_amplitudes) == 0 and (n_rattled or n_vacancy):
        raise ValueError("rattle_amplitudes must not be empty")

    conventional = _conventional_cell(element, lattice, a)
    cells = _bulk_supercells(element, lattice, a)
    if min_distance is None:
        min_distance = 0.8 * _nearest_neighbor_distance(conventional)

    def stream(group: str) -> np.random.Generator:
        return np.random.default_rng([seed, _STREAM[group]])

    def rattled_copy(atoms: Atoms, amplitude: float, rng: np.random.Generator) -> Atoms:
        return rattle(atoms, amplitude, rng, min_distance)

    structures: list[Atoms] = []
    clock = [time.perf_counter()]

    def labelled(group_structures: list[Atoms], group: str) -> list[Atoms]:
        result = label(group_structures, calculator, group)
        if log is not None and result:
            now = time.perf_counter()
            log(f"  {group}: {len(result)} structures labelled ({now - clock[0]:.1f} s)")
            clock[0] = now
        return result

    rng = stream("rattled")
    rattled = [rattled_copy(cells[rng.integers(len(cells))], rattle_amplitudes[k % len(rattle_amplitudes)], rng)
               for k in range(n_rattled)]
    structures += labelled(rattled, "rattled")

    rng = stream("strained")
    strained = []
    for _ in range(n_strained):
        atoms = cells[rng.integers(len(cells))].copy()
        strain = rng.uniform(-max_strain, max_strain, (3, 3))
        strain = 0.5 * (strain + strain.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        strained.append(rattled_copy(atoms, float(rng.uniform(0.02, 0.05)), rng))
    for ratio in np.linspace(volume_range[0], volume_range[1], n_volume):
        atoms = conventional.copy()
        atoms.set_cell(atoms.cell.array * ratio ** (1.0 / 3.0), scale_atoms=True)
        strained.append(rattled_copy(atoms, 0.01, rng))
    structures += labelled(strained, "strained")

    rng = stream("vacancy")
    large = [c for c in cells if len(c) >= 32] or cells[-1:]
    vacancies = []
    for k in range(n_vacancy):
        atoms = large[rng.integers(len(large))].copy()
        del atoms[int(rng.integers(len(atoms)))]
        vacancies.append(rattled_copy(atoms, rattle_amplitudes[k % len(rattle_amplitudes)], rng))
    structures += labelled(vacancies, "vacancy")

    rng = stream("surface")
    slabs = [surface(conventional, tuple(index), surface_layers, vacuum=vacuum, periodic=True)
             for index in surface_indices]
    surface_amplitudes = [x for x in rattle_amplitudes if x <= 0.1] or [min(rattle_amplitudes, default=0.05)]
    surfaces = [rattled_copy(slabs[k % len(slabs)], surface_amplitudes[(k // len(slabs)) % len(surface_amplitudes)],
                             rng)
                for k in range(n_surface)]
    structures += labelled(surfaces, "surface")

    rng = stream("md")
    snapshots = []
    n_temperatures = len(md_temperatures)
    for t_index, temperature in enumerate(md_temperatures):
        n_snapshots = n_md // n_temperatures + (t_index < n_md % n_temperatures)
        if n_snapshots == 0:
            continue
        snapshots += md_snapshots(conventional.repeat(md_repeat), calculator, temperature, n_snapshots, rng,
                                   md_timestep, md_interval, md_equilibration, md_friction)
    structures += labelled(snapshots, "md")
    return structures


def write_dataset(structures: Sequence[Atoms], path: str | os.PathLike) -> None:
    """Write ``structures`` to the extxyz file ``path`` atomically.

    The file is written to a temporary file in the same folder and moved into place
    (:func:`mlip.files.atomic_write`), so readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        write(handle, list(structures), format="extxyz")


def default_si_dataset(path: str | os.PathLike, *, regenerate: bool = False, seed: int = 0,
                       log: Callable[[str], None] | None = print, **kwargs) -> list[Atoms]:
    """The default Si training set, cached in the extxyz file ``path``.

    If ``path`` exists (and ``regenerate`` is false) it is read and returned as is:
    the cache is keyed by the path only, so ``seed`` and ``kwargs`` only take effect
    when the set is generated. Otherwise the set is generated with
    :func:`generate_structures` (Si diamond, a = 5.431 Å, labelled with
    :func:`stillinger_weber_si`; ``seed`` and ``kwargs`` are forwarded), written
    atomically to ``path`` and read back, so that the first and later calls return
    the same numbers (extxyz stores positions and forces with 8 decimals).
    While generating, ``log`` (default: print; None: quiet) gets a line saying so,
    one per group and one when the file is written.

    Returns:
        Structures with energy (eV), forces (eV/Å), stress (eV/Å³) and
        ``info["config_type"]``.
    """
    path = Path(path)
    if path.exists() and not regenerate:
        return read(path, index=":", format="extxyz")
    start = time.perf_counter()
    if log is not None:
        log(f"generating the built-in Si data set in {path} (Stillinger-Weber labels; done once, "
            "later runs read the file)")
    structures = generate_structures(stillinger_weber_si(), "Si", "diamond", 5.431, seed, log=log, **kwargs)
    write_dataset(structures, path)
    if log is not None:
        log(f"wrote {len(structures)} structures to {path} in {time.perf_counter() - start:.1f} s")
    return read(path, index=":", format="extxyz")


def _conventional_cell(element: str, lattice: str, a: float) -> Atoms:
    return bulk(element, lattice, a=a, cubic=True)


def _bulk_supercells(element: str, lattice: str, a: float) -> list[Atoms]:
    """Conventional and primitive supercells with 8 to 64 atoms, smallest first."""
    conventional = _conventional_cell(element, lattice, a)
    primitive = bulk(element, lattice, a=a)
    candidates = [conventional.repeat(r) for r in ((1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2))]
    candidates += [primitive.repeat(r) for r in ((2, 2, 2), (3, 3, 3))]
    cells = [c for c in candidates if _MIN_ATOMS <= len(c) <= _MAX_ATOMS]
    if not cells:
        raise ValueError(f"no {lattice} supercell of {element} with {_MIN_ATOMS}-{_MAX_ATOMS} atoms")
    return sorted(cells, key=len)


def _nearest_neighbor_distance(atoms: Atoms) -> float:
    cutoff = 0.75 * float(np.min(atoms.cell.lengths()))
    while True:
        distances = neighbor_list("d", atoms, cutoff)
        if len(distances):
            return float(distances.min())
        cutoff *= 1.5


def strained_diamond_cells(n: int, seed: int = 0, strain: float = 0.04, rattle_amplitude: float = 0.06,
                           element: str = "Si", a: float = 5.431) -> list[Atoms]:
    """``n`` cubic 8-atom diamond cells (lattice constant ``a`` Å), each under a random
    homogeneous deformation (entries uniform in ±``strain``) and rattled (Gaussian,
    ``rattle_amplitude`` Å per component), from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(n):
        atoms = bulk(element, "diamond", a=a, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-strain, strain, (3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(0.0, rattle_amplitude, atoms.positions.shape)
        structures.append(atoms)
    return structures


def rattle(atoms: Atoms, amplitude: float, rng: np.random.Generator, min_distance: float,
            max_tries: int = 1000) -> Atoms:
    """Copy of ``atoms`` with Gaussian displacements (std ``amplitude`` Å per component).

    Atoms closer than ``min_distance`` Å to another are redrawn (one of each pair).
    """
    atoms = atoms.copy()
    reference = atoms.positions.copy()
    displacement = rng.normal(0.0, amplitude, reference.shape)
    for _ in range(max_tries):
        atoms.positions = reference + displacement
        i, j = neighbor_list("ij", atoms, min_distance)
        if len(i) == 0:
            return atoms
        redraw = np.unique(np.maximum(i, j))
        displacement[redraw] = rng.normal(0.0, amplitude, (len(redraw), 3))
    raise RuntimeError(f"could not rattle by {amplitude} Å keeping atoms {min_distance} Å apart")


def md_snapshots(atoms: Atoms, calculator: Calculator, temperature: float, n_snapshots: int,
                  rng: np.random.Generator, timestep: float, interval: int, equilibration: int,
                  friction: float) -> list[Atoms]:
    """Unlabelled snapshots of Langevin MD at ``temperature`` K (timestep in fs, friction in 1/fs)."""
    atoms = atoms.copy()
    # Maxwell-Boltzmann momenta drawn from rng (same on every ASE version), no net momentum
    sigma = np.sqrt(atoms.get_masses() * units.kB * temperature)[:, None]
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * sigma)
    Stationary(atoms)
    atoms.calc = calculator
    dynamics = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=friction / units.fs,
                        fixcm=False, rng=rng)  # centre-of-mass drift is harmless for snapshots
    dynamics.run(equilibration)
    snapshots = []
    for _ in range(n_snapshots):
        dynamics.run(interval)
        snapshot = atoms.copy()
        snapshot.wrap()
        snapshot.arrays.pop("momenta", None)  # snapshots carry positions only
        snapshots.append(snapshot)
    atoms.calc = None
    return snapshots


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mlip.training.generate OUTPUT.xyz``: write the default Si data set."""
    parser = argparse.ArgumentParser(
        prog="python -m mlip.training.generate",
        description="Write the default Si training set (Stillinger-Weber labels) as extxyz.")
    parser.add_argument("output", help="extxyz file to write (replaced atomically if it exists)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    structures = default_si_dataset(args.output, regenerate=True, seed=args.seed)
    groups = {name: sum(a.info.get("config_type") == name for a in structures) for name in GROUPS}
    print(f"wrote {len(structures)} structures to {args.output} in {time.perf_counter() - start:.1f} s: "
          + ", ".join(f"{name} {count}" for name, count in groups.items()))


if __name__ == "__main__":
    main()
