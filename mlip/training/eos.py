"""Equation-of-state (physics-informed) loss terms for reference crystals.

For a reference crystal at volume ``V0`` the descriptors along isotropic strain,
``G(V) = G(r_ij (V/V0)^(1/3))``, are expanded once to second order in ``V - V0``
(``G0``, ``G1 = dG/dV``, ``G2 = d2G/dV2``, by forward-mode autodiff of the model's
descriptor kernel).  Inside the jitted loss the model energy along that curve,
``E(t) = sum_i NN(G0 + t G1 + t^2/2 G2)``, gives exactly

* pressure ``P = -dE/dV`` (eV/Å^3), and
* bulk modulus ``B = V d2E/dV2`` (eV/Å^3),

at ``V0``.  The penalty is ``w_P (P V0/N)^2 + w_B ((B - B0) V0/N)^2``: both terms
are energies per atom, like the other loss terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.units import GPa

from mlip.batch import prepare_structure
from mlip.model import Model, make_model_functions, neighbor_species, pair_vectors
from mlip.precision import with_float64
from mlip.training.data import Sample


def pressure_volume_fit(samples: Sequence[Sample], max_volume_strain: float = 0.05) -> tuple[float, float]:
    """Equilibrium volume per atom (Å^3) and bulk modulus (GPa) from labelled stresses.

    Fits ``P = -B ln(V / V0)`` (linear in ``ln V``; exact to first order for any
    normal strain of a cubic crystal, since ``tr(sigma)`` depends only on
    ``tr(epsilon)``) to the pressures ``P = -tr(sigma)/3`` of the structures whose
    volume per atom lies within ``max_volume_strain`` (in ``ln V``) of their median,
    among the largest set of structures that share their cell angles (to 0.1
    degree), i.e. the unsheared ones: shear strains leave the volume unchanged to
    first order but shift the pressure at second order, which only adds scatter.
    """
    labelled = [s for s in samples if s.stress is not None]
    if len(labelled) < 3:
        raise ValueError(f"need at least 3 structures with stress to fit P(V), got {len(labelled)}")
    shapes = [tuple(np.round(s.atoms.cell.angles(), 1)) for s in labelled]
    common = max(set(shapes), key=shapes.count)
    labelled = [s for s, shape in zip(labelled, shapes) if shape == common]
    volumes = np.array([s.atoms.get_volume() / s.n_atoms for s in labelled])
    pressures = np.array([-np.mean(s.stress[:3]) for s in labelled])
    log_v = np.log(volumes)
    keep = np.abs(log_v - np.median(log_v)) <= max_volume_strain
    if keep.sum() < 3 or np.ptp(log_v[keep]) < 1e-6:
        raise ValueError("fewer than 3 structures with distinct volumes inside max_volume_strain")
    slope, intercept = np.polyfit(log_v[keep], pressures[keep], 1)
    b0 = -slope
    if b0 <= 0:
        raise ValueError(f"the data give a non-positive bulk modulus ({b0 / GPa:.1f} GPa)")
    return float(np.exp(intercept / b0)), float(b0 / GPa)


def reference_crystal(element: str, crystal: str, volume_per_atom: float) -> Atoms:
    """Conventional cubic cell (or primitive, when ASE has no cubic form) of
    ``crystal`` scaled to ``volume_per_atom`` (Å^3)."""
    try:
        atoms = bulk(element, crystal, a=1.0, cubic=True)
    except (ValueError, RuntimeError):
        atoms = bulk(element, crystal, a=1.0)
    scale = (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1.0 / 3.0)
    atoms.set_cell(atoms.cell * scale, scale_atoms=True)
    return atoms


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class EOSTerm:
    """Descriptor expansion of one reference crystal and its targets (float arrays)."""

    g0: jax.Array  # [n, F]
    g1: jax.Array  # [n, F] per Å^3
    g2: jax.Array  # [n, F] per Å^6
    species: jax.Array  # [n]
    v0: jax.Array  # cell volume, Å^3
    b0: jax.Array  # target bulk modulus, eV/Å^3
    n_atoms: jax.Array
    pressure_weight: jax.Array
    bulk_modulus_weight: jax.Array

    def cast(self, dtype) -> "EOSTerm":
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, self
        )


@with_float64
def make_eos_term(model: Model, atoms: Atoms, b0_gpa: float, pressure_weight: float,
                  bulk_modulus_weight: float) -> EOSTerm:
    """Expand the descriptors of ``atoms`` (at its current volume V0) along isotropic strain."""
    functions = make_model_functions(model.config)
    padded = prepare_structure(model, atoms, cutoff=model.cutoff * 1.1, n_padded=len(atoms))
    positions, cell, species, nl = padded.as_jax(jnp.float64)
    v0 = abs(float(np.linalg.det(atoms.cell.array)))
    r_ij, mask = pair_vectors(positions, cell, nl)
    species_j = neighbor_species(species, nl)

    def g(dv):
        return functions.descriptors_from_pairs(r_ij * ((v0 + dv) / v0) ** (1.0 / 3.0), mask, species_j)

    def first(dv):
        return jax.jvp(g, (dv,), (jnp.ones_like(dv),))

    zero = jnp.zeros((), jnp.float64)
    (g0, g1), (_, g2) = jax.jvp(first, (zero,), (jnp.ones_like(zero),))
    return EOSTerm(g0, g1, g2, species, jnp.asarray(v0), jnp.asarray(b0_gpa * GPa), jnp.asarray(float(len(atoms))),
                   jnp.asarray(float(pressure_weight)), jnp.asarray(float(bulk_modulus_weight)))


def make_eos_functions(config):
    """``pressure_bulk(params, term) -> (P, B)`` in eV/Å^3 at V0, and
    ``penalty(params, term) -> loss`` in (eV/atom)^2."""
    energies_from_features = make_model_functions(config).energies_from_features

    def pressure_bulk(params, term: EOSTerm):
        def energy(t):
            features = term.g0 + t * term.g1 + 0.5 * t * t * term.g2
            return jnp.sum(energies_from_features(params, features, term.species))

        def slope(t):
            return jax.jvp(energy, (t,), (jnp.ones_like(t),))[1]

        zero = jnp.zeros((), term.g0.dtype)
        d1, d2 = jax.jvp(slope, (zero,), (jnp.ones_like(zero),))
        return -d1, term.v0 * d2

    def penalty(params, term: EOSTerm):
        pressure, bulk_modulus = pressure_bulk(params, term)
        per_atom = term.v0 / term.n_atoms
        return (term.pressure_weight * (pressure * per_atom) ** 2
                + term.bulk_modulus_weight * ((bulk_modulus - term.b0) * per_atom) ** 2)

    return pressure_bulk, penalty
