"""Equilibrium thermodynamic integration and Frenkel-Ladd free energies.

``ΔF = F_B - F_A = ∫_0^1 <dU/dλ>_λ dλ`` with ``U(λ) = (1 - λ) U_A + λ U_B``,
evaluated by Gauss-Legendre quadrature: at each node an NVT (Langevin) run with
``λ`` fixed, equilibration then production, ``<dU/dλ>`` with its standard error by
block averaging.  One compiled :class:`~mlip.md.driver.Simulation` serves every
node (``λ`` is traced).

Frenkel-Ladd: ``A`` is the translation-invariant Einstein crystal of the model's
sites with ``k_i = m_i omega^2`` (``omega`` from the model's own mean-square
displacements), whose classical free energy is analytic, so
``F_model = F_Einstein + ΔF`` (both without the free centre-of-mass motion).
Energies eV, temperatures K, times fs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units

from mlip.md.driver import THERMO_COLUMNS, Simulation, initial_momenta
from mlip.md.settings import MDSettings, Outputs
from mlip.md.system import MDSystem
from mlip.model import Model
from mlip.precision import with_float64
from mlip.ti.potentials import coupled, einstein_crystal, einstein_free_energy

DUDL_COLUMN = THERMO_COLUMNS.index("dudl_eV")


def block_average(samples: np.ndarray, n_blocks: int = 10) -> tuple[float, float]:
    """Mean of ``samples`` and its standard error from ``n_blocks`` block means
    (blocks long enough to be uncorrelated give an honest error)."""
    samples = np.asarray(samples, np.float64)
    usable = len(samples) - len(samples) % n_blocks
    if usable < 2 * n_blocks:
        raise ValueError(f"need at least {2 * n_blocks} samples for {n_blocks} blocks, got {len(samples)}")
    blocks = samples[:usable].reshape(n_blocks, -1).mean(axis=1)
    return float(samples.mean()), float(blocks.std(ddof=1) / np.sqrt(n_blocks))


@dataclass
class TIResult:
    """Result of :func:`integrate` (eV).

    Attributes:
        lambdas, weights: Gauss-Legendre nodes and weights on [0, 1].
        mean_dudl, error_dudl: ``<dU/dλ>`` and its standard error at each node.
        delta_f, delta_f_error: ``F_B - F_A`` and its standard error.
        samples: the production ``dU/dλ`` series of each node.
    """

    lambdas: np.ndarray
    weights: np.ndarray
    mean_dudl: np.ndarray
    error_dudl: np.ndarray
    delta_f: float
    delta_f_error: float
    samples: list[np.ndarray] = field(repr=False)

    def plot(self, path: str | Path, title: str = "thermodynamic integration") -> Path:
        """``<dU/dλ>`` vs λ with error bars, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.6))
        axis.errorbar(self.lambdas, self.mean_dudl, yerr=self.error_dudl, fmt="o-", capsize=3)
        axis.set_xlabel("λ")
        axis.set_ylabel("<dU/dλ> (eV)")
        axis.set_title(f"{title}: ΔF = {self.delta_f:.4f} ± {self.delta_f_error:.4f} eV")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return Path(path)


