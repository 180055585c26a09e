"""The compiled descriptor kernel against the JAX kernel (values and derivatives).

Every check compares ``make_descriptor_kernel(..., "native")`` with the JAX
implementation, itself tested against brute-force n2p2 sums in
``test_symmetry_functions.py``; derivatives are also checked in every autodiff
mode the model uses (reverse, forward, reverse-over-reverse, second order, vmap).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlip.kernels import native
from mlip.kernels.symmetry_functions import (
    SymmetryFunction,
    SymmetryFunctionSet,
    default_symmetry_functions,
    make_descriptor_kernel,
)

jax.config.update("jax_enable_x64", True)

pytestmark = pytest.mark.skipif(not native.available(), reason="compiled descriptor kernel unavailable")


def mixed_set(elements=("O", "Si"), cutoff="cos", alpha=0.0) -> SymmetryFunctionSet:
    """Types 2, 3 and 9 together, shifted Gaussians, integer and fractional zeta,
    two cutoff radii (like the Cu2S potential's mixed set)."""
    base = default_symmetry_functions(elements, r_cut=5.0, n_radial=3, n_angular=2, angular_type=3,
                                      cutoff_type=cutoff, cutoff_alpha=alpha)
    extra = (
        SymmetryFunction(9, elements[0], (elements[0], elements[-1]), 0.03, 4.0, 0.0, 1.0, 2.0),
        SymmetryFunction(9, elements[-1], (elements[-1], elements[-1]), 0.01, 5.0, 0.0, -1.0, 1.0),
        SymmetryFunction(3, elements[0], (elements[-1], elements[-1]), 0.05, 4.0, 0.7, -1.0, 2.5),
        SymmetryFunction(9, elements[-1], (elements[0], elements[-1]), 0.02, 4.5, 0.4, 1.0, 3.5),
    )
    return SymmetryFunctionSet(base.elements, base.functions + extra, base.cutoff_type, base.cutoff_alpha)


def random_environments(n_atoms, n_slots, n_elements, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    r_ij = (rng.normal(size=(n_atoms, n_slots, 3)) * 2.2).astype(dtype)
    mask = rng.random((n_atoms, n_slots)) < 0.8
    species = rng.integers(0, n_elements, size=(n_atoms, n_slots))
    return jnp.asarray(r_ij), jnp.asarray(mask), jnp.asarray(species)


def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


SETS = {
    "type3-cos-one-element": default_symmetry_functions(("Si",), r_cut=5.0, n_radial=3, n_angular=2,
                                                        angular_type=3, cutoff_type="cos"),
    "type9-tanh-one-element": default_symmetry_functions(("Si",), r_cut=5.0, n_radial=3, n_angular=2),
    "mixed-cos-two-elements": mixed_set(),
    "mixed-poly2-inner-cutoff": mixed_set(cutoff="poly2", alpha=0.2),
    "mixed-exp-three-elements": mixed_set(("H", "O", "Si"), cutoff="exp", alpha=0.1),
}


@pytest.mark.parametrize("name", SETS)
def test_values_and_first_derivatives_match_jax(name):
    sf_set = SETS[name]
    fast, reference = make_descriptor_kernel(sf_set, "native"), make_descriptor_kernel(sf_set, "jax")
    r_ij, mask, species = random_environments(70, 18, len(sf_set.elements))  # 70 rows: the threaded path
    values = fast(r_ij, mask, species)
    assert values.shape == (70, sf_set.n_union)
    assert relative_error(values, reference(r_ij, mask, species)) < 1e-12

    rng = np.random.default_rng(1)
    cotangent = jnp.asarray(rng.normal(size=values.shape))
    tangent = jnp.asarray(rng.normal(size=r_ij.shape))
    vjps, jvps = [], []
    for kernel in (fast, reference):
        vjps.append(jax.jit(lambda r, c, k=kernel: jax.vjp(lambda x: k(x, mask, species), r)[1](c)[0])(
            r_ij, cotangent))
        jvps.append(jax.jit(lambda r, t, k=kernel: jax.jvp(lambda x: k(x, mask, species), (r,), (t,))[1])(
            r_ij, tangent))
    assert relative_error(*vjps) < 1e-12
    assert relative_error(*jvps) < 1e-12
    # empty slots get exactly zero gradient
    assert float(jnp.max(jnp.abs(jnp.where(mask[..., None], 0.0, vjps[0])))) == 0.0


def test_every_cutoff_type_matches_jax():
    # every cutoff of every type is one C++ function, checked here through type 2 (the kernels of
    # types 3 and 9 with the cos, poly2, exp and tanh cutoffs are checked above)
    for cutoff in ("hard", "cos", "tanhu", "tanh", "exp", "poly1", "poly2", "poly3", "poly4"):
        alpha = 0.15 if cutoff in ("cos", "exp", "poly3") else 0.0
        grid = default_symmetry_functions(("Si",), r_cut=4.5, n_radial=6)
        sf_set = SymmetryFunctionSet(("Si",), tuple(f for f in grid.functions if f.kind == 2), cutoff, alpha)
        r_ij, mask, species = random_environments(5, 14, 1, seed=2)
        fast, reference = make_descriptor_kernel(sf_set, "native"), make_descriptor_kernel(sf_set, "jax")
        assert relative_error(fast(r_ij, mask, species), reference(r_ij, mask, species)) < 1e-12, cutoff
        grads = [jax.grad(lambda r, k=k: jnp.sum(jnp.sin(k(r, mask, species))))(r_ij) for k in (fast, reference)]
        assert relative_error(*grads) < 1e-11, cutoff


def test_float32_close_to_float64_reference():
    sf_set = SETS["mixed-cos-two-elements"]
    r_ij, mask, species = random_environments(20, 16, 2)
    reference = make_descriptor_kernel(sf_set, "jax")(r_ij, mask, species)
    single = make_descriptor_kernel(sf_set, "native")(r_ij.astype(jnp.float32), mask, species)
    assert single.dtype == jnp.float32
    assert relative_error(single.astype(jnp.float64), reference) < 2e-6


def test_higher_order_modes_match_jax():
    """Reverse over reverse (training through forces), forward over reverse, and
    second derivatives in r_ij (the equation-of-state curvature).  Types 2 and 9:
    these modes are the primitives' rules, the same for every type (and the
    JAX kernel's second derivatives of type 3 compile for minutes)."""
    sf_set = default_symmetry_functions(("O", "Si"), r_cut=5.0, n_radial=2, n_angular=1, zetas=(1.0, 3.0))
    r_ij, mask, species = random_environments(6, 12, 2, seed=3)
    weights = jnp.asarray(np.random.default_rng(4).normal(size=sf_set.n_union))
    results = []
    for backend in ("native", "jax"):
        kernel = make_descriptor_kernel(sf_set, backend)

        def energy(r, w, kernel=kernel):
            return jnp.sum(jnp.tanh(kernel(r, mask, species) * 0.1) @ w)

        def force_loss(w, energy=energy):
            return jnp.sum(jax.grad(energy)(r_ij, w) ** 2)

        direction = jnp.ones_like(r_ij)
        scale = lambda t, energy=energy: energy(r_ij * (1.0 + t), weights)  # noqa: E731
        results.append(jax.jit(lambda energy=energy, force_loss=force_loss, scale=scale: (
            jax.grad(force_loss)(weights),  # reverse over reverse
            jax.jacfwd(lambda w: jax.grad(energy)(r_ij, w))(weights),  # forward over reverse
            jax.jvp(jax.grad(scale), (0.0,), (1.0,))[1],  # second derivative along a strain
            jax.jvp(lambda r: jax.grad(energy)(r, weights), (r_ij,), (direction,))[1],  # Hessian-vector
        ))())
    for fast, reference in zip(*results):
        assert relative_error(fast, reference) < 1e-10


def test_vmap_and_jit_match_separate_calls():
    sf_set = SETS["mixed-cos-two-elements"]
    kernel = make_descriptor_kernel(sf_set, "native")
    batch = [random_environments(4, 10, 2, seed=s) for s in (5, 6)]
    r_ij, mask, species = (jnp.stack(x) for x in zip(*batch))
    batched = jax.jit(jax.vmap(kernel))(r_ij, mask, species)
    for b, (r, m, s) in enumerate(batch):
        np.testing.assert_array_equal(batched[b], kernel(r, m, s))
    # vmap over the pair vectors only, species shared
    shared = jax.vmap(kernel, in_axes=(0, None, None))(r_ij, batch[0][1], batch[0][2])
    np.testing.assert_array_equal(shared[1], kernel(batch[1][0], batch[0][1], batch[0][2]))
    gradient = jax.vmap(jax.grad(lambda r, m, s: jnp.sum(kernel(r, m, s) ** 2)))(r_ij, mask, species)
    expected = jax.grad(lambda r: jnp.sum(kernel(r, batch[1][1], batch[1][2]) ** 2))(batch[1][0])
    np.testing.assert_allclose(gradient[1], expected, rtol=1e-14, atol=1e-14)


def test_no_neighbours_gives_zeros():
    sf_set = SETS["mixed-cos-two-elements"]
    r_ij = jnp.zeros((3, 8, 3))
    mask = jnp.zeros((3, 8), dtype=bool)
    species = jnp.zeros((3, 8), dtype=jnp.int32)
    kernel = make_descriptor_kernel(sf_set, "native")
    assert float(jnp.max(jnp.abs(kernel(r_ij, mask, species)))) == 0.0
    gradient = jax.grad(lambda r: jnp.sum(kernel(r, mask, species)))(r_ij)
    assert bool(jnp.all(gradient == 0.0))


def test_opt_out_and_unknown_backend(monkeypatch):
    sf_set = SETS["type9-tanh-one-element"]
    monkeypatch.setenv(native.ENVIRONMENT_VARIABLE, "0")
    assert not native.available()
    r_ij, mask, species = random_environments(2, 6, 1)
    auto = make_descriptor_kernel(sf_set)  # the JAX kernel now: no custom call in its program
    assert "mlip_sf" not in str(jax.make_jaxpr(auto)(r_ij, mask, species))
    monkeypatch.delenv(native.ENVIRONMENT_VARIABLE)
    assert "mlip_sf_values" in str(jax.make_jaxpr(make_descriptor_kernel(sf_set))(r_ij, mask, species))
    with pytest.raises(ValueError, match="unknown descriptor backend"):
        make_descriptor_kernel(sf_set, "fortran")


def test_failed_build_names_the_problem(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(native.NativeKernelError, match="compiling native_descriptors.cc failed"):
        native.build(tmp_path)
    assert not list(tmp_path.glob("*.so"))  # nothing half-written is left to load later
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.available()  # the process's loaded kernel is unaffected


# ------------------------------------------------------------- multi-cotangent VJP (ensembles)


def _member_pullbacks(kernel, r_ij, mask, species):
    """``cotangents [K, n, F] -> [K, n, M, 3]``: one descriptor pullback per member, vmapped
    (the ensemble pattern of ``member_results``: pair vectors shared, cotangents batched)."""
    pullback = jax.vjp(lambda r: kernel(r, mask, species), r_ij)[1]
    return jax.vmap(lambda c: pullback(c)[0])


@pytest.mark.parametrize("name", SETS)
def test_multi_cotangent_vjp_equals_single_vjps(name):
    assert native.JACOBIAN_MEMBERS == 4  # 5 members below take the type-9 Jacobian path, 3 do not
    sf_set = SETS[name]
    fast, reference = make_descriptor_kernel(sf_set, "native"), make_descriptor_kernel(sf_set, "jax")
    r_ij, mask, species = random_environments(70, 18, len(sf_set.elements), seed=7)
    cotangents = jnp.asarray(np.random.default_rng(8).normal(size=(5, 70, sf_set.n_union)))
    batched = _member_pullbacks(fast, r_ij, mask, species)
    program = str(jax.make_jaxpr(batched)(cotangents))
    assert "mlip_sf_vjp_many" in program and "mlip_sf_vjp[" not in program.replace("mlip_sf_vjp_many", "")
    many = jax.jit(batched)(cotangents)
    assert many.shape == (5,) + r_ij.shape
    pullback = jax.jit(lambda c: jax.vjp(lambda r: fast(r, mask, species), r_ij)[1](c)[0])
    singles = jnp.stack([pullback(c) for c in cotangents])
    assert relative_error(many, singles) < 1e-12
    assert relative_error(many, jax.jit(_member_pullbacks(reference, r_ij, mask, species))(cotangents)) < 1e-12
    assert float(jnp.max(jnp.abs(jnp.where(mask[None, ..., None], 0.0, many)))) == 0.0  # empty slots
    # one member, three (below native.JACOBIAN_MEMBERS: one pass over the pairs per member, not
    # the type-9 Jacobian), and members whose cotangent is zero
    assert relative_error(batched(cotangents[:1])[0], singles[0]) < 1e-12
    assert relative_error(batched(cotangents[:3]), singles[:3]) < 1e-12
    zeroed = batched(cotangents.at[2].set(0.0))
    assert float(jnp.max(jnp.abs(zeroed[2]))) == 0.0
    assert relative_error(zeroed[3], singles[3]) < 1e-12


def test_multi_cotangent_vjp_every_cutoff_type():
    for cutoff in ("hard", "cos", "tanhu", "tanh", "exp", "poly1", "poly2", "poly3", "poly4"):
        alpha = 0.15 if cutoff in ("cos", "exp", "poly3") else 0.0
        grid = default_symmetry_functions(("Si",), r_cut=4.5, n_radial=6)
        sf_set = SymmetryFunctionSet(("Si",), tuple(f for f in grid.functions if f.kind == 2), cutoff, alpha)
        r_ij, mask, species = random_environments(5, 14, 1, seed=2)
        cotangents = jnp.asarray(np.random.default_rng(9).normal(size=(4, 5, sf_set.n_union)))
        fast, reference = make_descriptor_kernel(sf_set, "native"), make_descriptor_kernel(sf_set, "jax")
        many = _member_pullbacks(fast, r_ij, mask, species)(cotangents)
        singles = jnp.stack([jax.vjp(lambda r: fast(r, mask, species), r_ij)[1](c)[0] for c in cotangents])
        assert relative_error(many, singles) < 1e-12, cutoff
        assert relative_error(many, _member_pullbacks(reference, r_ij, mask, species)(cotangents)) < 1e-11, cutoff


def test_multi_cotangent_vjp_float32():
    sf_set = SETS["mixed-cos-two-elements"]
    r_ij, mask, species = random_environments(20, 16, 2)
    cotangents = jnp.asarray(np.random.default_rng(10).normal(size=(6, 20, sf_set.n_union)))
    reference = _member_pullbacks(make_descriptor_kernel(sf_set, "jax"), r_ij, mask, species)(cotangents)
    fast = make_descriptor_kernel(sf_set, "native")
    single = _member_pullbacks(fast, r_ij.astype(jnp.float32), mask, species)(cotangents.astype(jnp.float32))
    assert single.dtype == jnp.float32
    assert relative_error(single.astype(jnp.float64), reference) < 2e-5


def test_multi_cotangent_vjp_autodiff_and_nested_vmap():
    """The multi-cotangent VJP's JVP (in the cotangents and in r_ij), its transpose (the
    JVP batched the same way), and vmap over it (cotangents only: more members; pair
    vectors too: folded single VJPs), all against the JAX kernel."""
    sf_set = default_symmetry_functions(("O", "Si"), r_cut=5.0, n_radial=2, n_angular=1, zetas=(1.0, 3.0))
    r_ij, mask, species = random_environments(6, 12, 2, seed=11)
    rng = np.random.default_rng(12)
    cotangents = jnp.asarray(rng.normal(size=(3, 6, sf_set.n_union)))
    d_cotangents = jnp.asarray(rng.normal(size=cotangents.shape))
    direction = jnp.asarray(rng.normal(size=r_ij.shape))
    weights = jnp.asarray(rng.normal(size=(3,) + r_ij.shape))
    stacked = jnp.stack([r_ij, r_ij * 1.03])
    results = []
    for backend in ("native", "jax"):
        kernel = make_descriptor_kernel(sf_set, backend)

        def many(r, c, kernel=kernel):
            return _member_pullbacks(kernel, r, mask, species)(c)

        results.append(jax.jit(lambda many=many: (
            jax.jvp(lambda c: many(r_ij, c), (cotangents,), (d_cotangents,))[1],  # linear in c
            jax.jvp(lambda r: many(r, cotangents), (r_ij,), (direction,))[1],  # second order in r
            jax.grad(lambda c: jnp.sum(jnp.sin(many(r_ij, c)) * weights))(cotangents),  # transpose
            jax.grad(lambda r: jnp.sum(jnp.sin(many(r, cotangents)) * weights))(r_ij),
            jax.vmap(lambda c: many(r_ij, c))(jnp.stack([cotangents, -2.0 * cotangents])),
            jax.vmap(many, in_axes=(0, None))(stacked, cotangents),
            jax.vmap(many)(stacked, jnp.stack([cotangents, d_cotangents])),
        ))())
    for n, (fast, reference) in enumerate(zip(*results)):
        assert relative_error(fast, reference) < 1e-10, n
    native_kernel = make_descriptor_kernel(sf_set, "native")
    program = str(jax.make_jaxpr(lambda c: jax.grad(lambda c: jnp.sum(
        _member_pullbacks(native_kernel, r_ij, mask, species)(c) * weights))(c))(cotangents))
    assert "mlip_sf_vjp_many" in program and "mlip_sf_jvp" in program


@pytest.mark.parametrize("n_members", [2, 5])
def test_member_results_equal_each_member_alone(n_members):
    """``member_results`` of an ensemble (one multi-cotangent VJP over chunks) against every
    member's own ``energy_forces_virial``."""
    from ase import Atoms

    from mlip.batch import pad_structure
    from mlip.kernels.neighbor_list import host_pairs
    from mlip.model import Model, make_model_functions

    sf_set = mixed_set(("O", "Si"))
    ensemble = Model.create(symmetry_functions=sf_set, hidden_layers=(6, 5), ensemble=n_members, seed=4)
    rng = np.random.default_rng(13)
    cell = np.diag([6.1, 5.8, 6.4]) + rng.uniform(-0.4, 0.4, (3, 3))
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    atoms = Atoms(rng.choice(["O", "Si"], len(grid)), scaled_positions=(grid + 0.5) / 3.0, cell=cell, pbc=True)
    atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
    padded = pad_structure(ensemble, atoms, host_pairs(atoms.positions, atoms.cell.array, atoms.pbc,
                                                       ensemble.cutoff))
    inputs = padded.as_jax(jnp.float64, with_element_rows=True)
    functions = make_model_functions(ensemble.config, chunk_size=8, backend="native")  # several chunks
    assert "mlip_sf_vjp_many" in str(jax.make_jaxpr(functions.member_results)(ensemble.params, *inputs))
    members = jax.jit(functions.member_results)(ensemble.params, *inputs)
    single = jax.jit(make_model_functions(ensemble.config.member, chunk_size=8, backend="native").energy_forces_virial)
    for k in range(n_members):
        alone = single(jax.tree_util.tree_map(lambda x, k=k: x[k], ensemble.params), *inputs)
        assert float(members.energy[k]) == pytest.approx(float(alone.energy), rel=1e-12, abs=1e-12)
        assert relative_error(members.forces[k], alone.forces) < 1e-11
        assert relative_error(members.virial[k], alone.virial) < 1e-11
