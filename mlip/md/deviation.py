"""Model deviation of an ensemble during compiled MD (:class:`~mlip.md.settings.ModelDeviationChecks`).

Between blocks the driver hands the current frame to :class:`ModelDeviationMonitor`:
every member's energy, forces and virial from one jitted evaluation on the run's own
neighbour list (descriptors once, one batched pullback), reduced to a row of
DeePMD-kit's ``model_devi.out`` (:func:`mlip.uncertainty.model_devi_row`), which is
appended to the file; frames above ``dump_above`` are appended to ``dump_file``, and
a frame above ``stop_above`` ends the run.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from mlip.kernels.cell_list import CellListState
from mlip.md.outputs import append_frame, trajectory_frame
from mlip.md.settings import ModelDeviationChecks
from mlip.md.state import MDState
from mlip.md.system import MDSystem
from mlip.model import cast_params, make_model_functions
from mlip.uncertainty import force_deviation, model_devi_header, model_devi_line, model_devi_row


class ModelDeviationError(ValueError):
    """The force deviation of the ensemble passed ``stop_above``."""


class ModelDeviationMonitor:
    """Rows of ``model_devi.out`` for frames of ``system`` (an ensemble model).

    Raises (on construction):
        ValueError: the system's model is not an ensemble.
    """

    def __init__(self, system: MDSystem, checks: ModelDeviationChecks):
        config = system.model.config
        if config.ensemble < 2:
            raise ValueError("model deviation needs an ensemble model (train with [model] ensemble = N, or "
                             "mlip.model.stack_models); this model is a single network per element")
        self.system = system
        self.checks = checks
        self.every = checks.every
        self.rows: list[np.ndarray] = []  # [step, 7 columns]
        functions = make_model_functions(config)
        params = cast_params(system.model.params, system.dtype)
        species = jax.numpy.asarray(system.species)
        rows = None if system.element_rows is None else tuple(jax.numpy.asarray(r) for r in system.element_rows)
        self._members = jax.jit(lambda position, cell, nl: functions.member_results(params, position, cell, species,
                                                                                    nl, rows))
        if checks.file is not None:
            path = Path(checks.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(model_devi_header() + "\n")

    def check(self, state: MDState, neighbors: CellListState, step: int) -> None:
        """Append the row of the frame of ``state`` at ``step``; dump or stop as the checks say.

        Raises:
            ModelDeviationError: ``max_devi_f`` above ``checks.stop_above``.
        """
        n = self.system.n_atoms
        result = self._members(state.position, state.cell, neighbors.nl)
        forces = np.asarray(result.forces, np.float64)[:, :n]
        row = model_devi_row(np.asarray(result.energy), forces, np.asarray(result.virial))
        self.rows.append(np.concatenate([[step], row]))
        checks = self.checks
        if checks.file is not None:
            with open(checks.file, "a") as handle:
                handle.write(model_devi_line(step, row) + "\n")
        largest = row[3]
        above_stop = checks.stop_above is not None and largest > checks.stop_above
        if checks.dump_file is not None and (above_stop or (checks.dump_above is not None
                                                            and largest >= checks.dump_above)):
            frame = trajectory_frame(self.system, state, step)
            frame.arrays["devi_f"] = force_deviation(forces)
            append_frame(checks.dump_file, frame)
        if above_stop:
            where = f"; the frame is in {checks.dump_file}" if checks.dump_file is not None else ""
            raise ModelDeviationError(f"step {step}: the ensemble's largest force deviation max_devi_f = "
                                      f"{largest:.4g} eV/Å is above stop_above = {checks.stop_above} eV/Å{where}")
        return None
