"""Oracles for tests/test_learn.py, importable as ``learn_oracles:NAME`` by ``mlip learn``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mlip.training.generate import stillinger_weber_si


class _Wrapped(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, before=None, change=None):
        super().__init__()
        self.inner, self.before, self.change = stillinger_weber_si(), before, change

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.before is not None:
            self.before()
        copy = self.atoms.copy()
        copy.calc = self.inner
        self.results = {"energy": copy.get_potential_energy(), "forces": copy.get_forces(),
                        "stress": copy.get_stress()}
        if self.change is not None:
            self.change(self.results)


def killing_stillinger_weber(counter: str, kill_at: int) -> Calculator:
    """Stillinger-Weber labels; the process SIGKILLs itself when asked for label
    number ``kill_at`` (counted over processes in the file ``counter``)."""

    def count():
        path = Path(counter)
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        if n == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return _Wrapped(before=count)


def nan_energies() -> Calculator:
    """An oracle whose energies are NaN (every label must be marked failed)."""
    return _Wrapped(change=lambda results: results.update(energy=np.nan))


def raising() -> Calculator:
    """An oracle that raises for every structure."""

    def fail():
        raise RuntimeError("the DFT code crashed")

    return _Wrapped(before=fail)
