"""The JAX descriptor kernel: symmetry functions (:mod:`mlip.kernels.sf_definitions`)
of every atom from its dense neighbour list, differentiable to any order.

The kernel works on a dense neighbour list (see :mod:`mlip.kernels.neighbor_list`).
For angular functions it factorises ``G = sum_j a1_j sum_k W_jk a2_k`` where the
pair factors ``a`` carry the radial Gaussian, cutoff and element selection, and
the triplet matrix ``W`` only depends on (lambda, zeta) for type 9 (plus eta, r_s
and r_c for type 3).

Type 9 with integer zeta (the usual case) never forms the [M, M] triplet matrix:
expanding ``(1 + lambda cos)^zeta`` in powers of ``cos = u_j . u_k`` and each power
in monomials of the unit vectors' components gives

    sum_{j,k} a1_j a2_k (u_j . u_k)^p = sum_{|m| = p} p! / (m_x! m_y! m_z!) T_m(a1) T_m(a2),
    T_m(a) = sum_j a_j u_jx^m_x u_jy^m_y u_jz^m_z,

which costs O(M) per atom instead of O(M^2); the j = k terms, ``(1 + lambda)^zeta
a1_j a2_j``, are subtracted.  Other wide functions fall back to the triplet matrix,
one batched matrix product per distinct ``W``.  Narrow functions (type 3) share
their exponentials, cutoff values and angular powers across functions and visit
each unordered neighbour pair once (see ``_NarrowAngular``).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mlip.kernels.array_ops import select_columns
from mlip.kernels.cutoff import cutoff_function
from mlip.kernels.sf_definitions import ANGULAR_TYPES, RADIAL_TYPES, SymmetryFunctionSet


def _safe_norm(vectors, mask):
    """|v| with a finite gradient where ``mask`` is False (result there: 1)."""
    safe = jnp.where(mask[..., None], vectors, 1.0)
    return jnp.sqrt(jnp.sum(safe * safe, axis=-1))


def _power(base, zeta: float):
    """base^zeta for base >= 0; exact integer powers where zeta is integral."""
    if float(zeta).is_integer():
        return base ** int(zeta)
    return jnp.power(jnp.maximum(base, 0.0), zeta)


# The expansion needs (zeta+1)(zeta+2)(zeta+3)/6 monomials (165 at zeta 8); larger
# zetas, rare in practice, use the triplet matrix.
_MAX_MOMENT_ZETA = 8


def _uses_moments(key: tuple) -> bool:
    kind, zeta = key[0], key[6]
    return kind == 9 and float(zeta).is_integer() and zeta <= _MAX_MOMENT_ZETA


class _MomentExpansion:
    """``sum_{j != k} a1_j a2_k (1 + lambda u_j . u_k)^zeta`` for integer zeta, in O(M).

    Built for a list of (lambda, zeta) columns; called with unit vectors
    ``[n, M, 3]`` and pair factors ``a1, a2`` of shape ``[n, M, C]``.
    """

    def __init__(self, lambdas: list[float], zetas: list[float]):
        top = int(max(zetas, default=0))
        self.top = top
        exponents = [m for p in range(top + 1) for m in itertools.product(range(p + 1), repeat=3) if sum(m) == p]
        self.exponents = np.array(exponents, dtype=np.int32).reshape(-1, 3)  # [K, 3]
        # coefficient of monomial m in (1 + lambda c)^zeta: binom(zeta, p) lambda^p p! / (m_x! m_y! m_z!)
        coefficients = np.zeros((len(exponents), len(zetas)))
        for k, m in enumerate(exponents):
            p = sum(m)
            multinomial = math.factorial(p) / math.prod(math.factorial(e) for e in m)
            for c, (lam, zeta) in enumerate(zip(lambdas, zetas)):
                if p <= zeta:
                    coefficients[k, c] = math.comb(int(zeta), p) * lam**p * multinomial
        self.coefficients = coefficients
        self.diagonal = np.array([(1.0 + lam) ** zeta for lam, zeta in zip(lambdas, zetas)])

    def __call__(self, unit, a1, a2, same_factors: bool = False):
        """Values ``[n, C]``; ``same_factors`` says a1 and a2 are equal (one element)."""
        dtype = unit.dtype
        # powers u^e by repeated products (gradient-safe at u = 0, unlike u ** 0)
        powers = [jnp.ones_like(unit)]
        for _ in range(self.top):
            powers.append(powers[-1] * unit)  # powers[e][..., x] = u_x^e
        monomials = jnp.stack(  # [n, M, K]; static slices, so the backward pass has no scatter
            [powers[ex][..., 0] * powers[ey][..., 1] * powers[ez][..., 2] for ex, ey, ez in self.exponents], axis=-1
        )
        moments1 = jnp.einsum("nmk,nmc->nkc", monomials, a1)
        moments2 = moments1 if same_factors else jnp.einsum("nmk,nmc->nkc", monomials, a2)
        full = jnp.einsum("kc,nkc,nkc->nc", self.coefficients.astype(dtype), moments1, moments2)
        return full - self.diagonal.astype(dtype) * jnp.sum(a1 * a2, axis=1)


def _triplet_matrix_values(groups_list, unit, mask, a1, a2):
    """Wide (type 9) values through the [n, M, M] triplet matrix W, one product per group."""
    cos = jnp.einsum("njx,nkx->njk", unit, unit)
    n_nbr = unit.shape[1]
    pair_mask = (mask[:, :, None] & mask[:, None, :]) & ~jnp.eye(n_nbr, dtype=bool)
    values = []
    for key, columns in groups_list:
        _, lam, zeta = key
        w = jnp.where(pair_mask, _power(1.0 + lam * cos, zeta), 0.0)
        inner = jnp.einsum("njk,nka->nja", w, select_columns(a2, columns))
        values.append((columns, jnp.sum(select_columns(a1, columns) * inner, axis=1)))
    return values


class _NarrowAngular:
    """Type-3 values from quantities shared by all functions of a triplet.

    ``G_c = sum_{j != k} a_j a_k T_jk P_jk`` with the radial part ``T_jk =
    exp(-eta (r_jk - r_s)^2) f_c(r_jk)`` and the pair factors ``a = exp(-eta (r - r_s)^2)
    f_c(r)`` depending only on the radial group ``g = (eta, r_c, r_s)``, and the angular
    part ``P_jk = (1 + lambda cos theta_jk)^zeta`` only on the shape ``l = (lambda,
    zeta)``.  So one exponential per unordered neighbour pair per radial group (for
    r_s = 0 straight from r_jk^2), one cutoff value per pair per cutoff radius, one
    power per shape, and every value of an element pair is a small contraction
    ``V_gl = sum_jk X_g,jk P_l,jk`` with ``X_g = (a_g e1)_j (a_g e2)_k T_g,jk``; r_jk
    comes from ``r_jk^2 = r_ij^2 + r_ik^2 - 2 r_ij r_ik cos``.  The pairs are visited
    one offset ``k = j + s (mod M)`` at a time, so every intermediate is [n, M, .]
    and stays in cache (the [n, M, M] version was 3x slower, memory-bound).
    """

    def __init__(self, keys, e1, e2, representative):
        # keys: (eta, r_cut, r_shift, lam, zeta) per type-3 column; representative[g]: a
        # column of the angular pair-factor array with radial group g
        self.radial = list(dict.fromkeys(k[:3] for k in keys))
        self.shapes = list(dict.fromkeys(k[3:] for k in keys))
        self.element_pairs = list(dict.fromkeys(zip(e1, e2)))
        self.representative = np.array(representative, dtype=np.int32)
        n_radial, n_shapes = len(self.radial), len(self.shapes)
        # flat index of every column in the concatenated [n, pairs * G * L] values
        self.flat = np.array([
            (self.element_pairs.index((p, q)) * n_radial + self.radial.index(k[:3])) * n_shapes
            + self.shapes.index(k[3:]) for k, p, q in zip(keys, e1, e2)
        ], dtype=np.int32)

    def __call__(self, distance, unit, mask, pair, one_hot, cut_kind, alpha):
        n, n_nbr = distance.shape
        dtype = distance.dtype
        n_values = len(self.element_pairs) * len(self.radial) * len(self.shapes)
        half = n_nbr // 2
        if half == 0:
            return jnp.zeros((n, len(self.flat)), dtype=dtype)

        # every unordered pair {j, k} once as (j, j + s mod M), s = 1..M//2: for even M
        # the offset M/2 meets each pair twice, so it weighs 1/2; the ordered sum over
        # j != k is twice this one.  One offset at a time keeps the arrays [n, M, .]
        # small (in cache) instead of [n, M, M, .] in memory.
        etas = np.array([eta for eta, _, _ in self.radial])
        centred = all(r_s == 0.0 for _, _, r_s in self.radial)
        cutoffs = list(dict.fromkeys(r_c for _, r_c, _ in self.radial))
        cut_slot = np.array([cutoffs.index(r_c) for _, r_c, _ in self.radial], dtype=np.int32)
        a = select_columns(pair, self.representative)  # [n, M, G]
        if one_hot.shape[-1] == 1:  # one element: every real neighbour matches (pair (0, 0))
            factors = {0: a}
        else:
            used = sorted({e for pq in self.element_pairs for e in pq})
            factors = {e: a * one_hot[..., e : e + 1] for e in used}
        partner_arrays = (unit, distance, mask.astype(dtype)) + tuple(factors.values())

        def doubled(x):
            return jnp.concatenate([x, x[:, :half]], axis=1)

        doubled_arrays = tuple(doubled(x) for x in partner_arrays)
        even = n_nbr % 2 == 0

        def offset_values(total, offset):
            unit_k, d_k, mask_k, *factors_k = (
                jax.lax.dynamic_slice_in_dim(x, offset, n_nbr, axis=1) for x in doubled_arrays)
            factors_k = dict(zip(factors, factors_k))
            real = (mask_k > 0) & mask
            cos = jnp.sum(unit * unit_k, axis=-1)  # [n, M]
            r2_jk = jnp.where(real, distance * distance + d_k * d_k - 2.0 * distance * d_k * cos, 1.0)
            d_jk = jnp.sqrt(r2_jk)
            weight = jnp.where(even & (offset == half), 1.0, 2.0).astype(dtype)  # offset is traced
            cut = jnp.stack([cutoff_function(d_jk, r_c, cut_kind, alpha) for r_c in cutoffs], axis=-1)
            cut = jnp.where(real[..., None], cut, 0.0) * weight
            if centred:
                gauss = jnp.exp(-etas.astype(dtype) * r2_jk[..., None])
            else:
                gauss = jnp.stack([jnp.exp(-eta * (d_jk - r_s) ** 2) for eta, _, r_s in self.radial], axis=-1)
            radial = gauss * select_columns(cut, cut_slot)  # [n, M, G]
            shapes = jnp.stack([_power(1.0 + lam * cos, zeta) for lam, zeta in self.shapes], axis=-1)  # [n, M, L]
            values = []
            for p, q in self.element_pairs:
                factor = factors[p] * factors_k[q]
                if p != q:  # the unordered pair in both orders, so no factor 2
                    factor = 0.5 * (factor + factors[q] * factors_k[p])
                values.append(jnp.einsum("njg,njl->ngl", factor * radial, shapes).reshape(n, -1))
            return total + jnp.concatenate(values, axis=-1)

        # A scan over the offsets with a rematerialised body: the loop compiles once
        # (unrolled, compile time grew with M: 15 s against 3 s at 512 atoms, M = 56) and
        # the backward pass recomputes each offset instead of storing [M/2, n, M, .]
        # residuals, which also made it faster than the unrolled loop (1.2x in float64,
        # 1.3x in float32 at 1728 atoms; README, Benchmarks).
        body = jax.checkpoint(lambda total, offset: (offset_values(total, offset), None))
        total, _ = jax.lax.scan(body, jnp.zeros((n, n_values), dtype=dtype), jnp.arange(1, half + 1))
        return select_columns(total, self.flat)


def make_jax_kernel(sf_set: SymmetryFunctionSet):
    """``kernel(r_ij, mask, neighbor_species) -> G`` for ``sf_set``, in JAX (see
    :func:`mlip.kernels.descriptors.make_descriptor_kernel` for the signature)."""
    element_index = {e: n for n, e in enumerate(sf_set.elements)}
    union = sf_set.union_keys  # (kind, neighbors, eta, r_cut, r_shift, lam, zeta)
    cut_kind, alpha = sf_set.cutoff_type, sf_set.cutoff_alpha
    cutoffs = sorted({key[3] for key in union})
    cutoff_slot = {r_c: n for n, r_c in enumerate(cutoffs)}

    radial = [n for n, key in enumerate(union) if key[0] in RADIAL_TYPES]
    angular = [n for n, key in enumerate(union) if key[0] in ANGULAR_TYPES]

    def arr(values):
        return np.asarray(values, dtype=np.float64)

    rad_eta = arr([union[n][2] for n in radial])
    rad_shift = arr([union[n][4] for n in radial])
    rad_cut = np.array([cutoff_slot[union[n][3]] for n in radial], dtype=np.int32)
    rad_element = np.array([element_index[union[n][1][0]] for n in radial], dtype=np.int32)

    ang_eta = arr([union[n][2] for n in angular])
    ang_shift = arr([union[n][4] for n in angular])
    ang_cut = np.array([cutoff_slot[union[n][3]] for n in angular], dtype=np.int32)
    ang_e1 = np.array([element_index[union[n][1][0]] for n in angular], dtype=np.int32)
    ang_e2 = np.array([element_index[union[n][1][1]] for n in angular], dtype=np.int32)
    ang_coefficient = arr(
        [2.0 ** (1.0 - union[n][6]) * (0.5 if union[n][1][0] == union[n][1][1] else 1.0) for n in angular]
    )
    # Wide functions with integer zeta use the moment expansion; the other wide ones
    # share triplet matrices W per distinct (lambda, zeta); narrow ones share
    # exponentials per radial group (see _NarrowAngular).
    moment = [c for c, n in enumerate(angular) if _uses_moments(union[n])]
    in_moment = set(moment)
    expansion = _MomentExpansion([union[angular[c]][5] for c in moment], [union[angular[c]][6] for c in moment])
    groups: dict[tuple, list[int]] = {}
    narrow = [c for c, n in enumerate(angular) if union[n][0] == 3]
    for column, n in enumerate(angular):
        kind, _, eta, r_cut, r_shift, lam, zeta = union[n]
        if kind == 9 and column not in in_moment:
            groups.setdefault((kind, lam, zeta), []).append(column)
    groups_list = [(key, np.array(columns, dtype=np.int32)) for key, columns in groups.items()]
    moment_columns = np.array(moment, dtype=np.int32)
    moment_same_factors = bool(np.array_equal(ang_e1[moment_columns], ang_e2[moment_columns]))
    narrow_columns = np.array(narrow, dtype=np.int32)
    if narrow:
        narrow_keys = [(union[angular[c]][2], union[angular[c]][3], union[angular[c]][4],
                        union[angular[c]][5], union[angular[c]][6]) for c in narrow]
        first_column = {}
        for c, key in zip(narrow, narrow_keys):
            first_column.setdefault(key[:3], c)
        narrow_kernel = _NarrowAngular(narrow_keys, ang_e1[narrow_columns].tolist(), ang_e2[narrow_columns].tolist(),
                                       list(first_column.values()))

    n_union = len(union)
    radial_columns = np.array(radial, dtype=np.int32)
    angular_columns = np.array(angular, dtype=np.int32)

    def kernel(r_ij, mask, neighbor_species):
        dtype = r_ij.dtype
        distance = _safe_norm(r_ij, mask)
        fc = jnp.stack([cutoff_function(distance, r_c, cut_kind, alpha) for r_c in cutoffs], axis=-1)
        fc = fc * mask[..., None]  # [n, M, n_cutoffs]
        one_hot = jax.nn.one_hot(neighbor_species, len(sf_set.elements), dtype=dtype)  # [n, M, E]
        out = jnp.zeros(r_ij.shape[:1] + (n_union,), dtype=dtype)

        if radial:
            gauss = jnp.exp(-rad_eta.astype(dtype) * (distance[..., None] - rad_shift.astype(dtype)) ** 2)
            terms = gauss * select_columns(fc, rad_cut) * one_hot[..., rad_element]
            out = out.at[:, radial_columns].set(jnp.sum(terms, axis=1))

        if angular:
            gauss = jnp.exp(-ang_eta.astype(dtype) * (distance[..., None] - ang_shift.astype(dtype)) ** 2)
            pair = gauss * select_columns(fc, ang_cut)  # [n, M, A]
            a1 = pair * one_hot[..., ang_e1]
            a2 = pair * one_hot[..., ang_e2]
            unit = r_ij / distance[..., None]
            values = []
            if moment:
                a1_moment, a2_moment = select_columns(a1, moment_columns), select_columns(a2, moment_columns)
                values.append((moment_columns, expansion(unit, a1_moment, a2_moment, moment_same_factors)))
            if groups_list:
                values += _triplet_matrix_values(groups_list, unit, mask, a1, a2)
            if narrow:
                values.append((narrow_columns, narrow_kernel(distance, unit, mask, pair, one_hot, cut_kind, alpha)))
            order = np.concatenate([columns for columns, _ in values])
            stacked = jnp.concatenate([value for _, value in values], axis=-1)
            ang_values = jnp.zeros(r_ij.shape[:1] + (len(angular),), dtype=dtype).at[:, order].set(stacked)
            out = out.at[:, angular_columns].set(ang_values * ang_coefficient.astype(dtype))
        return out

    return kernel
