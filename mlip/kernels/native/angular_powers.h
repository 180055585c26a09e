// angular_powers.h: the angular factor (1 + lambda cos)^zeta and its cos-derivative.
#pragma once

#include <algorithm>
#include <cmath>
#include "common.h"
#include "table.h"

namespace mlip::native {

// p = (1 + lambda cos)^zeta and dp = dp/dcos for n pairs
template <typename T, int Z>
inline void integer_powers(const T* MLIP_RESTRICT cs, T lambda, T* MLIP_RESTRICT p, T* MLIP_RESTRICT dp, int n) {
  MLIP_SIMD for (int k = 0; k < n; ++k) {
    T base = T(1) + lambda * cs[k];
    T lower = T(1);
    for (int e = 0; e < Z - 1; ++e) lower *= base;
    p[k] = lower * base;
    dp[k] = T(Z) * lambda * lower;
  }
}

template <typename T>
void shape_powers(const Shape& S, const T* MLIP_RESTRICT cs, T* MLIP_RESTRICT p, T* MLIP_RESTRICT dp, int n) {
  const T lambda = T(S.lambda), zeta = T(S.zeta);
  switch (S.integer_zeta) {
    case 1: return integer_powers<T, 1>(cs, lambda, p, dp, n);
    case 2: return integer_powers<T, 2>(cs, lambda, p, dp, n);
    case 3: return integer_powers<T, 3>(cs, lambda, p, dp, n);
    case 4: return integer_powers<T, 4>(cs, lambda, p, dp, n);
    case 5: return integer_powers<T, 5>(cs, lambda, p, dp, n);
    case 6: return integer_powers<T, 6>(cs, lambda, p, dp, n);
    case 8: return integer_powers<T, 8>(cs, lambda, p, dp, n);
    case 16: return integer_powers<T, 16>(cs, lambda, p, dp, n);
    default:
      for (int k = 0; k < n; ++k) {
        T base = std::max(T(1) + lambda * cs[k], T(0));
        T lower = S.integer_zeta > 0 ? T(std::pow(base, S.integer_zeta - 1)) : std::pow(base, zeta - T(1));
        p[k] = lower * base;
        dp[k] = zeta * lambda * lower;
      }
  }
}

}  // namespace mlip::native
