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
template <typename T, Mode mode>
void atom(const Table& t, int cutoff_type, double alpha, int n_slots, const T* rij, const int32_t* species,
          const T* cot, const T* tan, T* out, T* grad, Scratch<T>& s) {
  s.reserve(n_slots, t);
  const int F = t.n_columns;
  if (mode != kVjp) std::fill(out, out + F, T(0));
  if (mode == kVjp) std::fill(grad, grad + 3 * n_slots, T(0));

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
    } else {
      GX[K] = GY[K] = GZ[K] = T(0);
    }
    ++K;
  }
  if (K == 0) return;
  MLIP_SIMD for (int k = 0; k < K; ++k) {
    R[k] = std::sqrt(X[k] * X[k] + Y[k] * Y[k] + Z[k] * Z[k]);
    IR[k] = T(1) / R[k];
    UX[k] = X[k] * IR[k]; UY[k] = Y[k] * IR[k]; UZ[k] = Z[k] * IR[k];
  }
  const int M = s.capacity;
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
    pairs.reserve(M, t);
    if (t.has_narrow) narrow_pairs<T, mode>(t, K, cutoff_type, alpha, cot, out, s, pairs);
  }
  if (mode == kVjp)  // the gradients of the compacted neighbours back to their slots
    for (int k = 0; k < K; ++k) {
      const int m = s.slot[k];
      grad[3 * m] = GX[k]; grad[3 * m + 1] = GY[k]; grad[3 * m + 2] = GZ[k];
    }
}

}  // namespace mlip::native
