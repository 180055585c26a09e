"""Extrapolation checks during compiled MD (:class:`~mlip.md.settings.ExtrapolationChecks`).

Between blocks the driver hands the current state to :class:`ExtrapolationMonitor`,
which evaluates the symmetry functions of the frame (one jit-compiled descriptor
pass on the run's own neighbour list, no derivatives), flags atoms outside the
model's training range (:class:`mlip.model.Extrapolation`), records one row per
check that found any, appends such frames to a file, and stops the run past
``max_warnings`` out-of-range values (n2p2's ``maxew``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from mlip.extrapolation import ExtrapolationError, resolve_policy, summary
from mlip.kernels.cell_list import CellListState
from mlip.md.outputs import append_frame, trajectory_frame
from mlip.md.settings import ExtrapolationChecks
from mlip.md.state import MDState
from mlip.md.system import MDSystem
from mlip.model import feature_bounds, make_model_functions


@dataclass(frozen=True)
class ExtrapolationRecord:
    """One check that found extrapolating atoms: ``step``, how many ``atoms`` and
    symmetry-function ``values`` were outside the range, the largest ``excursion``
    (units of the range)."""

    step: int
    atoms: int
    values: int
    excursion: float


class ExtrapolationMonitor:
    """Checks frames of ``system`` against its model's training range as ``checks`` say.

    Raises (on construction):
        ValueError: checks requested for a model without a stored feature range.
    """

    def __init__(self, system: MDSystem, checks: ExtrapolationChecks):
        resolve_policy(system.model, "warn", "extrapolation checks")  # the model must know its range
        self.system = system
        self.checks = checks
        self.every = checks.every
        self.records: list[ExtrapolationRecord] = []
        self.warnings = 0  # out-of-range values over all checked frames (n2p2's warning count)
        functions = make_model_functions(system.model.config)
        bounds = feature_bounds(system.model.config, system.model.feature_range, system.dtype)
        species = jax.numpy.asarray(system.species)

        def flags(position, cell, nl):
            features = functions.descriptors(position, cell, species, nl)
            return functions.extrapolation(features, species, bounds)

        self._flags = jax.jit(flags)

    def check(self, state: MDState, neighbors: CellListState, step: int) -> str | None:
        """Check the frame of ``state`` at ``step``; the summary line if it extrapolates.

        Raises:
            ExtrapolationError: more than ``checks.max_warnings`` values were out of
                range over the run so far (the frame is written first).
        """
        result = self._flags(state.position, state.cell, neighbors.nl)
        n = self.system.n_atoms
        count = np.asarray(result.count)[:n]
        excursion = np.asarray(result.excursion, np.float64)[:n]
        line = summary(count, excursion)
        if line is None:
            return None
        self.records.append(ExtrapolationRecord(step, int((count > 0).sum()), int(count.sum()),
                                                float(excursion.max())))
        self.warnings += int(count.sum())
        if self.checks.frames is not None:
            frame = trajectory_frame(self.system, state, step)
            frame.arrays["extrapolation_count"] = count
            frame.arrays["extrapolation_excursion"] = excursion
            append_frame(self.checks.frames, frame)
        line = f"step {step}: {line}"
        if self.checks.max_warnings is not None and self.warnings > self.checks.max_warnings:
            where = f"; the frame is in {self.checks.frames}" if self.checks.frames is not None else ""
            raise ExtrapolationError(f"{line}; {self.warnings} extrapolation warnings exceed the maximum of "
                                     f"{self.checks.max_warnings}{where}")
        return line
