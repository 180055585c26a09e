"""Compiled molecular dynamics: ensembles (NVE, Langevin, Nosé-Hoover chains, NPT),
the driver with overflow replay, thermo log, trajectory and restart files."""

from mlip.md.driver import MDResult, run_md
from mlip.md.settings import MDSettings, Outputs
from mlip.md.ensembles import Ensemble, StepParameters, langevin, nose_hoover, npt, nve
from mlip.md.state import MDState

__all__ = ["Ensemble", "MDResult", "MDSettings", "MDState", "Outputs", "StepParameters", "langevin", "nose_hoover",
           "npt", "nve", "run_md"]
