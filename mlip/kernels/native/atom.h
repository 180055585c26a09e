// atom.h: all symmetry functions of one atom (values, VJP or JVP) from its
// neighbour vectors: compaction, cutoffs, then the radial, wide and narrow terms.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include "angular_narrow.h"
#include "angular_wide.h"
#include "common.h"
#include "cutoff.h"
#include "radial.h"
#include "scratch.h"
#include "table.h"
#include "vector_math.h"

namespace mlip::native {

// mode kValues: out[F] = G; kVjp: grad[M*3] = sum_f cot[f] dG_f/dr_ij; kJvp: out[F] = sum dG/dr . tan.
// kVjp with `members` > 1 cotangents (an ensemble's): member c's cotangent at cot + c * cot_stride and
// its gradient at grad + c * grad_stride, every pair's geometry, cutoffs, exponentials and angular
// powers computed once for all of them.
template <typename T, Mode mode>
void atom(const Table& t, int cutoff_type, double alpha, int n_slots, const T* rij, const int32_t* species,
          const T* cot, const T* tan, T* out, T* grad, Scratch<T>& s, int members = 1, int64_t cot_stride = 0,
          int64_t grad_stride = 0) {
  s.reserve(n_slots, t, mode == kVjp ? members : 1);
  const int F = t.n_columns;
  const int NC = s.members;
  if (mode != kVjp) std::fill(out, out + F, T(0));
  if (mode == kVjp)
    for (int c = 0; c < NC; ++c) {
      std::fill(grad + c * grad_stride, grad + c * grad_stride + 3 * n_slots, T(0));
      std::copy(cot + c * cot_stride, cot + c * cot_stride + F, s.cot.data() + c * F);  // contiguous [NC][F]
    }
  if (mode == kVjp) cot = s.cot.data();

  T* MLIP_RESTRICT X = s.x.data();
  T* MLIP_RESTRICT Y = s.y.data();
  T* MLIP_RESTRICT Z = s.z.data();
  T* MLIP_RESTRICT R = s.r.data();
  T* MLIP_RESTRICT IR = s.inv_r.data();
  T* MLIP_RESTRICT UX = s.ux.data();
  T* MLIP_RESTRICT UY = s.uy.data();
  T* MLIP_RESTRICT UZ = s.uz.data();
  T* MLIP_RESTRICT GX = s.gx.data();  // VJP: gradient; JVP: input tangent
  T* MLIP_RESTRICT GY = s.gy.data();
  T* MLIP_RESTRICT GZ = s.gz.data();
  T* MLIP_RESTRICT TR = s.tang_r.data();
  int32_t* MLIP_RESTRICT SP = s.species.data();

  // compact the real neighbours inside the largest cutoff
  const T max_cut2 = T(t.max_cut * t.max_cut);
  int K = 0;
  for (int m = 0; m < n_slots; ++m) {
    if (species[m] < 0) continue;
    T x = rij[3 * m], y = rij[3 * m + 1], z = rij[3 * m + 2];
    T r2 = x * x + y * y + z * z;
    if (!(r2 < max_cut2) || r2 == T(0)) continue;
    X[K] = x; Y[K] = y; Z[K] = z; SP[K] = species[m]; s.slot[K] = m;
    if (mode == kJvp) {
      GX[K] = tan[3 * m]; GY[K] = tan[3 * m + 1]; GZ[K] = tan[3 * m + 2];
    }
    ++K;
  }
  if (K == 0) return;
  const int M = s.capacity;
  if (mode != kJvp)
    for (int c = 0; c < NC; ++c) {
      std::fill(GX + c * M, GX + c * M + K, T(0));
      std::fill(GY + c * M, GY + c * M + K, T(0));
      std::fill(GZ + c * M, GZ + c * M + K, T(0));
    }
  MLIP_SIMD for (int k = 0; k < K; ++k) {
    R[k] = std::sqrt(X[k] * X[k] + Y[k] * Y[k] + Z[k] * Z[k]);
    IR[k] = T(1) / R[k];
    UX[k] = X[k] * IR[k]; UY[k] = Y[k] * IR[k]; UZ[k] = Z[k] * IR[k];
  }
  for (size_t c = 0; c < t.cutoffs.size(); ++c)
    cutoff<T>(cutoff_type, alpha, t.cutoffs[c], R, &s.fc[c * M], &s.dfc[c * M], K);
  if (mode == kJvp)  // tangent of r_k: u_k . tan_k
    MLIP_SIMD for (int k = 0; k < K; ++k) TR[k] = UX[k] * GX[k] + UY[k] * GY[k] + UZ[k] * GZ[k];

  radial_terms<T, mode>(t, K, cot, out, s);
  if (!t.angular.empty()) {
    const size_t NG = t.groups.size();  // the angular terms
    // pair factors a_g(r) = exp(-eta (r - rs)^2) f_c(r) and their r-derivatives
    for (size_t g = 0; g < NG; ++g) {
      const Group& G = t.groups[g];
      const T eta = T(G.eta), shift = T(G.shift);
      const T* MLIP_RESTRICT fc = &s.fc[G.cut * M];
      const T* MLIP_RESTRICT dfc = &s.dfc[G.cut * M];
      T* MLIP_RESTRICT a = &s.a[g * M];
      T* MLIP_RESTRICT da = &s.da[g * M];
      MLIP_SIMD for (int k = 0; k < K; ++k) {
        T d = R[k] - shift;
        T e = vexp(-eta * d * d);
        a[k] = e * fc[k];
        da[k] = e * (dfc[k] - T(2) * eta * d * fc[k]);
      }
    }
    if (t.has_wide) wide_pairs<T, mode>(t, K, cot, out, s);
    thread_local PairScratch<T> pairs;  // type 3: a flat list of the pairs with r_jk < r_c
    pairs.reserve(M, t, NC);
    if (t.has_narrow) narrow_pairs<T, mode>(t, K, cutoff_type, alpha, cot, out, s, pairs);
  }
  if (mode == kVjp)  // the gradients of the compacted neighbours back to their slots
    for (int c = 0; c < NC; ++c) {
      T* g = grad + c * grad_stride;
      for (int k = 0; k < K; ++k) {
        const int m = s.slot[k];
        g[3 * m] = GX[c * M + k]; g[3 * m + 1] = GY[c * M + k]; g[3 * m + 2] = GZ[c * M + k];
      }
    }
}

}  // namespace mlip::native
