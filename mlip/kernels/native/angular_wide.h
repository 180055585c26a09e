// angular_wide.h: type-9 (wide angular) terms of one atom, the pairs of one
// neighbour j at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include "angular_powers.h"
#include "common.h"
#include "scratch.h"
#include "table.h"

namespace mlip::native {

// The pairs (j, k) of one j, all k > j (type-9 functions; type 3 uses the flat
// list of narrow_pairs, which measured 1.5x faster for type 3 and 1.3x slower
// for type 9, whose pairs need no r_jk terms to amortise the gathers).
// k-side arrays have n entries; a and da are [group][k] with the given stride.
template <typename T>
struct PairBlock {
  int j = 0, n = 0, stride = 0;
  const T *cs, *uxk, *uyk, *uzk, *irk;
  const int32_t* spk;
  const T *a, *da;                 // a_g(r_k) at a[g * stride + k]
  const T *txk, *tyk, *tzk, *trk;  // JVP: tangents of r_k and of |r_k|
  T *gxk, *gyk, *gzk;              // VJP: gradients of r_k, accumulated (member c's at + c * capacity)
};

// The element a type-9 function f of an atom needs at k when its neighbour j has
// element ej: -2 any (one-element table), -1 none (f does not involve ej).
inline int partner_element(const Table& t, int ej, const Angular& f) {
  if (t.one_element) return -2;
  if (ej == f.lo) return f.hi;
  if (ej == f.hi) return f.lo;
  return -1;
}

// The VJP of one pair block for s.members cotangents (Fixed: that count, known at compile time;
// 0: read from s).
template <typename T, int Fixed>
void pair_block_vjp(const Table& t, const PairBlock<T>& b, const T* cot, Scratch<T>& s) {
  const int n = b.n, j = b.j, M = s.capacity, stride = b.stride;
  const size_t NG = t.groups.size();
  const T* MLIP_RESTRICT cs = b.cs;
  const int32_t* MLIP_RESTRICT spk = b.spk;
  const int ej = s.species[j];
  auto in_block = [&](const Angular& f) { return !t.groups[f.group].narrow; };
  const T uxj = s.ux[j], uyj = s.uy[j], uzj = s.uz[j], inv_rj = s.inv_r[j];
  const T* MLIP_RESTRICT uxk = b.uxk;
  const T* MLIP_RESTRICT uyk = b.uyk;
  const T* MLIP_RESTRICT uzk = b.uzk;
  const T* MLIP_RESTRICT irk = b.irk;
  // q_g = sum over the group's functions of coefficient * cotangent * P_l, dq_g with dP_l, for
  // every member at once (member c's at c * n_groups * M)
  const int NC = Fixed > 0 ? Fixed : s.members, F = t.n_columns;
  const size_t member_q = s.n_groups * size_t(M);
  for (int c = 0; c < NC; ++c)
    for (size_t g = 0; g < NG; ++g) {
      if (t.groups[g].narrow) continue;
      std::fill(&s.q[c * member_q + g * M], &s.q[c * member_q + g * M] + n, T(0));
      std::fill(&s.dq[c * member_q + g * M], &s.dq[c * member_q + g * M] + n, T(0));
    }
  for (const Angular& f : t.angular) {
    if (!in_block(f)) continue;
    const int other = partner_element(t, ej, f);
    if (other == -1) continue;
    const T* MLIP_RESTRICT p = &s.p[f.shape * M];
    const T* MLIP_RESTRICT dp = &s.dp[f.shape * M];
    for (int c = 0; c < NC; ++c) {
      const T w = T(f.coefficient) * cot[c * F + f.column];
      T* MLIP_RESTRICT q = &s.q[c * member_q + f.group * M];
      T* MLIP_RESTRICT dq = &s.dq[c * member_q + f.group * M];
      if (other == -2) {
        MLIP_SIMD for (int k = 0; k < n; ++k) { q[k] += w * p[k]; dq[k] += w * dp[k]; }
      } else {
        MLIP_SIMD for (int k = 0; k < n; ++k) {
          T m = spk[k] == other ? w : T(0);
          q[k] += m * p[k];
          dq[k] += m * dp[k];
        }
      }
    }
  }
  for (int c = 0; c < NC; ++c) {
    T* MLIP_RESTRICT arj = s.acc_rj.data();
    T* MLIP_RESTRICT ark = s.acc_rk.data();  // the radial terms' member buffers are done with
    T* MLIP_RESTRICT ac = s.acc_c.data();
    std::fill(arj, arj + n, T(0)); std::fill(ark, ark + n, T(0)); std::fill(ac, ac + n, T(0));
    for (size_t g = 0; g < NG; ++g) {
      if (t.groups[g].narrow) continue;
      const T aj = s.a[g * M + j], daj = s.da[g * M + j];
      const T* MLIP_RESTRICT ak = b.a + g * stride;
      const T* MLIP_RESTRICT dak = b.da + g * stride;
      const T* MLIP_RESTRICT q = &s.q[c * member_q + g * M];
      const T* MLIP_RESTRICT dq = &s.dq[c * member_q + g * M];
      MLIP_SIMD for (int k = 0; k < n; ++k) {
        arj[k] += daj * ak[k] * q[k];
        ark[k] += aj * dak[k] * q[k];
        ac[k] += aj * ak[k] * dq[k];
      }
    }
    // d cos/d r_j = (u_k - cos u_j) / r_j, d cos/d r_k = (u_j - cos u_k) / r_k,
    // d r_jk/d r_k = w / r_jk = -d r_jk/d r_j
    T* MLIP_RESTRICT gxk = b.gxk + c * M;
    T* MLIP_RESTRICT gyk = b.gyk + c * M;
    T* MLIP_RESTRICT gzk = b.gzk + c * M;
    T gjx = T(0), gjy = T(0), gjz = T(0);
    MLIP_SIMD_SUM(gjx, gjy, gjz) for (int k = 0; k < n; ++k) {
      T cosine = cs[k];
      T cj = ac[k] * inv_rj, ck = ac[k] * irk[k];
      gjx += arj[k] * uxj + cj * (uxk[k] - cosine * uxj);
      gjy += arj[k] * uyj + cj * (uyk[k] - cosine * uyj);
      gjz += arj[k] * uzj + cj * (uzk[k] - cosine * uzj);
      gxk[k] += ark[k] * uxk[k] + ck * (uxj - cosine * uxk[k]);
      gyk[k] += ark[k] * uyk[k] + ck * (uyj - cosine * uyk[k]);
      gzk[k] += ark[k] * uzk[k] + ck * (uzj - cosine * uzk[k]);
    }
    s.gx[c * M + j] += gjx; s.gy[c * M + j] += gjy; s.gz[c * M + j] += gjz;
  }
}

template <typename T, Mode mode>
void pair_block(const Table& t, const PairBlock<T>& b, const T* cot, T* out, Scratch<T>& s) {
  const int n = b.n, j = b.j, M = s.capacity, stride = b.stride;
  const size_t NG = t.groups.size(), NS = t.shapes.size();
  const T* MLIP_RESTRICT cs = b.cs;
  const int32_t* MLIP_RESTRICT spk = b.spk;
  for (size_t l = 0; l < NS; ++l)
    if (t.wide_shape[l]) shape_powers<T>(t.shapes[l], cs, &s.p[l * M], &s.dp[l * M], n);

  // element of j (partner_element gives the element each function needs at k)
  const int ej = s.species[j];
  auto in_block = [&](const Angular& f) { return !t.groups[f.group].narrow; };

  if (mode == kValues) {
    for (const Angular& f : t.angular) {
      if (!in_block(f)) continue;
      const int other = partner_element(t, ej, f);
      if (other == -1) continue;
      const T* MLIP_RESTRICT ak = b.a + f.group * stride;
      const T* MLIP_RESTRICT p = &s.p[f.shape * M];
      T sum = T(0);
      if (other == -2) {
        MLIP_SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += ak[k] * p[k];
      } else {
        MLIP_SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += spk[k] == other ? ak[k] * p[k] : T(0);
      }
      out[f.column] += T(f.coefficient) * s.a[f.group * M + j] * sum;
    }
    return;
  }

  const T uxj = s.ux[j], uyj = s.uy[j], uzj = s.uz[j], inv_rj = s.inv_r[j];
  const T* MLIP_RESTRICT uxk = b.uxk;
  const T* MLIP_RESTRICT uyk = b.uyk;
  const T* MLIP_RESTRICT uzk = b.uzk;
  const T* MLIP_RESTRICT irk = b.irk;

  if (mode == kVjp) {
    // one member: the member count a compile-time 1 (the single VJP's loops as without members)
    if (s.members == 1) return pair_block_vjp<T, 1>(t, b, cot, s);
    return pair_block_vjp<T, 0>(t, b, cot, s);
  }

  // JVP: tangent of cos along the input tangent
  const T tjx = s.gx[j], tjy = s.gy[j], tjz = s.gz[j];
  const T trj = s.tang_r[j];
  const T* MLIP_RESTRICT txk = b.txk;
  const T* MLIP_RESTRICT tyk = b.tyk;
  const T* MLIP_RESTRICT tzk = b.tzk;
  const T* MLIP_RESTRICT trk = b.trk;
  T* MLIP_RESTRICT tc = s.tang_c.data();
  MLIP_SIMD for (int k = 0; k < n; ++k) {
    T c = cs[k];
    tc[k] = ((uxk[k] - c * uxj) * tjx + (uyk[k] - c * uyj) * tjy + (uzk[k] - c * uzj) * tjz) * inv_rj +
            ((uxj - c * uxk[k]) * txk[k] + (uyj - c * uyk[k]) * tyk[k] + (uzj - c * uzk[k]) * tzk[k]) * irk[k];
  }
  // per group: value tangent b1 (through r_j, r_k) and angular weight b2 (through cos)
  for (size_t g = 0; g < NG; ++g) {
    if (t.groups[g].narrow) continue;
    const T aj = s.a[g * M + j], daj = s.da[g * M + j];
    const T* MLIP_RESTRICT ak = b.a + g * stride;
    const T* MLIP_RESTRICT dak = b.da + g * stride;
    T* MLIP_RESTRICT b1 = &s.q[g * M];
    T* MLIP_RESTRICT b2 = &s.dq[g * M];
    MLIP_SIMD for (int k = 0; k < n; ++k) {
      b1[k] = daj * trj * ak[k] + aj * dak[k] * trk[k];
      b2[k] = aj * ak[k] * tc[k];
    }
  }
  for (const Angular& f : t.angular) {
    if (!in_block(f)) continue;
    const int other = partner_element(t, ej, f);
    if (other == -1) continue;
    const T* MLIP_RESTRICT p = &s.p[f.shape * M];
    const T* MLIP_RESTRICT dp = &s.dp[f.shape * M];
    const T* MLIP_RESTRICT b1 = &s.q[f.group * M];
    const T* MLIP_RESTRICT b2 = &s.dq[f.group * M];
    T sum = T(0);
    if (other == -2) {
      MLIP_SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += b1[k] * p[k] + b2[k] * dp[k];
    } else {
      MLIP_SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += spk[k] == other ? b1[k] * p[k] + b2[k] * dp[k] : T(0);
    }
    out[f.column] += T(f.coefficient) * sum;
  }
}

// With this many cotangents or more, the type-9 VJP builds the atom's Jacobian
// dG_f/dr_k of its type-9 functions once (about the cost of 2-3 single VJPs) and
// contracts it with every cotangent, instead of one pass over the pairs per cotangent.
constexpr int kJacobianMembers = 4;

// The type-9 part of the VJP for s.members cotangents through the Jacobian.  Per pair (j, k)
// and function f = (group g, shape l): G_f += coef a_g(r_j) a_g(r_k) P_l(cos), so
//   dG_f/dr_j += coef [da_j a_k P u_j + a_j a_k dP (u_k - cos u_j) / r_j]
//   dG_f/dr_k += coef [a_j da_k P u_k + a_j a_k dP (u_j - cos u_k) / r_k]
// The j side is reduced over the block's k at once; the k side keeps the sums over j of
// a_j P, a_j dP cos and a_j dP u_j per k (da_k, a_k / r_k and u_k are the same for every j).
template <typename T>
void wide_jacobian(const Table& t, int K, const T* cot, Scratch<T>& s) {
  const int M = s.capacity, NC = s.members, F = t.n_columns;
  const size_t NS = t.shapes.size();
  const T* MLIP_RESTRICT R = s.r.data();
  const T* MLIP_RESTRICT IR = s.inv_r.data();
  const T* MLIP_RESTRICT UX = s.ux.data();
  const T* MLIP_RESTRICT UY = s.uy.data();
  const T* MLIP_RESTRICT UZ = s.uz.data();
  const int32_t* MLIP_RESTRICT SP = s.species.data();
  const T angular_cut = T(t.max_angular_cut);
  int NW = 0;  // the type-9 functions, numbered 0 .. NW-1 in table order
  for (const Angular& f : t.angular) NW += !t.groups[f.group].narrow;
  if (NW == 0) return;
  const size_t need_j = size_t(NW) * 3 * M, need_s = size_t(NW) * 5 * M;
  if (s.jac.size() < need_j) s.jac.assign(need_j, T(0));
  if (s.side.size() < need_s) s.side.assign(need_s, T(0));
  std::fill(s.jac.begin(), s.jac.begin() + need_j, T(0));
  std::fill(s.side.begin(), s.side.begin() + need_s, T(0));
  T* MLIP_RESTRICT cs = s.cos.data();
  for (int j = 0; j < K - 1; ++j) {
    if (!(R[j] < angular_cut)) continue;
    const int k0 = j + 1, n = K - k0;
    const T uxj = UX[j], uyj = UY[j], uzj = UZ[j], inv_rj = IR[j];
    const T* MLIP_RESTRICT uxk = UX + k0;
    const T* MLIP_RESTRICT uyk = UY + k0;
    const T* MLIP_RESTRICT uzk = UZ + k0;
    const int32_t* MLIP_RESTRICT spk = SP + k0;
    MLIP_SIMD for (int k = 0; k < n; ++k) cs[k] = uxj * uxk[k] + uyj * uyk[k] + uzj * uzk[k];
    for (size_t l = 0; l < NS; ++l)
      if (t.wide_shape[l]) shape_powers<T>(t.shapes[l], cs, &s.p[l * M], &s.dp[l * M], n);
    const int ej = SP[j];
    int w = -1;
    for (const Angular& f : t.angular) {
      if (t.groups[f.group].narrow) continue;
      ++w;
      int other = -2;
      if (!t.one_element) other = ej == f.lo ? f.hi : (ej == f.hi ? f.lo : -1);
      if (other == -1) continue;
      const T aj = s.a[f.group * M + j], daj = s.da[f.group * M + j];
      const T* MLIP_RESTRICT ak = &s.a[f.group * M + k0];
      const T* MLIP_RESTRICT p = &s.p[f.shape * M];
      const T* MLIP_RESTRICT dp = &s.dp[f.shape * M];
      T* MLIP_RESTRICT side = &s.side[size_t(w) * 5 * M + k0];
      T* MLIP_RESTRICT s_p = side;
      T* MLIP_RESTRICT s_c = side + M;
      T* MLIP_RESTRICT s_x = side + 2 * M;
      T* MLIP_RESTRICT s_y = side + 3 * M;
      T* MLIP_RESTRICT s_z = side + 4 * M;
      T s1 = T(0), s2 = T(0), vx = T(0), vy = T(0), vz = T(0);
      MLIP_SIMD_SUM(s1, s2, vx, vy, vz) for (int k = 0; k < n; ++k) {
        const T m = (other == -2 || spk[k] == other) ? T(1) : T(0);
        const T akp = m * ak[k] * p[k], akd = m * ak[k] * dp[k];
        s1 += akp;
        s2 += akd * cs[k];
        vx += akd * uxk[k]; vy += akd * uyk[k]; vz += akd * uzk[k];
        const T ajp = m * aj * p[k], ajd = m * aj * dp[k];
        s_p[k] += ajp;
        s_c[k] += ajd * cs[k];
        s_x[k] += ajd * uxj; s_y[k] += ajd * uyj; s_z[k] += ajd * uzj;
      }
      const T coef = T(f.coefficient);
      const T radial = coef * (daj * s1 - aj * inv_rj * s2), angular = coef * aj * inv_rj;
      T* MLIP_RESTRICT jac = &s.jac[size_t(w) * 3 * M];
      jac[j] += radial * uxj + angular * vx;
      jac[M + j] += radial * uyj + angular * vy;
      jac[2 * M + j] += radial * uzj + angular * vz;
    }
  }
  // the k sides into the Jacobian, then every member's gradient sum_f cot_c[f] dG_f/dr_k
  int w = -1;
  for (const Angular& f : t.angular) {
    if (t.groups[f.group].narrow) continue;
    ++w;
    const T coef = T(f.coefficient);
    const T* MLIP_RESTRICT ak = &s.a[f.group * M];
    const T* MLIP_RESTRICT dak = &s.da[f.group * M];
    const T* MLIP_RESTRICT side = &s.side[size_t(w) * 5 * M];
    T* MLIP_RESTRICT jx = &s.jac[size_t(w) * 3 * M];
    T* MLIP_RESTRICT jy = jx + M;
    T* MLIP_RESTRICT jz = jx + 2 * M;
    MLIP_SIMD for (int k = 0; k < K; ++k) {
      const T ar = ak[k] * IR[k];
      const T along = coef * (dak[k] * side[k] - ar * side[M + k]);
      jx[k] += along * UX[k] + coef * ar * side[2 * M + k];
      jy[k] += along * UY[k] + coef * ar * side[3 * M + k];
      jz[k] += along * UZ[k] + coef * ar * side[4 * M + k];
    }
    for (int c = 0; c < NC; ++c) {
      const T weight = cot[c * F + f.column];
      T* MLIP_RESTRICT gx = s.gx.data() + c * M;
      T* MLIP_RESTRICT gy = s.gy.data() + c * M;
      T* MLIP_RESTRICT gz = s.gz.data() + c * M;
      MLIP_SIMD for (int k = 0; k < K; ++k) {
        gx[k] += weight * jx[k]; gy[k] += weight * jy[k]; gz[k] += weight * jz[k];
      }
    }
  }
}

// Type-9 terms of one atom: for each of its K compacted neighbours j inside the
// largest angular cutoff, the pairs (j, k > j) as one PairBlock.  Needs the pair
// factors a, da of every group in s.
template <typename T, Mode mode>
void wide_pairs(const Table& t, int K, const T* cot, T* out, Scratch<T>& s) {
  if (mode == kVjp && s.members >= kJacobianMembers) return wide_jacobian<T>(t, K, cot, s);
  const int M = s.capacity;
  const T* MLIP_RESTRICT R = s.r.data();
  const T* MLIP_RESTRICT IR = s.inv_r.data();
  const T* MLIP_RESTRICT UX = s.ux.data();
  const T* MLIP_RESTRICT UY = s.uy.data();
  const T* MLIP_RESTRICT UZ = s.uz.data();
  const int32_t* MLIP_RESTRICT SP = s.species.data();
  T* MLIP_RESTRICT GX = s.gx.data();  // VJP: gradient; JVP: input tangent
  T* MLIP_RESTRICT GY = s.gy.data();
  T* MLIP_RESTRICT GZ = s.gz.data();
  const T* MLIP_RESTRICT TR = s.tang_r.data();
  const T angular_cut = T(t.max_angular_cut);
  T* MLIP_RESTRICT cs = s.cos.data();  // per pair (j, k0 + k), k = 0 .. n-1

  for (int j = 0; j < K - 1; ++j) {
    if (!(R[j] < angular_cut)) continue;
    const int k0 = j + 1, n = K - k0;
    const T uxj = UX[j], uyj = UY[j], uzj = UZ[j];
    const T* MLIP_RESTRICT uxk = UX + k0;
    const T* MLIP_RESTRICT uyk = UY + k0;
    const T* MLIP_RESTRICT uzk = UZ + k0;
    MLIP_SIMD for (int k = 0; k < n; ++k) cs[k] = uxj * uxk[k] + uyj * uyk[k] + uzj * uzk[k];
    PairBlock<T> block{};
    block.j = j;
    block.n = n;
    block.cs = cs;
    block.uxk = uxk; block.uyk = uyk; block.uzk = uzk; block.irk = IR + k0; block.spk = SP + k0;
    block.txk = GX + k0; block.tyk = GY + k0; block.tzk = GZ + k0; block.trk = TR + k0;
    block.gxk = GX + k0; block.gyk = GY + k0; block.gzk = GZ + k0;
    block.a = s.a.data() + k0; block.da = s.da.data() + k0; block.stride = M;
    pair_block<T, mode>(t, block, cot, out, s);
  }
}

}  // namespace mlip::native
