// vector_math.h: exp, sin and cos as polynomials, for vectorised loops.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace mlip::native {

// Branch-free exp, sin and cos the compiler vectorises (libm calls it does not):
// exp by range reduction x = n ln2 + r, |r| <= ln2/2, and a Taylor polynomial
// (degree 13 in double, 7 in float: below 1 ulp), 2^n put into the exponent
// bits; sin and cos of |t| <= pi/2 by Taylor polynomials (degree 21/20 in
// double, 11/10 in float).  Do not build with -ffast-math: the rounding trick
// (x + 1.5 2^52 - 1.5 2^52) needs IEEE arithmetic.

template <typename T>
struct FloatBits;
template <>
struct FloatBits<double> {
  using Int = int64_t;
  static constexpr int mantissa = 52, bias = 1023, exp_terms = 13, sin_terms = 10;
  static constexpr double limit = 700.0, shifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
};
template <>
struct FloatBits<float> {
  using Int = int32_t;
  static constexpr int mantissa = 23, bias = 127, exp_terms = 7, sin_terms = 5;
  static constexpr float limit = 86.0f, shifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
};

struct TaylorTable {  // 1/k! and (-1)^(k/2)/k! for k = 0 .. 23
  double plain[24], alternating[24];
  constexpr TaylorTable() : plain(), alternating() {
    double factorial = 1;
    for (int k = 0; k < 24; ++k) {
      if (k > 0) factorial *= k;
      plain[k] = 1 / factorial;
      alternating[k] = ((k / 2) % 2 ? -1 : 1) / factorial;
    }
  }
};
inline constexpr TaylorTable kTaylor;
inline constexpr const double* taylor = kTaylor.plain;
inline constexpr const double* signed_taylor = kTaylor.alternating;  // sin: odd k, cos: even k

template <typename T>
inline __attribute__((always_inline)) T vexp(T x) {
  using B = FloatBits<T>;
  using I = typename B::Int;
  x = std::min(std::max(x, -T(B::limit)), T(B::limit));
  T shifted = x * T(1.4426950408889634) + T(B::shifter);
  I bits;
  std::memcpy(&bits, &shifted, sizeof(T));
  T n = shifted - T(B::shifter);
  T r = (x - n * T(B::ln2_hi)) - n * T(B::ln2_lo);
  T p = T(taylor[B::exp_terms]);
  for (int k = B::exp_terms - 1; k >= 0; --k) p = p * r + T(taylor[k]);  // sum r^k / k!
  I exponent = (bits + I(B::bias)) << B::mantissa;  // the low bits of `bits` hold n
  T scale;
  std::memcpy(&scale, &exponent, sizeof(T));
  return p * scale;
}

// sin(t) and cos(t) for |t| <= pi/2
template <typename T>
inline __attribute__((always_inline)) void vsincos(T t, T& sine, T& cosine) {
  constexpr int terms = FloatBits<T>::sin_terms;
  T t2 = t * t, s = T(signed_taylor[2 * terms + 1]), c = T(signed_taylor[2 * terms]);
  for (int k = terms - 1; k >= 0; --k) {
    s = s * t2 + T(signed_taylor[2 * k + 1]);
    c = c * t2 + T(signed_taylor[2 * k]);
  }
  sine = s * t;
  cosine = c;
}

}  // namespace mlip::native
