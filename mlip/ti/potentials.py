"""Reference potentials and the coupled potential of thermodynamic integration.

A *potential* is ``(position, cell, neighbors) -> (neighbors, energy eV, force eV/Å,
virial eV)`` (as :meth:`mlip.md.system.MDSystem.potential`); the coupled force field

    U(λ) = (1 - λ) U_A + λ U_B,   dU/dλ = U_B - U_A,

is evaluated in one compiled step with ``λ`` traced (the MD driver's ``lam``).

The Einstein crystal ties every atom to its lattice site by a spring; the
translation-invariant form used for Frenkel-Ladd integration measures the
displacements from the mass-weighted centre-of-mass displacement ``D``::

    U_E = 1/2 sum_i k_i |u_i - D|^2,   u_i = r_i - r0_i,   D = sum_i m_i u_i / M

With ``k_i = m_i omega^2`` its normal modes are ``3(N - 1)`` oscillators of angular
frequency ``omega`` and a free centre of mass, like a translation-invariant model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

# hbar in eV * (ASE time unit)
HBAR = units._hbar / units._e * units.second


def einstein_crystal(sites, springs, mass=None, atom_mask=None):
    """Harmonic springs to ``sites`` (``[N, 3]`` Å) with constants ``springs``
    (``[N]`` eV/Å^2); with ``mass`` (``[N]`` amu) the displacements are taken
    relative to the centre-of-mass displacement (translation invariant).  Padding
    rows (``atom_mask`` False) carry no spring."""
    sites = jnp.asarray(sites)
    springs = jnp.asarray(springs)
    if atom_mask is not None:
        springs = jnp.where(jnp.asarray(atom_mask), springs, 0.0)

    def energy(position):
        u = position - sites
        if mass is not None:
            weights = jnp.asarray(mass) * (springs > 0)
            u = u - jnp.sum(weights[:, None] * u, axis=0) / jnp.sum(weights)
        return 0.5 * jnp.sum(springs[:, None] * u * u)

    def potential(position, cell, neighbors):
        value, gradient = jax.value_and_grad(energy)(position)
        # dE/d(strain) with the sites carried along the affine deformation (u -> u (1 + strain))
        virial = jnp.einsum("ia,ib->ab", position - sites, gradient)
        return neighbors, value, -gradient, 0.5 * (virial + virial.T)

    return potential


def coupled(potential_a, potential_b):
    """``(position, cell, neighbors, lam) -> (neighbors, E, F, W, dU/dλ)`` of
    ``U(λ) = (1 - λ) U_A + λ U_B``."""

    def force_field(position, cell, neighbors, lam):
        neighbors, energy_a, force_a, virial_a = potential_a(position, cell, neighbors)
        neighbors, energy_b, force_b, virial_b = potential_b(position, cell, neighbors)
        mix = lambda a, b: (1.0 - lam) * a + lam * b  # noqa: E731
        return neighbors, mix(energy_a, energy_b), mix(force_a, force_b), mix(virial_a, virial_b), energy_b - energy_a

    return force_field


def harmonic_free_energy(omegas, kT: float) -> float:
    """Classical free energy ``kT sum ln(hbar omega / kT)`` of oscillators with
    angular frequencies ``omegas`` (1/ASE time), eV."""
    omegas = np.asarray(omegas, np.float64)
    return float(kT * np.sum(np.log(HBAR * omegas / kT)))


def einstein_free_energy(n_atoms: int, omega: float, kT: float, translation_invariant: bool = True) -> float:
    """Classical free energy of an Einstein crystal with one angular frequency
    ``omega`` (1/ASE time), eV: ``3N`` oscillators, or ``3(N - 1)`` and a free
    centre of mass (excluded) for the translation-invariant form."""
    modes = 3 * (n_atoms - 1) if translation_invariant else 3 * n_atoms
    return harmonic_free_energy(np.full(modes, omega), kT)
