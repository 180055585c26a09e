"""Stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020);
anisotropic and triclinic forms after Del Tatto, Raiteri, Bernetti & Bussi, Appl.
Sci. 12, 1139 (2022)): one overdamped Langevin step of the cell per MD step.

The cell moves by a small deformation ``A``: Cartesian positions ``r -> A r``,
cell vectors ``h -> A h`` (columns of ``h`` are the cell vectors, so the state's
row-vector ``cell`` becomes ``cell A^T``) and momenta ``p -> A^-T p``.  Scaling
positions and momenta together keeps phase-space volume, so the force on the
strain ``e`` of ``A = I + e`` is the generalised force

    f = V (P_int - P0 I) = K2 - W - P0 V I          (eV)

with ``K2 = sum_i p_i p_i^T / m_i``, ``W`` the virial ``dU/d(strain)`` and ``P0``
the target (hydrostatic) pressure.  Each free strain component gets the
mobility ``m = beta / (3 tau_p V)`` (``beta`` a guessed isothermal compressibility,
``tau_p`` the barostat time), and the Itô drift terms that make the stationary
distribution exact (for dt -> 0) follow from the Fokker-Planck equation of the
cell coordinates; the target measures are those of the usual NPT ensembles:

* ``isotropic``: ``eps = ln V`` with ``d eps = (beta / tau_p) (P - P0) dt +
  sqrt(2 kT beta dt / (V tau_p)) R`` (the mobility's 1/V dependence and the
  Jacobian of ``dV`` cancel, as in GROMACS' C-rescale), ``A = exp(d eps / 3) I``;
  samples ``V^N exp(-(U + P0 V) / kT) dV``.
* ``anisotropic``: the three diagonal strains, ``A = diag(exp(y))`` with
  ``y_a = m f_aa dt + sqrt(2 kT m dt) R_a``; samples a uniform measure in the
  three box lengths (the isotropic one for the volume) and keeps cell angles of
  an orthorhombic box.
* ``triclinic``: all six strains of an upper-triangular ``h`` (ASE's standard
  form: ``a`` along x, ``b`` in the xy-plane), ``A = I + e`` with
  ``e_ab = m (f_ab + kT c_ab) dt + sqrt(2 kT m dt) R_ab`` for ``a <= b`` and
  ``c = diag(3, 1, -1)``, which samples the Martyna-Tobias-Klein flexible-cell
  measure ``det(h)^-2 dh`` with rotations removed (uniform in box lengths and
  tilt ratios ``h12/h22, h13/h33, h23/h33``).

``beta`` and ``tau_p`` only set how fast the cell relaxes, not the ensemble.
Units: energies eV, volumes Å^3, pressure eV/Å^3, times in ASE's unit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COUPLINGS = ("isotropic", "anisotropic", "triclinic")

# Itô drift of the triclinic strains (units of kT times the mobility); see module doc
_TRICLINIC_DRIFT = (3.0, 1.0, -1.0)


def check_coupling(coupling: str) -> str:
    """``coupling`` if it names a cell coupling, else a ``ValueError`` listing them."""
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown NPT coupling {coupling!r}; choose one of {list(COUPLINGS)}")
    return coupling


def is_upper_triangular_cell(cell, tolerance: float = 1e-10) -> bool:
    """True when the row-vector ``cell`` (Å) has ``a`` along x and ``b`` in the xy-plane
    (``cell[0, 1:] = cell[1, 2] = 0``), the form triclinic coupling needs."""
    cell = jnp.asarray(cell)
    scale = jnp.max(jnp.abs(cell))
    return bool(jnp.all(jnp.abs(jnp.array([cell[0, 1], cell[0, 2], cell[1, 2]])) <= tolerance * scale))


def generalized_force(kinetic_tensor, virial, volume, target_pressure):
    """``f = K2 - W - P0 V I`` (eV, 3x3): the free-energy gradient the cell descends.

    Args:
        kinetic_tensor: ``K2 = sum_i p_i p_i^T / m_i``, eV (twice the kinetic tensor).
        virial: ``W = dU/d(strain)``, eV.
        volume: Å^3.
        target_pressure: ``P0``, eV/Å^3.
    """
    return kinetic_tensor - virial - target_pressure * volume * jnp.eye(3, dtype=virial.dtype)


def cell_deformation(key, force, volume, kT, mobility_dt, coupling: str):
    """The deformation ``A`` (3x3, acting on Cartesian column vectors) of one
    barostat step.

    Args:
        key: PRNG key of the noise.
        force: generalised force ``f`` of :func:`generalized_force`, eV.
        volume: Å^3.
        kT: eV.
        mobility_dt: ``beta dt / (3 tau_p)`` in Å^3/eV (divided by ``V`` here).
        coupling: ``isotropic``, ``anisotropic`` or ``triclinic``.
    """
    dtype = force.dtype
    m_dt = mobility_dt / volume
    if coupling == "isotropic":
        d_eps = m_dt * jnp.trace(force) + jnp.sqrt(6.0 * kT * m_dt) * jax.random.normal(key, (), dtype)
        return jnp.exp(d_eps / 3.0) * jnp.eye(3, dtype=dtype)
    if coupling == "anisotropic":
        y = m_dt * jnp.diagonal(force) + jnp.sqrt(2.0 * kT * m_dt) * jax.random.normal(key, (3,), dtype)
        return jnp.diag(jnp.exp(y))
    if coupling == "triclinic":
        drift = jnp.diag(jnp.asarray(_TRICLINIC_DRIFT, dtype))
        noise = jax.random.normal(key, (3, 3), dtype)
        strain = m_dt * (force + kT * drift) + jnp.sqrt(2.0 * kT * m_dt) * noise
        return jnp.eye(3, dtype=dtype) + jnp.triu(strain)
    raise ValueError(f"unknown NPT coupling {coupling!r}; choose one of {list(COUPLINGS)}")
