// radial.h: type-2 (radial) terms of one atom.
#pragma once

#include <algorithm>
#include <cstdint>
#include "common.h"
#include "scratch.h"
#include "table.h"
#include "vector_math.h"

namespace mlip::native {

// Type-2 terms of one atom, G = sum_k exp(-eta (r_k - r_s)^2) f_c(r_k) over its K
// compacted neighbours k of the function's element; needs r, u and f_c in s.
template <typename T, Mode mode>
void radial_terms(const Table& t, int K, const T* cot, T* out, Scratch<T>& s) {
  const int M = s.capacity;
  const T* MLIP_RESTRICT R = s.r.data();
  const T* MLIP_RESTRICT UX = s.ux.data();
  const T* MLIP_RESTRICT UY = s.uy.data();
  const T* MLIP_RESTRICT UZ = s.uz.data();
  const int32_t* MLIP_RESTRICT SP = s.species.data();
  T* MLIP_RESTRICT GX = s.gx.data();  // VJP: gradient
  T* MLIP_RESTRICT GY = s.gy.data();
  T* MLIP_RESTRICT GZ = s.gz.data();
  const T* MLIP_RESTRICT TR = s.tang_r.data();  // JVP: tangent of r_k
  T* MLIP_RESTRICT acc = s.acc_rk.data();  // VJP: dL/dr_k of the radial functions, [members][k]
  T* MLIP_RESTRICT deriv_k = s.acc_c.data();  // VJP with several members: one function's dG/dr_k
  const int NC = s.members, F = t.n_columns;
  if (mode == kVjp) std::fill(acc, acc + NC * M, T(0));
  for (const Radial& f : t.radial) {
    const T eta = T(f.eta), shift = T(f.shift);
    const T* MLIP_RESTRICT fc = &s.fc[f.cut * M];
    const T* MLIP_RESTRICT dfc = &s.dfc[f.cut * M];
    const int element = t.one_element ? -2 : f.element;
    T sum = T(0);
    if (mode == kValues) {
      MLIP_SIMD_SUM(sum) for (int k = 0; k < K; ++k) {
        T d = R[k] - shift;
        T v = vexp(-eta * d * d) * fc[k];
        sum += (element == -2 || SP[k] == element) ? v : T(0);
      }
      out[f.column] += sum;
      continue;
    }
    const T weight = mode == kVjp ? cot[f.column] : T(1);
    const bool several = mode == kVjp && NC > 1;  // the derivative once, then every member's weight
    MLIP_SIMD_SUM(sum) for (int k = 0; k < K; ++k) {
      T d = R[k] - shift;
      T deriv = vexp(-eta * d * d) * (dfc[k] - T(2) * eta * d * fc[k]);
      deriv = (element == -2 || SP[k] == element) ? deriv : T(0);
      if (mode == kVjp) {
        if (several) deriv_k[k] = deriv;
        else acc[k] += weight * deriv;
      } else {
        sum += deriv * TR[k];
      }
    }
    if (several)
      for (int c = 0; c < NC; ++c) {
        const T w = cot[c * F + f.column];
        T* MLIP_RESTRICT member = acc + c * M;
        MLIP_SIMD for (int k = 0; k < K; ++k) member[k] += w * deriv_k[k];
      }
    if (mode == kJvp) out[f.column] += sum;
  }
  if (mode == kVjp)
    for (int c = 0; c < NC; ++c) {
      const T* MLIP_RESTRICT member = acc + c * M;
      T* MLIP_RESTRICT gx = GX + c * M;
      T* MLIP_RESTRICT gy = GY + c * M;
      T* MLIP_RESTRICT gz = GZ + c * M;
      MLIP_SIMD for (int k = 0; k < K; ++k) {
        gx[k] += member[k] * UX[k]; gy[k] += member[k] * UY[k]; gz[k] += member[k] * UZ[k];
      }
    }
}

}  // namespace mlip::native
