"""Free energies: coupled potentials U(λ), equilibrium thermodynamic integration
(Gauss-Legendre in λ), Frenkel-Ladd absolute free energies of crystals."""

from mlip.ti.integration import FrenkelLaddResult, TIResult, block_average, frenkel_ladd, integrate
from mlip.ti.potentials import coupled, einstein_crystal, einstein_free_energy, harmonic_free_energy

__all__ = ["FrenkelLaddResult", "TIResult", "block_average", "coupled", "einstein_crystal", "einstein_free_energy",
           "frenkel_ladd", "harmonic_free_energy", "integrate"]
