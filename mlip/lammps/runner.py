"""Run a LAMMPS input file with an mlip model as the force field, on every MPI rank.

The input is an ordinary LAMMPS input in ``units metal`` that defines the force
field as

.. code-block:: none

    comm_modify cutoff 10.0                        # >= 2 x model cutoff + neighbor skin
    fix mlip all external pf/callback 1 1          # the mlip model, every step

:func:`run_input` executes it command by command; right after the ``fix ...
external pf/callback`` line it attaches the model (:class:`~mlip.lammps.coupling.MLIPFix`,
which also sets ``fix_modify ID energy yes virial yes`` so thermo ``pe`` and
``press`` include it), re-reads the ghost cutoff before every ``run`` or
``minimize``, and raises the error that stopped a run.  ``include`` files are
followed; ``jump``/``label`` loops are refused (LAMMPS can only jump inside a file
it reads itself): write such loops in Python around :class:`MLIPFix`.

Run it on many ranks with the MPI of the ``mpich`` wheel::

    mpirun -np 4 mlip lammps model.mlip in.lammps --elements Si
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlip.lammps.coupling import Extrapolation, FixStatistics, MLIPFix, ModelDeviation, import_lammps
from mlip.lammps.domain import DomainEvaluator
from mlip.model import Model

RUN_COMMANDS = ("run", "minimize", "rerun")


def split_commands(text: str) -> list[str]:
    """The commands of a LAMMPS input, one string each: lines continued with a
    trailing ``&`` and triple-quoted (``\"\"\"``) blocks stay together, as LAMMPS
    reads them."""
    commands, current, in_quotes = [], [], False
    for line in text.splitlines():
        current.append(line)
        if line.count('"""') % 2:
            in_quotes = not in_quotes
        if in_quotes or line.rstrip().endswith("&"):
            continue
        commands.append("\n".join(current))
        current = []
    if current:
        commands.append("\n".join(current))
    return commands


def command_words(command: str) -> list[str]:
    """Words of one command without its comment (``#`` outside quotes) and
    continuation marks."""
    text = command.replace("&\n", " ")
    quote = None
    for position, char in enumerate(text):
        if quote is None and char == "#":
            text = text[:position]
            break
        if char in "\"'":
            quote = None if quote == char else (char if quote is None else quote)
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


@dataclass
class RunSummary:
    """What :func:`run_input` did (this rank's view).

    Attributes:
        ranks: MPI ranks of the run.
        atoms: atoms in the system of the last run.
        callbacks: force-field evaluations (steps and setups) on this rank.
        seconds_per_call: mean wall time of one callback, leaving out each fix's
            first (which includes the compilation), s.
        model_seconds_per_call: its neighbour-list, padding and model part, s.
        neighbor_builds: builds of this rank's neighbour list.
        compilations: shapes the compiled function was compiled for.
        extrapolation_warnings: symmetry-function values of atoms outside the
            model's training range, summed over steps and ranks (0 for a model
            without a stored range).
    """

    ranks: int
    atoms: int
    callbacks: int
    seconds_per_call: float
    model_seconds_per_call: float
    neighbor_builds: int
    compilations: int
    extrapolation_warnings: int = 0


def run_input(model: Model | str | os.PathLike, input_path: str | os.PathLike,
              elements: Sequence[str] | None = None, dtype: str = "float64", skin: float = 0.3,
              variables: dict[str, str] | None = None, log: str | os.PathLike | None = "log.lammps",
              screen: bool = True, comm=None, extrapolation: Extrapolation = Extrapolation(),
              model_devi: ModelDeviation | None = None) -> RunSummary:
    """Run the LAMMPS input ``input_path`` with ``model`` as its force field.

    Call on every MPI rank (``mpirun -np N python script.py`` or ``mpirun -np N mlip
    lammps ...``); one rank works too.

    Args:
        model: an mlip model or a model file.
        input_path: LAMMPS input; it defines ``fix ID GROUP external pf/callback 1 1``
            before the first ``run``/``minimize`` and sets ``comm_modify cutoff`` to at
            least 2 x the model cutoff + the neighbour skin (Å).
        elements: element of each atom type, in type order (default: matched by mass).
        dtype: ``"float64"`` or ``"float32"``.
        skin: Verlet skin of each rank's own neighbour list, Å.
        variables: LAMMPS index variables (``-var NAME VALUE``).
        log: LAMMPS log file (None: no log).
        screen: LAMMPS screen output on rank 0.
        comm: mpi4py communicator (default ``MPI.COMM_WORLD``).
        extrapolation: n2p2-style warning settings (:class:`~mlip.lammps.coupling.Extrapolation`).
        model_devi: DeePMD-style model-deviation output (:class:`~mlip.lammps.coupling.ModelDeviation`).

    Raises:
        ValueError: a bad input for mlip (see :class:`MLIPFix`; no ``fix external``
            before a run, ``jump``/``label``, a ``pf/callback`` that is not ``1 1``).
        RuntimeError: an error inside the force field stopped a run, or a LAMMPS error.
    """
    lammps, MPI = import_lammps()
    if not isinstance(model, Model):
        from mlip.io import load_model

        model = load_model(model)
    comm = MPI.COMM_WORLD if comm is None else comm
    args = ["-log", "none" if log is None else str(log), "-nocite"]
    if not screen:
        args += ["-screen", "none"]
    for name, value in (variables or {}).items():
        args += ["-var", str(name), str(value)]
    # one for every fix: compiled shapes are kept
    evaluator = DomainEvaluator(model, dtype=dtype, skin=skin, extrapolation=model.feature_range is not None)
    lmp = lammps.lammps(cmdargs=args, comm=comm)
    state: dict = {"fix": None, "fixes": [], "atoms": 0}

    def execute(path: Path) -> bool:
        """Run the commands of ``path``; False once ``quit`` was met."""
        if not path.is_file():
            raise ValueError(f"LAMMPS input {str(path)!r} does not exist")
        for command in split_commands(path.read_text()):
            words = command_words(command)
            if not words:
                continue
            name = words[0]
            if name in ("jump", "label"):
                raise ValueError(f"`{name}` is not supported by `mlip lammps`, which runs the input command by "
                                 "command: unroll the loop, or write it in Python around mlip.lammps.MLIPFix")
            if name == "include":
                if len(words) != 2 or "$" in words[1]:
                    raise ValueError(f"`{' '.join(words)}`: give `include` one plain file name")
                if not execute(Path(words[1])):
                    return False
                continue
            if name == "quit":
                return False
            fix = state["fix"]
            if name in RUN_COMMANDS:
                if fix is None:
                    raise ValueError(f"`{name}` before the mlip force field was defined: add `fix mlip all external "
                                     "pf/callback 1 1` (and `comm_modify cutoff ...`) before it")
                fix.refresh()
            lmp.commands_string(command)
            if name in RUN_COMMANDS:
                state["atoms"] = int(lmp.get_natoms())
                fix.raise_error()
            elif name == "clear" or (name == "unfix" and fix is not None and words[1:2] == [fix.fix_id]):
                state["fix"] = None
            elif name == "fix" and len(words) >= 4 and words[3] == "external":
                if words[4:7] != ["pf/callback", "1", "1"]:
                    raise ValueError(f"`{' '.join(words)}`: the mlip force field needs `fix {words[1]} {words[2]} "
                                     "external pf/callback 1 1` (called and applied every step)")
                if fix is not None and fix.fix_id != words[1]:
                    raise ValueError(f"a second fix external ({words[1]!r}) while {fix.fix_id!r} holds the model")
                state["fix"] = MLIPFix(lmp, model, words[1], elements=elements, evaluator=evaluator,
                                       extrapolation=extrapolation, model_devi=model_devi)
                state["fixes"].append(state["fix"])
        return True

    try:
        execute(Path(input_path))
        stats = FixStatistics()
        for fix in state["fixes"]:  # every fix of the input (a `clear` ends one)
            stats.calls += fix.statistics.calls
            stats.seconds += fix.statistics.seconds[1:]
            stats.model_seconds += fix.statistics.model_seconds[1:]
        return RunSummary(
            ranks=comm.Get_size(),
            atoms=state["atoms"],
            callbacks=stats.calls,
            seconds_per_call=stats.mean_seconds(skip=0),
            model_seconds_per_call=stats.mean_model_seconds(skip=0),
            neighbor_builds=evaluator.n_builds,
            compilations=evaluator.n_compilations,
            extrapolation_warnings=sum(fix.extrapolation_warnings for fix in state["fixes"]),
        )
    finally:
        lmp.close()
