// angular_narrow.h: type-3 (narrow angular) terms of one atom, over a flat list
// of its neighbour pairs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>
#include "angular_powers.h"
#include "common.h"
#include "cutoff.h"
#include "scratch.h"
#include "table.h"
#include "vector_math.h"

namespace mlip::native {

// Type-3 terms of one atom over a flat list of its neighbour pairs (j < k)
// with r_jk below the largest type-3 cutoff (about half).  The list is processed in
// chunks of kChunk pairs whose per-pair quantities are gathered into
// contiguous arrays, so every loop runs over up to kChunk pairs (long,
// vectorised loops) instead of over the few k of one j.
constexpr int kChunk = 128;

template <typename T>
struct PairScratch {
  std::vector<int> pj, pk;  // the pair list
  std::vector<T> buf;       // per-chunk arrays of kChunk entries (slot, group, shape, cut)
  std::vector<int32_t> channel;
  std::vector<T> member_q;  // VJP: [members][2 (q, dq)][groups][kChunk]
  size_t groups = 0, shapes = 0, cutoffs = 0, members = 0;
  enum Slot { kCos, kRjk, kWx, kWy, kWz, kUxj, kUyj, kUzj, kUxk, kUyk, kUzk, kIrj, kIrk, kArj, kArk, kArjk, kAc,
              kGjx, kGjy, kGjz, kGkx, kGky, kGkz, kTjx, kTjy, kTjz, kTkx, kTky, kTkz, kTrj, kTrk, kTc, kTrjk,
              kFixed };
  // per group: 9 arrays (GroupArray); per shape: p, dp; per cutoff: fc, dfc
  T* slot(int n) { return &buf[size_t(n) * kChunk]; }
  T* group(int which, size_t g) { return &buf[(kFixed + which * groups + g) * kChunk]; }
  T* shape(int which, size_t l) { return &buf[(kFixed + 9 * groups + which * shapes + l) * kChunk]; }
  T* cut(int which, size_t c) { return &buf[(kFixed + 9 * groups + 2 * shapes + which * cutoffs + c) * kChunk]; }
  // q (which 0) or dq (1) of group g for cotangent c
  T* member(int c, int which, size_t g) { return &member_q[((size_t(c) * 2 + which) * groups + g) * kChunk]; }

