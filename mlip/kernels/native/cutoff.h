// cutoff.h: the cutoff functions f_c(r) of n2p2 (types 0-8) and their derivatives.
#pragma once

#include <algorithm>
#include <cmath>
#include "common.h"
#include "vector_math.h"

namespace mlip::native {

// f_c and df_c/dr for n distances, cutoff type as numbered by n2p2 (0-8).
template <typename T>
inline __attribute__((always_inline)) void cutoff(int type, double alpha, double r_cut, const T* __restrict__ r,
                                                     T* __restrict__ f, T* __restrict__ df, int n) {
  const bool inner = !(type == 0 || type == 2 || type == 3);
  const T r_in = inner ? T(alpha * r_cut) : T(0);
  const T width = T(r_cut) - r_in;
  const T scale = T(1) / width;
  const T rc = T(r_cut);
  const T pi = T(M_PI);
  const T tanh_norm = T(1.0 / std::pow(std::tanh(1.0), 3));
  switch (type) {
    case 0:
      MLIP_SIMD for (int k = 0; k < n; ++k) { f[k] = r[k] < rc ? T(1) : T(0); df[k] = T(0); }
      return;
    case 1:
      MLIP_SIMD for (int k = 0; k < n; ++k) {
        T x = (r[k] - r_in) * scale;
        bool mid = x > T(0) && x < T(1);
        x = std::min(std::max(x, T(0)), T(1));
        T sine, cosine;
        vsincos(pi * (x - T(0.5)), sine, cosine);  // cos(pi x) = -sine, sin(pi x) = cosine
        T v = T(0.5) * (T(1) - sine);
        T d = mid ? T(-0.5) * pi * cosine * scale : T(0);
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc ? d : T(0);
      }
      return;
    case 2:
    case 3: {
      const T norm = type == 3 ? tanh_norm : T(1);
      MLIP_SIMD for (int k = 0; k < n; ++k) {
        T x = std::min(std::max(r[k] / rc, T(0)), T(1));
        T t = T(1) - T(2) / (vexp(T(2) * (T(1) - x)) + T(1));  // tanh(1 - x)
        T v = norm * t * t * t;
        T d = -norm * T(3) * t * t * (T(1) - t * t) / rc;
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc && r[k] > T(0) ? d : T(0);
      }
      return;
    }
    case 4:
      MLIP_SIMD for (int k = 0; k < n; ++k) {
        T x = (r[k] - r_in) * scale;
        bool mid = x > T(0) && x < T(1);
        x = std::min(std::max(x, T(0)), T(1) - T(1e-12));
        T q = T(1) - x * x;
        T v = vexp(T(1) - T(1) / q);
        T d = mid ? -v * T(2) * x / (q * q) * scale : T(0);
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc ? d : T(0);
      }
      return;
    default:
      MLIP_SIMD for (int k = 0; k < n; ++k) {
        T x = (r[k] - r_in) * scale;
        bool mid = x > T(0) && x < T(1);
        x = std::min(std::max(x, T(0)), T(1));
        T x2 = x * x, v, d;
        if (type == 5) {
          v = (T(2) * x - T(3)) * x2 + T(1);
          d = T(6) * x2 - T(6) * x;
        } else if (type == 6) {
          v = ((T(15) - T(6) * x) * x - T(10)) * x2 * x + T(1);
          d = ((T(-30) * x + T(60)) * x - T(30)) * x2;
        } else if (type == 7) {
          v = (x * (x * (T(20) * x - T(70)) + T(84)) - T(35)) * x2 * x2 + T(1);
          d = (x * (x * (T(140) * x - T(420)) + T(420)) - T(140)) * x2 * x;
        } else {
          v = (x * (x * ((T(315) - T(70) * x) * x - T(540)) + T(420)) - T(126)) * x2 * x2 * x + T(1);
          d = (x * (x * ((T(2520) - T(630) * x) * x - T(3780)) + T(2520)) - T(630)) * x2 * x2;
        }
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc && mid ? d * scale : T(0);
      }
      return;
  }
}

}  // namespace mlip::native
