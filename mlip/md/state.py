"""MD state pytrees and the observables computed from them.

Units are ASE's, so states convert to and from ``ase.Atoms`` without factors:
positions and cell Å, momenta amu·Å/t with ``t = Å·sqrt(amu/eV)`` (ASE's time unit,
``ase.units.fs`` = 0.0982 t), masses amu, forces eV/Å, energies eV, virial eV (the
strain derivative of the energy, ``stress * V`` with ASE's sign: positive =
tensile), kT eV, pressure eV/Å^3.  Padding rows (``mass > 0`` but ``atom_mask``
False) carry zero momentum and force and stay where they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ChainState:
    """Nosé-Hoover chain: thermostat positions ``xi`` (dimensionless) and velocities
    ``v_xi`` (1/t), ``[M]`` each."""

    xi: jax.Array
    v_xi: jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class MDState:
    """One point of an MD trajectory (a JAX pytree; every field is traced).

    Attributes:
        position: ``[N, 3]`` Å, never wrapped during a run (the neighbour list's
            shifts refer to these positions).
        momentum: ``[N, 3]`` amu·Å/t.
        force: ``[N, 3]`` eV/Å at ``position``.
        mass: ``[N]`` amu (1 on padding rows).
        atom_mask: ``[N]`` True for real atoms.
        cell: ``[3, 3]`` Å (rows are the cell vectors).
        energy: potential energy, eV.
        virial: ``[3, 3]`` eV, ``dE/d(strain)``.
        dudl: ``dU/dλ`` of a coupled potential ``U(λ)`` at ``position``, eV (0 for
            a plain model; see :mod:`mlip.ti`).
        chain: Nosé-Hoover chain (zeros in ensembles without one).
        heat: energy the thermostat (and barostat) took out of the system, eV, so
            that ``E_total + heat`` is the conserved quantity of Langevin runs.
        key: PRNG key of the stochastic parts.
        step: steps taken.
    """

    position: jax.Array
    momentum: jax.Array
    force: jax.Array
    mass: jax.Array
    atom_mask: jax.Array
    cell: jax.Array
    energy: jax.Array
    virial: jax.Array
    dudl: jax.Array
    chain: ChainState
    heat: jax.Array
    key: jax.Array
    step: jax.Array


def kinetic_energy(state: MDState) -> jax.Array:
    """``sum p^2 / 2m`` over real atoms, eV."""
    per_atom = jnp.sum(state.momentum**2, axis=-1) / (2.0 * state.mass)
    return jnp.sum(jnp.where(state.atom_mask, per_atom, 0.0))


def kinetic_tensor(state: MDState) -> jax.Array:
    """``sum_i p_i p_i^T / m_i`` over real atoms (3x3, eV): twice the kinetic tensor."""
    velocity = jnp.where(state.atom_mask[:, None], state.momentum / state.mass[:, None], 0.0)
    return velocity.T @ state.momentum


def volume(cell) -> jax.Array:
    """``|det(cell)|``, Å^3."""
    return jnp.abs(jnp.linalg.det(cell))


def pressure(state: MDState) -> jax.Array:
    """Instantaneous pressure ``(2 K - tr W) / (3 V)``, eV/Å^3 (``K`` kinetic energy,
    ``W`` the virial ``dE/d(strain)``): positive when the system pushes outwards;
    a third of the trace of :func:`pressure_tensor`."""
    return jnp.trace(pressure_tensor(state)) / 3.0


def pressure_tensor(state: MDState) -> jax.Array:
    """Instantaneous pressure tensor ``(K2 - W) / V`` (3x3, eV/Å^3; LAMMPS' ``pxx ..
    pxy``, minus ASE's stress); its trace over three is :func:`pressure`."""
    return (kinetic_tensor(state) - state.virial) / volume(state.cell)


def momentum_noise(key, state: MDState, kT) -> jax.Array:
    """Maxwell-Boltzmann momenta ``sqrt(m kT) * N(0, 1)`` (zero on padding rows)."""
    noise = jax.random.normal(key, state.momentum.shape, state.momentum.dtype)
    return jnp.where(state.atom_mask[:, None], jnp.sqrt(state.mass * kT)[:, None] * noise, 0.0)