  void reserve(int m, const Table& t, int count = 1) {
    size_t pairs = size_t(m) * size_t(std::max(m - 1, 1)) / 2 + 1;
    if (pj.size() < pairs) { pj.assign(pairs, 0); pk.assign(pairs, 0); }
    if (t.groups.size() > groups || t.shapes.size() > shapes || t.cutoffs.size() > cutoffs || buf.empty()) {
      groups = std::max(groups, t.groups.size());
      shapes = std::max(shapes, t.shapes.size());
      cutoffs = std::max(cutoffs, t.cutoffs.size());
      buf.assign((kFixed + 9 * groups + 2 * shapes + 2 * cutoffs) * kChunk, T(0));
      channel.assign(kChunk, 0);
      members = 0;  // the member buffers' group stride changed
    }
    if (size_t(count) > members || member_q.empty()) {
      members = std::max(members, size_t(count));
      member_q.assign(members * 2 * groups * kChunk, T(0));
    }
  }
};

enum GroupArray { kAj, kAk, kDaj, kDak, kTjk, kDtjk, kQ, kDq, kX };

template <typename T, Mode mode>
void narrow_pairs(const Table& t, int K, int cutoff_type, double alpha, const T* cot, T* out,
                   Scratch<T>& s, PairScratch<T>& ps) {
  const int M = s.capacity;
  const T* MLIP_RESTRICT X = s.x.data();
  const T* MLIP_RESTRICT Y = s.y.data();
  const T* MLIP_RESTRICT Z = s.z.data();
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

  // the pair list, compacted without branches
  const T angular_cut = T(t.max_angular_cut);
  const T cut2 = T(t.max_narrow_cut * t.max_narrow_cut);
  int* MLIP_RESTRICT pj = ps.pj.data();
  int* MLIP_RESTRICT pk = ps.pk.data();
  int P = 0;
  for (int j = 0; j < K - 1; ++j) {
    if (!(R[j] < angular_cut)) continue;
    const T xj = X[j], yj = Y[j], zj = Z[j];
    for (int k = j + 1; k < K; ++k) {
      T dx = X[k] - xj, dy = Y[k] - yj, dz = Z[k] - zj;
      pj[P] = j;
      pk[P] = k;
      P += (dx * dx + dy * dy + dz * dz < cut2) & (R[k] < angular_cut);
    }
  }
  const size_t NG = t.groups.size(), NS = t.shapes.size();
  auto in_block = [&](const Angular& f) { return t.groups[f.group].narrow; };
  const int E = t.n_elements;

  for (int c0 = 0; c0 < P; c0 += kChunk) {
    const int n = std::min(kChunk, P - c0);
    const int* MLIP_RESTRICT cj = pj + c0;
    const int* MLIP_RESTRICT ck = pk + c0;
    T* MLIP_RESTRICT cs = ps.slot(ps.kCos);
    T* MLIP_RESTRICT rjk = ps.slot(ps.kRjk);
    T* MLIP_RESTRICT wx = ps.slot(ps.kWx);
    T* MLIP_RESTRICT wy = ps.slot(ps.kWy);
    T* MLIP_RESTRICT wz = ps.slot(ps.kWz);
    T* MLIP_RESTRICT uxj = ps.slot(ps.kUxj);
    T* MLIP_RESTRICT uyj = ps.slot(ps.kUyj);
    T* MLIP_RESTRICT uzj = ps.slot(ps.kUzj);
    T* MLIP_RESTRICT uxk = ps.slot(ps.kUxk);
    T* MLIP_RESTRICT uyk = ps.slot(ps.kUyk);
    T* MLIP_RESTRICT uzk = ps.slot(ps.kUzk);
    T* MLIP_RESTRICT irj = ps.slot(ps.kIrj);
    T* MLIP_RESTRICT irk = ps.slot(ps.kIrk);
    int32_t* MLIP_RESTRICT chan = ps.channel.data();
    MLIP_SIMD for (int i = 0; i < n; ++i) {
      const int j = cj[i], k = ck[i];
      T dx = X[k] - X[j], dy = Y[k] - Y[j], dz = Z[k] - Z[j];
      wx[i] = dx; wy[i] = dy; wz[i] = dz;
      rjk[i] = std::sqrt(std::max(dx * dx + dy * dy + dz * dz, T(1e-30)));
      uxj[i] = UX[j]; uyj[i] = UY[j]; uzj[i] = UZ[j];
      uxk[i] = UX[k]; uyk[i] = UY[k]; uzk[i] = UZ[k];
      cs[i] = uxj[i] * uxk[i] + uyj[i] * uyk[i] + uzj[i] * uzk[i];
      irj[i] = IR[j]; irk[i] = IR[k];
      const int32_t ej = SP[j], ek = SP[k];
      chan[i] = (ej < ek ? ej : ek) * E + (ej < ek ? ek : ej);
    }
    for (size_t g = 0; g < NG; ++g) {
      if (!t.groups[g].narrow) continue;
      const T* MLIP_RESTRICT a = &s.a[g * M];
      T* MLIP_RESTRICT aj = ps.group(kAj, g);
      T* MLIP_RESTRICT ak = ps.group(kAk, g);
      MLIP_SIMD for (int i = 0; i < n; ++i) { aj[i] = a[cj[i]]; ak[i] = a[ck[i]]; }
      if (mode != kValues) {
        const T* MLIP_RESTRICT da = &s.da[g * M];
        T* MLIP_RESTRICT daj = ps.group(kDaj, g);
        T* MLIP_RESTRICT dak = ps.group(kDak, g);
        MLIP_SIMD for (int i = 0; i < n; ++i) { daj[i] = da[cj[i]]; dak[i] = da[ck[i]]; }
      }
    }
    for (size_t c = 0; c < t.cutoffs.size(); ++c)
      if (t.narrow_cutoff[c]) cutoff<T>(cutoff_type, alpha, t.cutoffs[c], rjk, ps.cut(0, c), ps.cut(1, c), n);
    for (size_t g = 0; g < NG; ++g) {
      const Group& G = t.groups[g];
      if (!G.narrow) continue;
      T* MLIP_RESTRICT tj = ps.group(kTjk, g);
      T* MLIP_RESTRICT dtj = ps.group(kDtjk, g);
      const T eta = T(G.eta), shift = T(G.shift);
      const T* MLIP_RESTRICT fc = ps.cut(0, G.cut);
      const T* MLIP_RESTRICT dfc = ps.cut(1, G.cut);
      MLIP_SIMD for (int i = 0; i < n; ++i) {  // the r_jk factor: Gaussian times cutoff
        T d = rjk[i] - shift;
        T e = vexp(-eta * d * d);
        tj[i] = e * fc[i];
        if (mode != kValues) dtj[i] = e * (dfc[i] - T(2) * eta * d * fc[i]);
      }
    }
    for (size_t l = 0; l < NS; ++l)
      if (t.narrow_shape[l]) shape_powers<T>(t.shapes[l], cs, ps.shape(0, l), ps.shape(1, l), n);

    if (mode == kValues) {
      for (size_t g = 0; g < NG; ++g) {  // x_g = a_j a_k T_jk: the pair's radial part
        if (!t.groups[g].narrow) continue;
        const T* MLIP_RESTRICT aj = ps.group(kAj, g);
        const T* MLIP_RESTRICT ak = ps.group(kAk, g);
        const T* MLIP_RESTRICT tj = ps.group(kTjk, g);
        T* MLIP_RESTRICT x = ps.group(kX, g);
        MLIP_SIMD for (int i = 0; i < n; ++i) x[i] = aj[i] * ak[i] * tj[i];
      }
      for (const Angular& f : t.angular) {
        if (!in_block(f)) continue;
        const T* MLIP_RESTRICT x = ps.group(kX, f.group);
        const T* MLIP_RESTRICT p = ps.shape(0, f.shape);
        T sum = T(0);
        if (t.one_element) {
          MLIP_SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += x[i] * p[i];
        } else {
          const int32_t want = f.lo * E + f.hi;
          MLIP_SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += chan[i] == want ? x[i] * p[i] : T(0);
        }
        out[f.column] += T(f.coefficient) * sum;
      }
      continue;
    }

    if (mode == kVjp) {
      // q_g = sum over the group's functions of coefficient * cotangent * P_l, dq_g with dP_l,
      // for every member at once
      const int NC = s.members, F = t.n_columns;
      for (int c = 0; c < NC; ++c)
        for (size_t g = 0; g < NG; ++g) {
          if (!t.groups[g].narrow) continue;
          std::fill(ps.member(c, 0, g), ps.member(c, 0, g) + n, T(0));
          std::fill(ps.member(c, 1, g), ps.member(c, 1, g) + n, T(0));
        }
      for (const Angular& f : t.angular) {
        if (!in_block(f)) continue;
        const T* MLIP_RESTRICT p = ps.shape(0, f.shape);
        const T* MLIP_RESTRICT dp = ps.shape(1, f.shape);
        const int32_t want = f.lo * E + f.hi;
        for (int c = 0; c < NC; ++c) {
          const T w = T(f.coefficient) * cot[c * F + f.column];
          T* MLIP_RESTRICT q = ps.member(c, 0, f.group);
          T* MLIP_RESTRICT dq = ps.member(c, 1, f.group);
          if (t.one_element) {
            MLIP_SIMD for (int i = 0; i < n; ++i) { q[i] += w * p[i]; dq[i] += w * dp[i]; }
          } else {
            MLIP_SIMD for (int i = 0; i < n; ++i) {
              T m = chan[i] == want ? w : T(0);
              q[i] += m * p[i];
              dq[i] += m * dp[i];
            }
          }
        }
      }
      for (int c = 0; c < NC; ++c) {
        T* MLIP_RESTRICT arj = ps.slot(ps.kArj);
        T* MLIP_RESTRICT ark = ps.slot(ps.kArk);
        T* MLIP_RESTRICT arjk = ps.slot(ps.kArjk);
        T* MLIP_RESTRICT ac = ps.slot(ps.kAc);
        std::fill(arj, arj + n, T(0)); std::fill(ark, ark + n, T(0));
        std::fill(arjk, arjk + n, T(0)); std::fill(ac, ac + n, T(0));
        for (size_t g = 0; g < NG; ++g) {
          if (!t.groups[g].narrow) continue;
          const T* MLIP_RESTRICT aj = ps.group(kAj, g);
          const T* MLIP_RESTRICT ak = ps.group(kAk, g);
          const T* MLIP_RESTRICT daj = ps.group(kDaj, g);
          const T* MLIP_RESTRICT dak = ps.group(kDak, g);
          const T* MLIP_RESTRICT q = ps.member(c, 0, g);
          const T* MLIP_RESTRICT dq = ps.member(c, 1, g);
          const T* MLIP_RESTRICT tj = ps.group(kTjk, g);
          const T* MLIP_RESTRICT dtj = ps.group(kDtjk, g);
          MLIP_SIMD for (int i = 0; i < n; ++i) {
            T tq = tj[i] * q[i];
            arj[i] += daj[i] * ak[i] * tq;
            ark[i] += aj[i] * dak[i] * tq;
            arjk[i] += aj[i] * ak[i] * dtj[i] * q[i];
            ac[i] += aj[i] * ak[i] * tj[i] * dq[i];
          }
        }
        // d cos/d r_j = (u_k - cos u_j) / r_j, d cos/d r_k = (u_j - cos u_k) / r_k,
        // d r_jk/d r_k = w / r_jk = -d r_jk/d r_j
        T* MLIP_RESTRICT gjx = ps.slot(ps.kGjx);
        T* MLIP_RESTRICT gjy = ps.slot(ps.kGjy);
        T* MLIP_RESTRICT gjz = ps.slot(ps.kGjz);
        T* MLIP_RESTRICT gkx = ps.slot(ps.kGkx);
        T* MLIP_RESTRICT gky = ps.slot(ps.kGky);
        T* MLIP_RESTRICT gkz = ps.slot(ps.kGkz);
        MLIP_SIMD for (int i = 0; i < n; ++i) {
          T cosine = cs[i];
          T along = arjk[i] / rjk[i];
          T cj2 = ac[i] * irj[i], ck2 = ac[i] * irk[i];
          gjx[i] = arj[i] * uxj[i] + cj2 * (uxk[i] - cosine * uxj[i]) - along * wx[i];
          gjy[i] = arj[i] * uyj[i] + cj2 * (uyk[i] - cosine * uyj[i]) - along * wy[i];
          gjz[i] = arj[i] * uzj[i] + cj2 * (uzk[i] - cosine * uzj[i]) - along * wz[i];
          gkx[i] = ark[i] * uxk[i] + ck2 * (uxj[i] - cosine * uxk[i]) + along * wx[i];
          gky[i] = ark[i] * uyk[i] + ck2 * (uyj[i] - cosine * uyk[i]) + along * wy[i];
          gkz[i] = ark[i] * uzk[i] + ck2 * (uzj[i] - cosine * uzk[i]) + along * wz[i];
        }
        T* gx = GX + c * M;  // pairs share atoms, so this accumulation is not vectorised
        T* gy = GY + c * M;
        T* gz = GZ + c * M;
        for (int i = 0; i < n; ++i) {
          const int j = cj[i], k = ck[i];
          gx[j] += gjx[i]; gy[j] += gjy[i]; gz[j] += gjz[i];
          gx[k] += gkx[i]; gy[k] += gky[i]; gz[k] += gkz[i];
        }
      }
      continue;
    }

    // JVP: tangents of cos and r_jk along the input tangent
    T* MLIP_RESTRICT tjx = ps.slot(ps.kTjx);
    T* MLIP_RESTRICT tjy = ps.slot(ps.kTjy);
    T* MLIP_RESTRICT tjz = ps.slot(ps.kTjz);
    T* MLIP_RESTRICT tkx = ps.slot(ps.kTkx);
    T* MLIP_RESTRICT tky = ps.slot(ps.kTky);
    T* MLIP_RESTRICT tkz = ps.slot(ps.kTkz);
    T* MLIP_RESTRICT trj = ps.slot(ps.kTrj);
    T* MLIP_RESTRICT trk = ps.slot(ps.kTrk);
    T* MLIP_RESTRICT tc = ps.slot(ps.kTc);
    T* MLIP_RESTRICT trjk = ps.slot(ps.kTrjk);
    MLIP_SIMD for (int i = 0; i < n; ++i) {
      const int j = cj[i], k = ck[i];
      tjx[i] = GX[j]; tjy[i] = GY[j]; tjz[i] = GZ[j]; tkx[i] = GX[k]; tky[i] = GY[k]; tkz[i] = GZ[k];
      trj[i] = TR[j]; trk[i] = TR[k];
    }
    MLIP_SIMD for (int i = 0; i < n; ++i) {
      T c = cs[i];
      tc[i] = ((uxk[i] - c * uxj[i]) * tjx[i] + (uyk[i] - c * uyj[i]) * tjy[i] + (uzk[i] - c * uzj[i]) * tjz[i]) *
                  irj[i] +
              ((uxj[i] - c * uxk[i]) * tkx[i] + (uyj[i] - c * uyk[i]) * tky[i] + (uzj[i] - c * uzk[i]) * tkz[i]) *
                  irk[i];
      trjk[i] = (wx[i] * (tkx[i] - tjx[i]) + wy[i] * (tky[i] - tjy[i]) + wz[i] * (tkz[i] - tjz[i])) / rjk[i];
    }
    // per group: value tangent b1 (through r_j, r_k, r_jk) and angular weight b2 (through cos)
    for (size_t g = 0; g < NG; ++g) {
      if (!t.groups[g].narrow) continue;
      const T* MLIP_RESTRICT aj = ps.group(kAj, g);
      const T* MLIP_RESTRICT ak = ps.group(kAk, g);
      const T* MLIP_RESTRICT daj = ps.group(kDaj, g);
      const T* MLIP_RESTRICT dak = ps.group(kDak, g);
      T* MLIP_RESTRICT b1 = ps.group(kQ, g);
      T* MLIP_RESTRICT b2 = ps.group(kDq, g);
      const T* MLIP_RESTRICT tj = ps.group(kTjk, g);
      const T* MLIP_RESTRICT dtj = ps.group(kDtjk, g);
      MLIP_SIMD for (int i = 0; i < n; ++i) {
        b1[i] = (daj[i] * trj[i] * ak[i] + aj[i] * dak[i] * trk[i]) * tj[i] + aj[i] * ak[i] * dtj[i] * trjk[i];
        b2[i] = aj[i] * ak[i] * tj[i] * tc[i];
      }
    }
    for (const Angular& f : t.angular) {
      if (!in_block(f)) continue;
      const T* MLIP_RESTRICT p = ps.shape(0, f.shape);
      const T* MLIP_RESTRICT dp = ps.shape(1, f.shape);
      const T* MLIP_RESTRICT b1 = ps.group(kQ, f.group);
      const T* MLIP_RESTRICT b2 = ps.group(kDq, f.group);
      T sum = T(0);
      if (t.one_element) {
        MLIP_SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += b1[i] * p[i] + b2[i] * dp[i];
      } else {
        const int32_t want = f.lo * E + f.hi;
        MLIP_SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += chan[i] == want ? b1[i] * p[i] + b2[i] * dp[i] : T(0);
      }
      out[f.column] += T(f.coefficient) * sum;
    }
  }
}

}  // namespace mlip::native
