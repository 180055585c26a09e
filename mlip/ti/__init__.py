"""Free energies: coupled potentials U(λ), equilibrium thermodynamic integration
(Gauss-Legendre in λ) between a model and an Einstein crystal or another model,
non-equilibrium switching, Frenkel-Ladd absolute free energies of crystals."""

from mlip.ti.integration import (
    FrenkelLaddResult,
    SwitchingResult,
    TIResult,
    block_average,
    frenkel_ladd,
    integrate,
    model_to_model,
    switch,
    switching_schedule,
)
from mlip.ti.harmonic import harmonic_crystal
from mlip.ti.potentials import coupled, einstein_crystal, einstein_free_energy, harmonic_free_energy

__all__ = ["FrenkelLaddResult", "SwitchingResult", "TIResult", "block_average", "coupled", "einstein_crystal",
           "einstein_free_energy", "frenkel_ladd", "harmonic_crystal", "harmonic_free_energy", "integrate",
           "model_to_model", "switch", "switching_schedule"]
