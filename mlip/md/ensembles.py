"""Integrators: NVE velocity Verlet, NVT Langevin (BAOAB) and Nosé-Hoover chains,
NPT stochastic cell rescaling (Bernetti & Bussi 2020; isotropic, anisotropic or
triclinic) with Langevin.

Each ensemble is a factory returning an :class:`Ensemble` whose ``step(state,
neighbors, parameters) -> (state, neighbors)`` is pure and jit-able; ``kT`` and the
target pressure are traced fields of :class:`StepParameters`, so changing them
does not recompile.  All share one velocity-Verlet skeleton (half kick, drift,
force, half kick); thermostats and barostats act around it.  Units as in
:mod:`mlip.md.state`; time steps and coupling times are given in fs and
converted to ASE's time unit here.

``force_field(position, cell, neighbors, lam) -> (neighbors, energy, force, virial,
dudl)`` is the potential at coupling parameter ``lam`` (traced; see :mod:`mlip.ti`)
with ``dudl = dU/dλ``; :func:`uncoupled` makes one from a plain potential
``(position, cell, neighbors) -> (neighbors, energy, force, virial)`` such as
:meth:`mlip.md.system.MDSystem.potential`, which updates the jit neighbour list, so
lists are rebuilt inside the compiled loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from mlip.md.barostat import cell_deformation, check_coupling, generalized_force
from mlip.md.state import ChainState, MDState, kinetic_energy, kinetic_tensor, momentum_noise, volume

Potential = Callable[[jax.Array, jax.Array, Any], tuple[Any, jax.Array, jax.Array, jax.Array]]
ForceField = Callable[[jax.Array, jax.Array, Any, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array, jax.Array]]

# Suzuki-Yoshida weights (order 4, three stages) for the Nosé-Hoover chain
_W = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_YOSHIDA = (_W, 1.0 - 2.0 * _W, _W)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StepParameters:
    """Traced targets of a step: ``kT`` (eV), ``pressure`` (eV/Å^3) and the
    coupling parameter ``lam`` of a coupled potential (dimensionless)."""

    kT: jax.Array
    pressure: jax.Array
    lam: jax.Array


class Ensemble(NamedTuple):
    """An integrator.

    Attributes:
        name: ``nve``, ``langevin``, ``nose-hoover`` or ``npt``.
        step: ``(state, neighbors, parameters) -> (state, neighbors)``, one time step.
        degrees_of_freedom: ``n_atoms -> int`` for the temperature ``2 K / (dof kB)``.
        conserved: ``(state, parameters) -> eV``, the quantity the integrator
            conserves up to discretisation error (NaN where there is none).
        chain_length: Nosé-Hoover chain length of the state (1 if unused).
    """

    name: str
    step: Callable
    degrees_of_freedom: Callable[[int], int]
    conserved: Callable
    chain_length: int = 1


def uncoupled(potential: Potential) -> ForceField:
    """The force field of a plain potential: ignores ``lam``, ``dU/dλ = 0``."""

    def force_field(position, cell, neighbors, lam):
        neighbors, energy, force, virial = potential(position, cell, neighbors)
        return neighbors, energy, force, virial, jnp.zeros_like(energy)

    return force_field


def init_state(force_field: ForceField, neighbors, position, momentum, mass, atom_mask, cell, key, lam,
               chain_length: int = 1) -> tuple[MDState, Any]:
    """A state at ``position`` with forces evaluated at ``lam``, and the updated neighbours."""
    dtype = position.dtype
    neighbors, energy, force, virial, dudl = force_field(position, cell, neighbors, lam)
    zeros = jnp.zeros(chain_length, dtype)
    state = MDState(position, jnp.where(atom_mask[:, None], momentum, 0.0), jnp.where(atom_mask[:, None], force, 0.0),
                    mass, atom_mask, cell, energy, virial, dudl, ChainState(zeros, zeros), jnp.zeros((), dtype), key,
                    jnp.zeros((), jnp.int32))
    return state, neighbors


# ----------------------------------------------------------------- shared pieces


def _kick(state: MDState, dt) -> MDState:
    return dataclasses.replace(state, momentum=state.momentum + dt * state.force)


def _drift(state: MDState, dt) -> MDState:
    velocity = jnp.where(state.atom_mask[:, None], state.momentum / state.mass[:, None], 0.0)
    return dataclasses.replace(state, position=state.position + dt * velocity)


def _refresh(force_field: ForceField, state: MDState, neighbors, lam) -> tuple[MDState, Any]:
    neighbors, energy, force, virial, dudl = force_field(state.position, state.cell, neighbors, lam)
    force = jnp.where(state.atom_mask[:, None], force, 0.0)
    return dataclasses.replace(state, energy=energy, force=force, virial=virial, dudl=dudl), neighbors


def _velocity_verlet(force_field: ForceField, state: MDState, neighbors, dt, lam) -> tuple[MDState, Any]:
    state = _drift(_kick(state, 0.5 * dt), dt)
    state, neighbors = _refresh(force_field, state, neighbors, lam)
    return _kick(state, 0.5 * dt), neighbors


def _langevin_o(state: MDState, kT, c1) -> MDState:
    """Exact Ornstein-Uhlenbeck update of the momenta; the kinetic energy it removes
    goes into ``heat``."""
    key, noise_key = jax.random.split(state.key)
    before = kinetic_energy(state)
    momentum = c1 * state.momentum + jnp.sqrt(1.0 - c1 * c1) * momentum_noise(noise_key, state, kT)
    state = dataclasses.replace(state, momentum=momentum, key=key)
    return dataclasses.replace(state, heat=state.heat + before - kinetic_energy(state))


def _n_real(state: MDState) -> jax.Array:
    return jnp.sum(state.atom_mask)


def _total_energy(state: MDState) -> jax.Array:
    return state.energy + kinetic_energy(state)


def _internal_time(fs: float, what: str) -> float:
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"{what} must be a positive number of fs, got {fs}")
    return float(fs) * units.fs


# ----------------------------------------------------------------- ensembles


def nve(force_field: ForceField, timestep_fs: float) -> Ensemble:
    """Velocity Verlet (the same update as ASE's ``VelocityVerlet``)."""
    dt = _internal_time(timestep_fs, "timestep")

    def step(state, neighbors, parameters: StepParameters):
        state, neighbors = _velocity_verlet(force_field, state, neighbors, dt, parameters.lam)
        return dataclasses.replace(state, step=state.step + 1), neighbors

    return Ensemble("nve", step, lambda n: 3 * n - 3, lambda state, parameters: _total_energy(state))


def langevin(force_field: ForceField, timestep_fs: float, tau_fs: float = 100.0) -> Ensemble:
    """Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013): friction
    ``1 / tau`` with ``tau`` the damping time in fs (LAMMPS' ``damp``).  The
    conserved quantity is ``E_total + heat``."""
    dt = _internal_time(timestep_fs, "timestep")
    c1 = float(np.exp(-dt / _internal_time(tau_fs, "tau")))

    def step(state, neighbors, parameters: StepParameters):
        state = _drift(_kick(state, 0.5 * dt), 0.5 * dt)
        state = _langevin_o(state, parameters.kT, c1)
        state, neighbors = _refresh(force_field, _drift(state, 0.5 * dt), neighbors, parameters.lam)
        state = _kick(state, 0.5 * dt)
        return dataclasses.replace(state, step=state.step + 1), neighbors

    return Ensemble("langevin", step, lambda n: 3 * n,
                    lambda state, parameters: _total_energy(state) + state.heat)


def _chain_masses(kT, dof, tau, length: int):
    """``Q_0 = dof kT tau^2``, ``Q_j = kT tau^2`` (Martyna, Klein & Tuckerman 1992)."""
    masses = jnp.full(length, kT * tau * tau)
    return masses.at[0].multiply(dof)


def _chain_half_step(state: MDState, kT, dof, tau, dt_half, length: int) -> MDState:
    """Propagate the chain and scale the momenta over ``dt_half`` (Suzuki-Yoshida
    order 4; Martyna, Tuckerman, Tobias & Klein 1996)."""
    q = _chain_masses(kT, dof, tau, length)
    xi, v = state.chain.xi, state.chain.v_xi
    kinetic = kinetic_energy(state)
    scale = jnp.ones((), kinetic.dtype)

    def force(j, v, kinetic):
        if j == 0:
            return (2.0 * kinetic - dof * kT) / q[0]
        return (q[j - 1] * v[j - 1] ** 2 - kT) / q[j]

    for weight in _YOSHIDA:
        h = weight * dt_half
        quarter = 0.5 * h  # each velocity pass covers half of the sub-step
        v = v.at[length - 1].add(quarter * force(length - 1, v, kinetic))
        for j in range(length - 2, -1, -1):
            a = jnp.exp(-0.5 * quarter * v[j + 1])
            v = v.at[j].set((v[j] * a + quarter * force(j, v, kinetic)) * a)
        factor = jnp.exp(-h * v[0])
        scale = scale * factor
        kinetic = kinetic * factor * factor
        xi = xi + h * v
        for j in range(length - 1):
            a = jnp.exp(-0.5 * quarter * v[j + 1])
            v = v.at[j].set((v[j] * a + quarter * force(j, v, kinetic)) * a)
        v = v.at[length - 1].add(quarter * force(length - 1, v, kinetic))
    return dataclasses.replace(state, momentum=state.momentum * scale, chain=ChainState(xi, v))


def nose_hoover(force_field: ForceField, timestep_fs: float, tau_fs: float = 100.0,
                chain_length: int = 3) -> Ensemble:
    """Nosé-Hoover chain thermostat around velocity Verlet, coupling time ``tau``
    (fs, LAMMPS' ``Tdamp``), ``3N - 3`` degrees of freedom.  Conserved:
    ``E_total + sum_j Q_j v_j^2 / 2 + dof kT xi_0 + kT sum_(j>0) xi_j``."""
    if chain_length < 1:
        raise ValueError(f"chain_length must be at least 1, got {chain_length}")
    dt = _internal_time(timestep_fs, "timestep")
    tau = _internal_time(tau_fs, "tau")

    def dof(state):
        return 3.0 * _n_real(state) - 3.0

    def step(state, neighbors, parameters: StepParameters):
        kT = parameters.kT
        state = _chain_half_step(state, kT, dof(state), tau, 0.5 * dt, chain_length)
        state, neighbors = _velocity_verlet(force_field, state, neighbors, dt, parameters.lam)
        state = _chain_half_step(state, kT, dof(state), tau, 0.5 * dt, chain_length)
        return dataclasses.replace(state, step=state.step + 1), neighbors

    def conserved(state, parameters: StepParameters):
        kT = parameters.kT
        q = _chain_masses(kT, dof(state), tau, chain_length)
        chain = state.chain
        return (_total_energy(state) + 0.5 * jnp.sum(q * chain.v_xi**2) + dof(state) * kT * chain.xi[0]
                + kT * jnp.sum(chain.xi[1:]))

    return Ensemble("nose-hoover", step, lambda n: 3 * n - 3, conserved, chain_length)


def npt(force_field: ForceField, timestep_fs: float, tau_fs: float = 100.0, tau_p_fs: float = 1000.0,
        compressibility_per_gpa: float = 0.01, coupling: str = "isotropic") -> Ensemble:
    """Stochastic cell rescaling (:mod:`mlip.md.barostat`; Bernetti & Bussi 2020,
    isotropic, anisotropic or triclinic) with a Langevin (BAOAB) thermostat.

    Once per step, between the drifts and the force evaluation, the cell takes one
    barostat step driven by the instantaneous pressure tensor (virial of the last
    force evaluation plus the current kinetic tensor); positions and cell deform by
    ``A``, momenta by ``A^-T``.  ``compressibility`` (guessed isothermal
    compressibility) and ``tau_p`` set how fast the cell relaxes, not the ensemble.

    Conserved (effective energy, Bernetti & Bussi's ``H~``): ``E_total + P0 V +
    heat``, where ``heat`` collects what the thermostat and the barostat moves
    changed in ``K + U + P0 V``; the barostat's ``dU`` is the trapezoidal strain
    integral ``(W_before + W_after) : e / 2`` of the deformation ``e = A - I``.
    """
    check_coupling(coupling)
    dt = _internal_time(timestep_fs, "timestep")
    c1 = float(np.exp(-dt / _internal_time(tau_fs, "tau")))
    tau_p = _internal_time(tau_p_fs, "tau_p")
    if not (np.isfinite(compressibility_per_gpa) and compressibility_per_gpa > 0):
        raise ValueError(f"compressibility must be positive (1/GPa), got {compressibility_per_gpa}")
    mobility_dt = float(compressibility_per_gpa) / units.GPa * dt / (3.0 * tau_p)  # Å^3/eV

    def barostat(state: MDState, parameters: StepParameters):
        key, noise_key = jax.random.split(state.key)
        v = volume(state.cell)
        force = generalized_force(kinetic_tensor(state), state.virial, v, parameters.pressure)
        deformation = cell_deformation(noise_key, force, v, parameters.kT, mobility_dt, coupling)
        moved = dataclasses.replace(state, position=state.position @ deformation.T, cell=state.cell @ deformation.T,
                                    momentum=state.momentum @ jnp.linalg.inv(deformation), key=key)
        work = kinetic_energy(moved) - kinetic_energy(state) + parameters.pressure * (volume(moved.cell) - v)
        return moved, deformation, work

    def step(state, neighbors, parameters: StepParameters):
        state = _drift(_kick(state, 0.5 * dt), 0.5 * dt)
        state = _langevin_o(state, parameters.kT, c1)
        virial_before = state.virial
        state, deformation, work = barostat(_drift(state, 0.5 * dt), parameters)
        state, neighbors = _refresh(force_field, state, neighbors, parameters.lam)
        strain = deformation - jnp.eye(3, dtype=deformation.dtype)
        work = work + 0.5 * jnp.sum((virial_before + state.virial) * strain)
        state = _kick(dataclasses.replace(state, heat=state.heat - work), 0.5 * dt)
        return dataclasses.replace(state, step=state.step + 1), neighbors

    def conserved(state, parameters: StepParameters):
        return _total_energy(state) + state.heat + parameters.pressure * volume(state.cell)

    return Ensemble("npt", step, lambda n: 3 * n, conserved)


ENSEMBLES = {"nve": nve, "langevin": langevin, "nvt": langevin, "nose-hoover": nose_hoover, "npt": npt}
