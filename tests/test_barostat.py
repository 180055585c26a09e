"""Stochastic cell rescaling samples its target cell distribution exactly (dt -> 0).

A cell alone (no atoms) in the potential ``U(h) = k/2 [sum_a ln^2 h_aa + sum_(a<b) h_ab^2]``
at zero pressure has an analytic stationary distribution for each coupling: with the
measure ``mu(h)`` of the ensemble, ``ln h_aa`` is Gaussian with variance ``1/(beta k)``
and mean ``(1 - p_a) / (beta k)`` where ``mu ~ prod_a h_aa^-p_a``, and the tilts
``h_ab`` are Gaussian with mean 0 and variance ``1/(beta k)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlip.md.barostat import cell_deformation, generalized_force, is_upper_triangular_cell

STIFFNESS, KT = 10.0, 1.0  # beta k = 10


def _cell_potential(h):
    diagonal = jnp.diagonal(h)
    tilts = h[jnp.triu_indices(3, 1)]
    return 0.5 * STIFFNESS * (jnp.sum(jnp.log(diagonal) ** 2) + jnp.sum(tilts**2))


def _strain_derivative(h):
    """``dU/de_ab`` for ``h -> (I + e) h`` (columns of ``h`` are the cell vectors)."""
    return jax.grad(_cell_potential)(h) @ h.T


def _sample(coupling: str, chains: int = 2000, steps: int = 4000, keep: int = 2000, mobility_dt: float = 0.002):
    def step(h, key):
        volume = jnp.linalg.det(h)
        force = generalized_force(jnp.zeros((3, 3)), _strain_derivative(h), volume, 0.0)
        return cell_deformation(key, force, volume, KT, mobility_dt, coupling) @ h

    def chain(key):
        def body(h, key):
            h = step(h, key)
            return h, h

        _, trajectory = jax.lax.scan(body, jnp.eye(3), jax.random.split(key, steps))
        return trajectory[-keep::10]

    with jax.enable_x64(True):
        samples = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.PRNGKey(0), chains))
        return np.asarray(samples).reshape(-1, 3, 3)


@pytest.mark.parametrize("coupling, powers", [("anisotropic", (0, 0, 0)), ("triclinic", (0, 1, 2))])
def test_cell_samples_the_ensemble_measure(coupling, powers):
    h = _sample(coupling)
    log_diagonal = np.log(np.diagonal(h, axis1=1, axis2=2))
    expected_mean = (1.0 - np.array(powers)) * KT / STIFFNESS
    np.testing.assert_allclose(log_diagonal.mean(axis=0), expected_mean, atol=0.01)
    np.testing.assert_allclose(log_diagonal.var(axis=0), KT / STIFFNESS, rtol=0.05)
    tilts = h[:, [0, 0, 1], [1, 2, 2]]
    lower = h[:, [1, 2, 2], [0, 0, 1]]
    assert np.all(lower == 0.0)  # the cell stays upper-triangular (ASE's standard form)
    if coupling == "triclinic":
        np.testing.assert_allclose(tilts.mean(axis=0), 0.0, atol=0.01)
        np.testing.assert_allclose(tilts.var(axis=0), KT / STIFFNESS, rtol=0.05)
    else:
        assert np.all(tilts == 0.0)  # anisotropic coupling keeps an orthorhombic box orthorhombic


def test_isotropic_coupling_samples_uniform_volume_measure():
    """``U = k/2 * 3 ln^2(lambda)`` for ``h = lambda I``: ``ln V`` is Gaussian with mean
    and variance ``3 / (beta k)`` under the ``dV`` measure."""
    h = _sample("isotropic")
    log_volume = np.log(np.linalg.det(h))
    assert log_volume.mean() == pytest.approx(3.0 * KT / STIFFNESS, abs=0.02)
    assert log_volume.var() == pytest.approx(3.0 * KT / STIFFNESS, rel=0.05)
    np.testing.assert_allclose(h / h[:, :1, :1], np.broadcast_to(np.eye(3), h.shape), atol=1e-12)


def test_triclinic_form_check():
    assert is_upper_triangular_cell(np.array([[5.0, 0, 0], [1.0, 4.0, 0], [0.5, 0.3, 6.0]]))
    assert not is_upper_triangular_cell(np.array([[5.0, 0.2, 0], [1.0, 4.0, 0], [0.5, 0.3, 6.0]]))