@with_float64
def check_options(temperature: float, n_points: int, equilibration: int, production: int, timestep: float,
                  n_blocks: int = 10, msd_steps: int | None = None) -> None:
    """``ValueError`` naming the first invalid option of an integration, before any MD."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 K for thermodynamic integration, got {temperature}")
    if int(n_points) != n_points or n_points < 1:
        raise ValueError(f"points (Gauss-Legendre nodes in λ) must be a positive integer, got {n_points}")
    if int(equilibration) != equilibration or equilibration < 0:
        raise ValueError(f"equilibration must be a non-negative number of steps, got {equilibration}")
    if int(production) != production or production < 2 * n_blocks:
        raise ValueError(f"production must be at least {2 * n_blocks} steps (block averages of the {n_blocks} "
                         f"blocks give the error bars), got {production}")
    if msd_steps is not None and (int(msd_steps) != msd_steps or msd_steps < 10):
        raise ValueError(f"msd-steps must be at least 10 steps (10 samples of the displacement), got {msd_steps}")
    if not (np.isfinite(timestep) and timestep > 0):
        raise ValueError(f"timestep must be > 0 fs, got {timestep}")


def integrate(simulation: Simulation, momenta: np.ndarray, n_points: int = 5, equilibration: int = 500,
              production: int = 2000, temperature: float | None = None, n_blocks: int = 10,
              progress: bool = False) -> TIResult:
    """``F_B - F_A`` for the simulation's coupled force field (Gauss-Legendre in λ).

    Each node starts from the previous node's final state (the first from the
    system's positions with ``momenta``), equilibrates ``equilibration`` steps and
    samples ``dU/dλ`` at every one of ``production`` steps.
    """
    check_options(simulation.settings.temperature if temperature is None else temperature, n_points, equilibration,
                  production, simulation.settings.timestep, n_blocks)
    nodes, weights = np.polynomial.legendre.leggauss(n_points)
    lambdas, weights = 0.5 * (nodes + 1.0), 0.5 * weights
    state, neighbors = simulation.initial_state(momenta, simulation.parameters(temperature, lam=lambdas[0]))
    means, errors, samples = [], [], []
    iterator = lambdas
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(lambdas, desc="λ points", unit="point")
    for lam in iterator:
        parameters = simulation.parameters(temperature, lam=float(lam))
        segment = simulation.run(state, neighbors, parameters, int(state.step) + equilibration)
        segment = simulation.run(segment.state, segment.neighbors, parameters, int(segment.state.step) + production,
                                 Outputs(thermo_every=1))
        state, neighbors = segment.state, segment.neighbors
        series = segment.thermo[:, DUDL_COLUMN]
        mean, error = block_average(series, n_blocks)
        means.append(mean)
        errors.append(error)
        samples.append(series)
    means, errors = np.array(means), np.array(errors)
    return TIResult(lambdas, weights, means, errors, float(weights @ means), float(np.sqrt(weights**2 @ errors**2)),
                    samples)


def switching_schedule(n_steps: int) -> np.ndarray:
    """λ after each of ``n_steps`` steps, from 0 to 1 with vanishing first to fourth
    derivatives at both ends: ``τ^5 (70 τ^4 - 315 τ^3 + 540 τ^2 - 420 τ + 126)``
    (de Koning and Antonelli; Freitas, Asta & de Koning, Comput. Mater. Sci. 112,
    333 (2016))."""
    tau = np.arange(1, n_steps + 1) / n_steps
    return tau**5 * (70 * tau**4 - 315 * tau**3 + 540 * tau**2 - 420 * tau + 126)


@dataclass
class SwitchingResult:
    """Non-equilibrium switching estimate (eV): ``ΔF = (W_f - W_b) / 2`` and the
    dissipated energy ``(W_f + W_b) / 2`` (>= 0 on average; small for slow switches)."""

    work_forward: float
    work_backward: float

    @property
    def delta_f(self) -> float:
        return 0.5 * (self.work_forward - self.work_backward)

    @property
    def dissipation(self) -> float:
        return 0.5 * (self.work_forward + self.work_backward)


def _work(simulation: Simulation, state, neighbors, start: float, lambdas: np.ndarray, temperature):
    """Switch λ from ``start`` along ``lambdas`` (one value per step) and return the
    work ``sum_k (λ_(k+1) - λ_k) dU/dλ(r_k)`` (exact for the linear coupling) and the
    end state."""
    parameters = simulation.parameters(temperature, lam=lambdas)
    dudl_start = float(state.dudl)
    segment = simulation.run(state, neighbors, parameters, int(state.step) + len(lambdas), Outputs(thermo_every=1))
    dudl = np.concatenate([[dudl_start], segment.thermo[:-1, DUDL_COLUMN]])
    steps = np.diff(np.concatenate([[start], lambdas]))
    return float(steps @ dudl), segment.state, segment.neighbors


@with_float64
def switch(simulation: Simulation, momenta: np.ndarray, equilibration: int = 1000, switch_steps: int = 5000,
           temperature: float | None = None) -> SwitchingResult:
    """``F_B - F_A`` by one forward (0 -> 1) and one backward (1 -> 0) switch of
    ``switch_steps`` steps, each after ``equilibration`` steps at its start λ."""
    lambdas = switching_schedule(switch_steps)
    state, neighbors = simulation.initial_state(momenta, simulation.parameters(temperature, lam=0.0))
    segment = simulation.run(state, neighbors, simulation.parameters(temperature, lam=0.0),
                             int(state.step) + equilibration)
    forward, state, neighbors = _work(simulation, segment.state, segment.neighbors, 0.0, lambdas, temperature)
    segment = simulation.run(state, neighbors, simulation.parameters(temperature, lam=1.0),
                             int(state.step) + equilibration)
    backward, _, _ = _work(simulation, segment.state, segment.neighbors, 1.0, 1.0 - lambdas, temperature)
    return SwitchingResult(forward, backward)


@dataclass
class FrenkelLaddResult:
    """Absolute classical free energy of a crystal (eV; centre-of-mass motion excluded).

    Attributes:
        free_energy: ``F_Einstein + ΔF``, eV (per atom: :attr:`per_atom`).
        einstein: analytic free energy of the reference, eV.
        omega: the reference's angular frequency, 1/fs.
        mean_square_displacement: model's ``<|u - D|^2>`` per atom at ``temperature``, Å^2.
        ti: the integration from the Einstein crystal to the model.
    """

    free_energy: float
    free_energy_error: float
    einstein: float
    omega: float
    mean_square_displacement: float
    n_atoms: int
    temperature: float
    ti: TIResult

    @property
    def per_atom(self) -> float:
        return self.free_energy / self.n_atoms


@with_float64
def frenkel_ladd(model: Model, atoms: Atoms, temperature: float, n_points: int = 6, equilibration: int = 500,
                 production: int = 2000, msd_steps: int = 2000, timestep: float = 1.0, tau: float = 50.0,
                 seed: int = 0, skin: float = 0.5, progress: bool = False) -> FrenkelLaddResult:
    """Classical free energy of the crystal ``atoms`` (its positions are the lattice
    sites, ideally relaxed) under ``model`` at ``temperature`` (K).

    The spring frequency comes from an NVT run of the model (``msd_steps``) by
    equipartition, ``omega^2 = 3 kT (N - 1) / (N <m |u - D|^2>)``; it sets the
    efficiency of the integration, not its result.

    Raises:
        ValueError: an invalid option (named), before any MD.
    """
    check_options(temperature, n_points, equilibration, production, timestep, msd_steps=msd_steps)
    settings = MDSettings("langevin", temperature=temperature, timestep=timestep, tau=tau, seed=seed, skin=skin,
                          block=100)
    system = MDSystem.from_atoms(model, atoms, skin)
    n = system.n_atoms
    sites = system.position.copy()
    mass = system.mass
    momenta = initial_momenta(atoms, settings)

    # mean-square displacement of the model around the sites (centre-of-mass drift removed)
    plain = Simulation(system, settings)
    state, neighbors = plain.initial_state(momenta, plain.parameters())
    segment = plain.run(state, neighbors, plain.parameters(), equilibration)
    displacements = []
    state, neighbors = segment.state, segment.neighbors
    for _ in range(10):
        segment = plain.run(state, neighbors, plain.parameters(), int(state.step) + msd_steps // 10)
        state, neighbors = segment.state, segment.neighbors
        u = np.asarray(state.position)[:n] - sites[:n]
        u -= (mass[:n, None] * u).sum(axis=0) / mass[:n].sum()
        displacements.append(np.sum(u * u, axis=1))
    msd = np.mean(displacements, axis=0)  # [n] Å^2
    kT = units.kB * temperature
    omega = float(np.sqrt(3.0 * kT * (n - 1) / n / np.mean(mass[:n] * msd)))  # 1/ASE time

    einstein = einstein_crystal(sites, mass * omega**2, mass=mass, atom_mask=system.atom_mask)
    simulation = Simulation(system, settings, coupled(einstein, system.potential()))
    ti = integrate(simulation, momenta, n_points, equilibration, production, progress=progress)
    f_einstein = einstein_free_energy(n, omega, kT)
    return FrenkelLaddResult(f_einstein + ti.delta_f, ti.delta_f_error, f_einstein, omega * units.fs,
                             float(msd.mean()), n, temperature, ti)


@with_float64
def model_to_model(model_a: Model, model_b: Model, atoms: Atoms, temperature: float, n_points: int = 5,
                   equilibration: int = 500, production: int = 2000, timestep: float = 1.0, tau: float = 50.0,
                   seed: int = 0, skin: float = 0.5, progress: bool = False) -> TIResult:
    """``F_B - F_A`` (eV) between two models of the same elements for ``atoms`` at
    ``temperature`` (K), NVT at the cell of ``atoms``.  The models may have
    different cutoffs: both read one neighbour list of the larger cutoff.

    Raises:
        ValueError: an invalid option (named), before any MD.
    """
    check_options(temperature, n_points, equilibration, production, timestep)
    settings = MDSettings("langevin", temperature=temperature, timestep=timestep, tau=tau, seed=seed, skin=skin,
                          block=100)
    system = MDSystem.from_atoms(model_a, atoms, skin, cutoff=max(model_a.cutoff, model_b.cutoff))
    simulation = Simulation(system, settings, coupled(system.potential(), system.potential(model_b)))
    return integrate(simulation, initial_momenta(atoms, settings), n_points, equilibration, production,
                     progress=progress)
