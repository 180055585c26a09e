// Behler-Parrinello symmetry functions (n2p2 types 2, 3 and 9) with analytic
// derivatives, as XLA FFI custom calls for the CPU.
//
// Three handlers share one per-atom routine:
//   mlip_sf_values  G[n, F]            from r_ij [n, M, 3] and neighbour species [n, M]
//   mlip_sf_vjp     dL/dr_ij [n, M, 3] from the cotangent dL/dG [n, F]
//   mlip_sf_jvp     dG [n, F]          from the tangent dr_ij [n, M, 3]
// Neighbour slots with species < 0 are empty.  The function table (attribute
// "table") holds one row of kTableWidth numbers per output column:
//   kind (2, 3, 9), e1, e2 (element indices; e2 = -1 for type 2), eta (Å^-2),
//   r_shift (Å), r_cut (Å), lambda, zeta, coefficient (2^(1-zeta) for angular).
// Angular values sum each unordered neighbour pair {j, k} whose elements are
// {e1, e2} once (n2p2's sum over j != i, k > j); the Python side
// (mlip.kernels.native) checks every column against the JAX kernel.
//
// Per atom, the pair loop visits j < k; everything a pair needs (cos theta,
// r_jk, the cutoff and Gaussian of r_jk per radial group, the angular power per
// (lambda, zeta) shape) is computed once for all functions, in loops over k that
// the compiler vectorises.  Atoms are split into chunks run on XLA's intra-op
// thread pool, with the calling thread taking chunks too.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#define SIMD _Pragma("omp simd")
#define MLIP_PRAGMA(text) _Pragma(#text)
#define SIMD_SUM(...) MLIP_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#define RESTRICT __restrict__

namespace {

constexpr int kTableWidth = 9;
enum Mode { kValues, kVjp, kJvp };

// ------------------------------------------------------------------ math
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
constexpr TaylorTable kTaylor;
constexpr const double* taylor = kTaylor.plain;
constexpr const double* signed_taylor = kTaylor.alternating;  // sin: odd k, cos: even k

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

// ------------------------------------------------------------------ cutoffs

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
      SIMD for (int k = 0; k < n; ++k) { f[k] = r[k] < rc ? T(1) : T(0); df[k] = T(0); }
      return;
    case 1:
      SIMD for (int k = 0; k < n; ++k) {
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
      SIMD for (int k = 0; k < n; ++k) {
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
      SIMD for (int k = 0; k < n; ++k) {
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
      SIMD for (int k = 0; k < n; ++k) {
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

// ------------------------------------------------------------------ the function table

struct Radial {  // one type-2 column
  int column, element, cut;
  double eta, shift;
};

struct Angular {  // one type-3 or type-9 column
  int column, lo, hi, group, shape;
  double coefficient;
};

struct Group {  // a radial group (eta, r_shift, r_cut) of angular functions
  double eta, shift, r_cut;
  int cut;
  bool narrow;  // type 3 (with the r_jk factor); type 3 and 9 never share a group
};

struct Shape {  // (lambda, zeta)
  double lambda, zeta;
  int integer_zeta;  // zeta if integral and <= 64, else -1
};

struct Table {
  std::vector<double> cutoffs;
  std::vector<Radial> radial;
  std::vector<Angular> angular;
  std::vector<Group> groups;
  std::vector<Shape> shapes;
  double max_cut = 0, max_angular_cut = 0, max_narrow_cut = 0;
  bool has_wide = false, has_narrow = false;
  std::vector<char> narrow_cutoff, narrow_shape, wide_shape;  // used by some type-3 / type-9 function
  int n_columns = 0;
  bool one_element = false;  // every neighbour matches every function
  int n_elements = 1;
};

template <typename V>
int find_or_add(std::vector<V>& list, const V& value, bool (*same)(const V&, const V&)) {
  for (size_t n = 0; n < list.size(); ++n)
    if (same(list[n], value)) return static_cast<int>(n);
  list.push_back(value);
  return static_cast<int>(list.size() - 1);
}

Table parse_table(ffi::Span<const double> rows, int n_elements) {
  Table t;
  t.one_element = n_elements == 1;
  t.n_elements = n_elements;
  t.n_columns = static_cast<int>(rows.size() / kTableWidth);
  auto cut_index = [&](double r_cut) {
    for (size_t n = 0; n < t.cutoffs.size(); ++n)
      if (t.cutoffs[n] == r_cut) return static_cast<int>(n);
    t.cutoffs.push_back(r_cut);
    return static_cast<int>(t.cutoffs.size() - 1);
  };
  for (int c = 0; c < t.n_columns; ++c) {
    const double* row = rows.begin() + c * kTableWidth;
    int kind = static_cast<int>(row[0]), e1 = static_cast<int>(row[1]), e2 = static_cast<int>(row[2]);
    double eta = row[3], shift = row[4], r_cut = row[5], lambda = row[6], zeta = row[7];
    t.max_cut = std::max(t.max_cut, r_cut);
    if (kind == 2) {
      t.radial.push_back({c, e1, cut_index(r_cut), eta, shift});
      continue;
    }
    Group group{eta, shift, r_cut, cut_index(r_cut), kind == 3};
    int g = find_or_add<Group>(t.groups, group, [](const Group& a, const Group& b) {
      return a.eta == b.eta && a.shift == b.shift && a.r_cut == b.r_cut && a.narrow == b.narrow;
    });
    int integral = (zeta == std::floor(zeta) && zeta <= 64) ? static_cast<int>(zeta) : -1;
    int s = find_or_add<Shape>(t.shapes, Shape{lambda, zeta, integral}, [](const Shape& a, const Shape& b) {
      return a.lambda == b.lambda && a.zeta == b.zeta;
    });
    t.angular.push_back({c, std::min(e1, e2), std::max(e1, e2), g, s, row[8]});
    (kind == 3 ? t.has_narrow : t.has_wide) = true;
    t.max_angular_cut = std::max(t.max_angular_cut, r_cut);
    if (kind == 3) t.max_narrow_cut = std::max(t.max_narrow_cut, r_cut);
  }
  t.narrow_cutoff.assign(t.cutoffs.size(), 0);
  t.narrow_shape.assign(t.shapes.size(), 0);
  t.wide_shape.assign(t.shapes.size(), 0);
  for (const Angular& f : t.angular) {
    bool narrow = t.groups[f.group].narrow;
    if (narrow) t.narrow_cutoff[t.groups[f.group].cut] = 1;
    (narrow ? t.narrow_shape : t.wide_shape)[f.shape] = 1;
  }
  return t;
}

// ------------------------------------------------------------------ one atom

template <typename T>
struct Scratch {  // per-thread buffers, sized by the neighbour capacity
  int capacity = 0;
  std::vector<T> x, y, z, r, inv_r, ux, uy, uz;  // [k]: the real neighbours, compacted
  std::vector<int> species, slot;
  std::vector<T> fc, dfc;          // [cutoffs][k]
  std::vector<T> a, da;            // [groups][k]: exp(-eta (r - rs)^2) f_c(r) and its r-derivative
  std::vector<T> cos;              // [k] for the current j (type 9)
  std::vector<T> p, dp;            // [shapes][k]: (1 + lambda cos)^zeta and d/dcos (type 9)
  std::vector<T> q, dq;            // [groups][k]: cotangent- or tangent-weighted shape sums (type 9)
  std::vector<T> acc_rj, acc_rk, acc_c;  // [k]
  std::vector<T> gx, gy, gz;       // [k] gradient or tangent of the compacted neighbours
  std::vector<T> tang_r, tang_c;   // [k] (JVP)

  size_t n_cutoffs = 0, n_groups = 0, n_shapes = 0;

  // buffers for m neighbour slots and t's cutoffs, groups and shapes (this
  // thread's scratch serves every kernel, so any of them may have grown)
  void reserve(int m, const Table& t) {
    if (m <= capacity && t.cutoffs.size() <= n_cutoffs && t.groups.size() <= n_groups &&
        t.shapes.size() <= n_shapes)
      return;
    m = std::max(m, capacity);
    n_cutoffs = std::max(n_cutoffs, t.cutoffs.size());
    n_groups = std::max(n_groups, t.groups.size());
    n_shapes = std::max(n_shapes, t.shapes.size());
    capacity = m;
    for (auto* v : {&x, &y, &z, &r, &inv_r, &ux, &uy, &uz, &cos, &acc_rj, &acc_rk, &acc_c, &gx, &gy, &gz, &tang_r,
                    &tang_c})
      v->assign(m, T(0));
    species.assign(m, -1);
    slot.assign(m, 0);
    size_t nc = n_cutoffs, ng = n_groups, ns = n_shapes;
    fc.assign(nc * m, T(0)); dfc.assign(nc * m, T(0));
    a.assign(ng * m, T(0)); da.assign(ng * m, T(0));
    q.assign(ng * m, T(0)); dq.assign(ng * m, T(0));
    p.assign(ns * m, T(0)); dp.assign(ns * m, T(0));
  }
};

// p = (1 + lambda cos)^zeta and dp = dp/dcos for n pairs
template <typename T, int Z>
inline void integer_powers(const T* RESTRICT cs, T lambda, T* RESTRICT p, T* RESTRICT dp, int n) {
  SIMD for (int k = 0; k < n; ++k) {
    T base = T(1) + lambda * cs[k];
    T lower = T(1);
    for (int e = 0; e < Z - 1; ++e) lower *= base;
    p[k] = lower * base;
    dp[k] = T(Z) * lambda * lower;
  }
}

template <typename T>
void shape_powers(const Shape& S, const T* RESTRICT cs, T* RESTRICT p, T* RESTRICT dp, int n) {
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
  T *gxk, *gyk, *gzk;              // VJP: gradients of r_k, accumulated
};

template <typename T, Mode mode>
void pair_block(const Table& t, const PairBlock<T>& b, const T* cot, T* out, Scratch<T>& s) {
  const int n = b.n, j = b.j, M = s.capacity, stride = b.stride;
  const size_t NG = t.groups.size(), NS = t.shapes.size();
  const T* RESTRICT cs = b.cs;
  const int32_t* RESTRICT spk = b.spk;
  for (size_t l = 0; l < NS; ++l)
    if (t.wide_shape[l]) shape_powers<T>(t.shapes[l], cs, &s.p[l * M], &s.dp[l * M], n);

  // partner element of j for each function (-2: any, -1: none)
  const int ej = s.species[j];
  auto partner = [&](const Angular& f) {
    if (t.one_element) return -2;
    if (ej == f.lo) return f.hi;
    if (ej == f.hi) return f.lo;
    return -1;
  };
  auto in_block = [&](const Angular& f) { return !t.groups[f.group].narrow; };

  if (mode == kValues) {
    for (const Angular& f : t.angular) {
      if (!in_block(f)) continue;
      const int other = partner(f);
      if (other == -1) continue;
      const T* RESTRICT ak = b.a + f.group * stride;
      const T* RESTRICT p = &s.p[f.shape * M];
      T sum = T(0);
      if (other == -2) {
        SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += ak[k] * p[k];
      } else {
        SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += spk[k] == other ? ak[k] * p[k] : T(0);
      }
      out[f.column] += T(f.coefficient) * s.a[f.group * M + j] * sum;
    }
    return;
  }

  const T uxj = s.ux[j], uyj = s.uy[j], uzj = s.uz[j], inv_rj = s.inv_r[j];
  const T* RESTRICT uxk = b.uxk;
  const T* RESTRICT uyk = b.uyk;
  const T* RESTRICT uzk = b.uzk;
  const T* RESTRICT irk = b.irk;

  if (mode == kVjp) {
    // q_g = sum over the group's functions of coefficient * cotangent * P_l, dq_g with dP_l
    for (size_t g = 0; g < NG; ++g) {
      if (t.groups[g].narrow) continue;
      std::fill(&s.q[g * M], &s.q[g * M] + n, T(0));
      std::fill(&s.dq[g * M], &s.dq[g * M] + n, T(0));
    }
    for (const Angular& f : t.angular) {
      if (!in_block(f)) continue;
      const int other = partner(f);
      if (other == -1) continue;
      const T w = T(f.coefficient) * cot[f.column];
      const T* RESTRICT p = &s.p[f.shape * M];
      const T* RESTRICT dp = &s.dp[f.shape * M];
      T* RESTRICT q = &s.q[f.group * M];
      T* RESTRICT dq = &s.dq[f.group * M];
      if (other == -2) {
        SIMD for (int k = 0; k < n; ++k) { q[k] += w * p[k]; dq[k] += w * dp[k]; }
      } else {
        SIMD for (int k = 0; k < n; ++k) {
          T m = spk[k] == other ? w : T(0);
          q[k] += m * p[k];
          dq[k] += m * dp[k];
        }
      }
    }
    T* RESTRICT arj = s.acc_rj.data();
    T* RESTRICT ark = s.acc_rk.data();
    T* RESTRICT ac = s.acc_c.data();
    std::fill(arj, arj + n, T(0)); std::fill(ark, ark + n, T(0)); std::fill(ac, ac + n, T(0));
    for (size_t g = 0; g < NG; ++g) {
      if (t.groups[g].narrow) continue;
      const T aj = s.a[g * M + j], daj = s.da[g * M + j];
      const T* RESTRICT ak = b.a + g * stride;
      const T* RESTRICT dak = b.da + g * stride;
      const T* RESTRICT q = &s.q[g * M];
      const T* RESTRICT dq = &s.dq[g * M];
        SIMD for (int k = 0; k < n; ++k) {
        arj[k] += daj * ak[k] * q[k];
        ark[k] += aj * dak[k] * q[k];
        ac[k] += aj * ak[k] * dq[k];
      }
    }
    // d cos/d r_j = (u_k - cos u_j) / r_j, d cos/d r_k = (u_j - cos u_k) / r_k,
    // d r_jk/d r_k = w / r_jk = -d r_jk/d r_j
    T* RESTRICT gxk = b.gxk;
    T* RESTRICT gyk = b.gyk;
    T* RESTRICT gzk = b.gzk;
    T gjx = T(0), gjy = T(0), gjz = T(0);
    SIMD_SUM(gjx, gjy, gjz) for (int k = 0; k < n; ++k) {
      T c = cs[k];
      T cj = ac[k] * inv_rj, ck = ac[k] * irk[k];
      gjx += arj[k] * uxj + cj * (uxk[k] - c * uxj);
      gjy += arj[k] * uyj + cj * (uyk[k] - c * uyj);
      gjz += arj[k] * uzj + cj * (uzk[k] - c * uzj);
      gxk[k] += ark[k] * uxk[k] + ck * (uxj - c * uxk[k]);
      gyk[k] += ark[k] * uyk[k] + ck * (uyj - c * uyk[k]);
      gzk[k] += ark[k] * uzk[k] + ck * (uzj - c * uzk[k]);
    }
    s.gx[j] += gjx; s.gy[j] += gjy; s.gz[j] += gjz;
    return;
  }

  // JVP: tangent of cos along the input tangent
  const T tjx = s.gx[j], tjy = s.gy[j], tjz = s.gz[j];
  const T trj = s.tang_r[j];
  const T* RESTRICT txk = b.txk;
  const T* RESTRICT tyk = b.tyk;
  const T* RESTRICT tzk = b.tzk;
  const T* RESTRICT trk = b.trk;
  T* RESTRICT tc = s.tang_c.data();
  SIMD for (int k = 0; k < n; ++k) {
    T c = cs[k];
    tc[k] = ((uxk[k] - c * uxj) * tjx + (uyk[k] - c * uyj) * tjy + (uzk[k] - c * uzj) * tjz) * inv_rj +
            ((uxj - c * uxk[k]) * txk[k] + (uyj - c * uyk[k]) * tyk[k] + (uzj - c * uzk[k]) * tzk[k]) * irk[k];
  }
  // per group: value tangent b1 (through r_j, r_k) and angular weight b2 (through cos)
  for (size_t g = 0; g < NG; ++g) {
    if (t.groups[g].narrow) continue;
    const T aj = s.a[g * M + j], daj = s.da[g * M + j];
    const T* RESTRICT ak = b.a + g * stride;
    const T* RESTRICT dak = b.da + g * stride;
    T* RESTRICT b1 = &s.q[g * M];
    T* RESTRICT b2 = &s.dq[g * M];
    SIMD for (int k = 0; k < n; ++k) {
      b1[k] = daj * trj * ak[k] + aj * dak[k] * trk[k];
      b2[k] = aj * ak[k] * tc[k];
    }
  }
  for (const Angular& f : t.angular) {
    if (!in_block(f)) continue;
    const int other = partner(f);
    if (other == -1) continue;
    const T* RESTRICT p = &s.p[f.shape * M];
    const T* RESTRICT dp = &s.dp[f.shape * M];
    const T* RESTRICT b1 = &s.q[f.group * M];
    const T* RESTRICT b2 = &s.dq[f.group * M];
    T sum = T(0);
    if (other == -2) {
      SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += b1[k] * p[k] + b2[k] * dp[k];
    } else {
      SIMD_SUM(sum) for (int k = 0; k < n; ++k) sum += spk[k] == other ? b1[k] * p[k] + b2[k] * dp[k] : T(0);
    }
    out[f.column] += T(f.coefficient) * sum;
  }
}

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
  size_t groups = 0, shapes = 0, cutoffs = 0;
  enum Slot { kCos, kRjk, kWx, kWy, kWz, kUxj, kUyj, kUzj, kUxk, kUyk, kUzk, kIrj, kIrk, kArj, kArk, kArjk, kAc,
              kGjx, kGjy, kGjz, kGkx, kGky, kGkz, kTjx, kTjy, kTjz, kTkx, kTky, kTkz, kTrj, kTrk, kTc, kTrjk,
              kFixed };
  // per group: 9 arrays (GroupArray); per shape: p, dp; per cutoff: fc, dfc
  T* slot(int n) { return &buf[size_t(n) * kChunk]; }
  T* group(int which, size_t g) { return &buf[(kFixed + which * groups + g) * kChunk]; }
  T* shape(int which, size_t l) { return &buf[(kFixed + 9 * groups + which * shapes + l) * kChunk]; }
  T* cut(int which, size_t c) { return &buf[(kFixed + 9 * groups + 2 * shapes + which * cutoffs + c) * kChunk]; }

  void reserve(int m, const Table& t) {
    size_t pairs = size_t(m) * size_t(std::max(m - 1, 1)) / 2 + 1;
    if (pj.size() < pairs) { pj.assign(pairs, 0); pk.assign(pairs, 0); }
    if (t.groups.size() > groups || t.shapes.size() > shapes || t.cutoffs.size() > cutoffs || buf.empty()) {
      groups = std::max(groups, t.groups.size());
      shapes = std::max(shapes, t.shapes.size());
      cutoffs = std::max(cutoffs, t.cutoffs.size());
      buf.assign((kFixed + 9 * groups + 2 * shapes + 2 * cutoffs) * kChunk, T(0));
      channel.assign(kChunk, 0);
    }
  }
};

enum GroupArray { kAj, kAk, kDaj, kDak, kTjk, kDtjk, kQ, kDq, kX };

template <typename T, Mode mode>
void narrow_pairs(const Table& t, int K, int cutoff_type, double alpha, const T* cot, T* out,
                   Scratch<T>& s, PairScratch<T>& ps) {
  const int M = s.capacity;
  const T* RESTRICT X = s.x.data();
  const T* RESTRICT Y = s.y.data();
  const T* RESTRICT Z = s.z.data();
  const T* RESTRICT R = s.r.data();
  const T* RESTRICT IR = s.inv_r.data();
  const T* RESTRICT UX = s.ux.data();
  const T* RESTRICT UY = s.uy.data();
  const T* RESTRICT UZ = s.uz.data();
  const int32_t* RESTRICT SP = s.species.data();
  T* RESTRICT GX = s.gx.data();  // VJP: gradient; JVP: input tangent
  T* RESTRICT GY = s.gy.data();
  T* RESTRICT GZ = s.gz.data();
  const T* RESTRICT TR = s.tang_r.data();

  // the pair list, compacted without branches
  const T angular_cut = T(t.max_angular_cut);
  const T cut2 = T(t.max_narrow_cut * t.max_narrow_cut);
  int* RESTRICT pj = ps.pj.data();
  int* RESTRICT pk = ps.pk.data();
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
    const int* RESTRICT cj = pj + c0;
    const int* RESTRICT ck = pk + c0;
    T* RESTRICT cs = ps.slot(ps.kCos);
    T* RESTRICT rjk = ps.slot(ps.kRjk);
    T* RESTRICT wx = ps.slot(ps.kWx);
    T* RESTRICT wy = ps.slot(ps.kWy);
    T* RESTRICT wz = ps.slot(ps.kWz);
    T* RESTRICT uxj = ps.slot(ps.kUxj);
    T* RESTRICT uyj = ps.slot(ps.kUyj);
    T* RESTRICT uzj = ps.slot(ps.kUzj);
    T* RESTRICT uxk = ps.slot(ps.kUxk);
    T* RESTRICT uyk = ps.slot(ps.kUyk);
    T* RESTRICT uzk = ps.slot(ps.kUzk);
    T* RESTRICT irj = ps.slot(ps.kIrj);
    T* RESTRICT irk = ps.slot(ps.kIrk);
    int32_t* RESTRICT chan = ps.channel.data();
    SIMD for (int i = 0; i < n; ++i) {
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
      const T* RESTRICT a = &s.a[g * M];
      T* RESTRICT aj = ps.group(kAj, g);
      T* RESTRICT ak = ps.group(kAk, g);
      SIMD for (int i = 0; i < n; ++i) { aj[i] = a[cj[i]]; ak[i] = a[ck[i]]; }
      if (mode != kValues) {
        const T* RESTRICT da = &s.da[g * M];
        T* RESTRICT daj = ps.group(kDaj, g);
        T* RESTRICT dak = ps.group(kDak, g);
        SIMD for (int i = 0; i < n; ++i) { daj[i] = da[cj[i]]; dak[i] = da[ck[i]]; }
      }
    }
    for (size_t c = 0; c < t.cutoffs.size(); ++c)
      if (t.narrow_cutoff[c]) cutoff<T>(cutoff_type, alpha, t.cutoffs[c], rjk, ps.cut(0, c), ps.cut(1, c), n);
    for (size_t g = 0; g < NG; ++g) {
      const Group& G = t.groups[g];
      if (!G.narrow) continue;
      T* RESTRICT tj = ps.group(kTjk, g);
      T* RESTRICT dtj = ps.group(kDtjk, g);
      const T eta = T(G.eta), shift = T(G.shift);
      const T* RESTRICT fc = ps.cut(0, G.cut);
      const T* RESTRICT dfc = ps.cut(1, G.cut);
      SIMD for (int i = 0; i < n; ++i) {  // the r_jk factor: Gaussian times cutoff
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
        const T* RESTRICT aj = ps.group(kAj, g);
        const T* RESTRICT ak = ps.group(kAk, g);
        const T* RESTRICT tj = ps.group(kTjk, g);
        T* RESTRICT x = ps.group(kX, g);
        SIMD for (int i = 0; i < n; ++i) x[i] = aj[i] * ak[i] * tj[i];
      }
      for (const Angular& f : t.angular) {
        if (!in_block(f)) continue;
        const T* RESTRICT x = ps.group(kX, f.group);
        const T* RESTRICT p = ps.shape(0, f.shape);
        T sum = T(0);
        if (t.one_element) {
          SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += x[i] * p[i];
        } else {
          const int32_t want = f.lo * E + f.hi;
          SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += chan[i] == want ? x[i] * p[i] : T(0);
        }
        out[f.column] += T(f.coefficient) * sum;
      }
      continue;
    }

    if (mode == kVjp) {
      // q_g = sum over the group's functions of coefficient * cotangent * P_l, dq_g with dP_l
      for (size_t g = 0; g < NG; ++g) {
        if (!t.groups[g].narrow) continue;
        std::fill(ps.group(kQ, g), ps.group(kQ, g) + n, T(0));
        std::fill(ps.group(kDq, g), ps.group(kDq, g) + n, T(0));
      }
      for (const Angular& f : t.angular) {
        if (!in_block(f)) continue;
        const T w = T(f.coefficient) * cot[f.column];
        const T* RESTRICT p = ps.shape(0, f.shape);
        const T* RESTRICT dp = ps.shape(1, f.shape);
        T* RESTRICT q = ps.group(kQ, f.group);
        T* RESTRICT dq = ps.group(kDq, f.group);
        if (t.one_element) {
          SIMD for (int i = 0; i < n; ++i) { q[i] += w * p[i]; dq[i] += w * dp[i]; }
        } else {
          const int32_t want = f.lo * E + f.hi;
          SIMD for (int i = 0; i < n; ++i) {
            T m = chan[i] == want ? w : T(0);
            q[i] += m * p[i];
            dq[i] += m * dp[i];
          }
        }
      }
      T* RESTRICT arj = ps.slot(ps.kArj);
      T* RESTRICT ark = ps.slot(ps.kArk);
      T* RESTRICT arjk = ps.slot(ps.kArjk);
      T* RESTRICT ac = ps.slot(ps.kAc);
      std::fill(arj, arj + n, T(0)); std::fill(ark, ark + n, T(0));
      std::fill(arjk, arjk + n, T(0)); std::fill(ac, ac + n, T(0));
      for (size_t g = 0; g < NG; ++g) {
        if (!t.groups[g].narrow) continue;
        const T* RESTRICT aj = ps.group(kAj, g);
        const T* RESTRICT ak = ps.group(kAk, g);
        const T* RESTRICT daj = ps.group(kDaj, g);
        const T* RESTRICT dak = ps.group(kDak, g);
        const T* RESTRICT q = ps.group(kQ, g);
        const T* RESTRICT dq = ps.group(kDq, g);
        const T* RESTRICT tj = ps.group(kTjk, g);
        const T* RESTRICT dtj = ps.group(kDtjk, g);
        SIMD for (int i = 0; i < n; ++i) {
          T tq = tj[i] * q[i];
          arj[i] += daj[i] * ak[i] * tq;
          ark[i] += aj[i] * dak[i] * tq;
          arjk[i] += aj[i] * ak[i] * dtj[i] * q[i];
          ac[i] += aj[i] * ak[i] * tj[i] * dq[i];
        }
      }
      // d cos/d r_j = (u_k - cos u_j) / r_j, d cos/d r_k = (u_j - cos u_k) / r_k,
      // d r_jk/d r_k = w / r_jk = -d r_jk/d r_j
      T* RESTRICT gjx = ps.slot(ps.kGjx);
      T* RESTRICT gjy = ps.slot(ps.kGjy);
      T* RESTRICT gjz = ps.slot(ps.kGjz);
      T* RESTRICT gkx = ps.slot(ps.kGkx);
      T* RESTRICT gky = ps.slot(ps.kGky);
      T* RESTRICT gkz = ps.slot(ps.kGkz);
      SIMD for (int i = 0; i < n; ++i) {
        T c = cs[i];
        T along = arjk[i] / rjk[i];
        T cj2 = ac[i] * irj[i], ck2 = ac[i] * irk[i];
        gjx[i] = arj[i] * uxj[i] + cj2 * (uxk[i] - c * uxj[i]) - along * wx[i];
        gjy[i] = arj[i] * uyj[i] + cj2 * (uyk[i] - c * uyj[i]) - along * wy[i];
        gjz[i] = arj[i] * uzj[i] + cj2 * (uzk[i] - c * uzj[i]) - along * wz[i];
        gkx[i] = ark[i] * uxk[i] + ck2 * (uxj[i] - c * uxk[i]) + along * wx[i];
        gky[i] = ark[i] * uyk[i] + ck2 * (uyj[i] - c * uyk[i]) + along * wy[i];
        gkz[i] = ark[i] * uzk[i] + ck2 * (uzj[i] - c * uzk[i]) + along * wz[i];
      }
      for (int i = 0; i < n; ++i) {  // pairs share atoms, so this accumulation is not vectorised
        const int j = cj[i], k = ck[i];
        GX[j] += gjx[i]; GY[j] += gjy[i]; GZ[j] += gjz[i];
        GX[k] += gkx[i]; GY[k] += gky[i]; GZ[k] += gkz[i];
      }
      continue;
    }

    // JVP: tangents of cos and r_jk along the input tangent
    T* RESTRICT tjx = ps.slot(ps.kTjx);
    T* RESTRICT tjy = ps.slot(ps.kTjy);
    T* RESTRICT tjz = ps.slot(ps.kTjz);
    T* RESTRICT tkx = ps.slot(ps.kTkx);
    T* RESTRICT tky = ps.slot(ps.kTky);
    T* RESTRICT tkz = ps.slot(ps.kTkz);
    T* RESTRICT trj = ps.slot(ps.kTrj);
    T* RESTRICT trk = ps.slot(ps.kTrk);
    T* RESTRICT tc = ps.slot(ps.kTc);
    T* RESTRICT trjk = ps.slot(ps.kTrjk);
    SIMD for (int i = 0; i < n; ++i) {
      const int j = cj[i], k = ck[i];
      tjx[i] = GX[j]; tjy[i] = GY[j]; tjz[i] = GZ[j]; tkx[i] = GX[k]; tky[i] = GY[k]; tkz[i] = GZ[k];
      trj[i] = TR[j]; trk[i] = TR[k];
    }
    SIMD for (int i = 0; i < n; ++i) {
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
      const T* RESTRICT aj = ps.group(kAj, g);
      const T* RESTRICT ak = ps.group(kAk, g);
      const T* RESTRICT daj = ps.group(kDaj, g);
      const T* RESTRICT dak = ps.group(kDak, g);
      T* RESTRICT b1 = ps.group(kQ, g);
      T* RESTRICT b2 = ps.group(kDq, g);
      const T* RESTRICT tj = ps.group(kTjk, g);
      const T* RESTRICT dtj = ps.group(kDtjk, g);
      SIMD for (int i = 0; i < n; ++i) {
        b1[i] = (daj[i] * trj[i] * ak[i] + aj[i] * dak[i] * trk[i]) * tj[i] + aj[i] * ak[i] * dtj[i] * trjk[i];
        b2[i] = aj[i] * ak[i] * tj[i] * tc[i];
      }
    }
    for (const Angular& f : t.angular) {
      if (!in_block(f)) continue;
      const T* RESTRICT p = ps.shape(0, f.shape);
      const T* RESTRICT dp = ps.shape(1, f.shape);
      const T* RESTRICT b1 = ps.group(kQ, f.group);
      const T* RESTRICT b2 = ps.group(kDq, f.group);
      T sum = T(0);
      if (t.one_element) {
        SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += b1[i] * p[i] + b2[i] * dp[i];
      } else {
        const int32_t want = f.lo * E + f.hi;
        SIMD_SUM(sum) for (int i = 0; i < n; ++i) sum += chan[i] == want ? b1[i] * p[i] + b2[i] * dp[i] : T(0);
      }
      out[f.column] += T(f.coefficient) * sum;
    }
  }
}

// mode kValues: out[F] = G; kVjp: grad[M*3] = sum_f cot[f] dG_f/dr_ij; kJvp: out[F] = sum dG/dr . tan.
template <typename T, Mode mode>
void atom(const Table& t, int cutoff_type, double alpha, int n_slots, const T* rij, const int32_t* species,
          const T* cot, const T* tan, T* out, T* grad, Scratch<T>& s) {
  s.reserve(n_slots, t);
  const int F = t.n_columns;
  if (mode != kVjp) std::fill(out, out + F, T(0));
  if (mode == kVjp) std::fill(grad, grad + 3 * n_slots, T(0));

  T* RESTRICT X = s.x.data();
  T* RESTRICT Y = s.y.data();
  T* RESTRICT Z = s.z.data();
  T* RESTRICT R = s.r.data();
  T* RESTRICT IR = s.inv_r.data();
  T* RESTRICT UX = s.ux.data();
  T* RESTRICT UY = s.uy.data();
  T* RESTRICT UZ = s.uz.data();
  T* RESTRICT GX = s.gx.data();  // VJP: gradient; JVP: input tangent
  T* RESTRICT GY = s.gy.data();
  T* RESTRICT GZ = s.gz.data();
  T* RESTRICT TR = s.tang_r.data();
  int32_t* RESTRICT SP = s.species.data();

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
  SIMD for (int k = 0; k < K; ++k) {
    R[k] = std::sqrt(X[k] * X[k] + Y[k] * Y[k] + Z[k] * Z[k]);
    IR[k] = T(1) / R[k];
    UX[k] = X[k] * IR[k]; UY[k] = Y[k] * IR[k]; UZ[k] = Z[k] * IR[k];
  }
  const int M = s.capacity;
  for (size_t c = 0; c < t.cutoffs.size(); ++c)
    cutoff<T>(cutoff_type, alpha, t.cutoffs[c], R, &s.fc[c * M], &s.dfc[c * M], K);
  if (mode == kJvp)  // tangent of r_k: u_k . tan_k
    SIMD for (int k = 0; k < K; ++k) TR[k] = UX[k] * GX[k] + UY[k] * GY[k] + UZ[k] * GZ[k];

  // ---------------------------------------------------------------- type 2
  {
    T* RESTRICT acc = s.acc_rk.data();  // VJP: dL/dr_k of the radial functions
    if (mode == kVjp) std::fill(acc, acc + K, T(0));
    for (const Radial& f : t.radial) {
      const T eta = T(f.eta), shift = T(f.shift);
      const T* RESTRICT fc = &s.fc[f.cut * M];
      const T* RESTRICT dfc = &s.dfc[f.cut * M];
      const int element = t.one_element ? -2 : f.element;
      T sum = T(0);
      if (mode == kValues) {
        SIMD_SUM(sum) for (int k = 0; k < K; ++k) {
          T d = R[k] - shift;
          T v = vexp(-eta * d * d) * fc[k];
          sum += (element == -2 || SP[k] == element) ? v : T(0);
        }
        out[f.column] += sum;
        continue;
      }
      const T weight = mode == kVjp ? cot[f.column] : T(1);
      SIMD_SUM(sum) for (int k = 0; k < K; ++k) {
        T d = R[k] - shift;
        T deriv = vexp(-eta * d * d) * (dfc[k] - T(2) * eta * d * fc[k]);
        deriv = (element == -2 || SP[k] == element) ? deriv : T(0);
        if (mode == kVjp) acc[k] += weight * deriv;
        else sum += deriv * TR[k];
      }
      if (mode == kJvp) out[f.column] += sum;
    }
    if (mode == kVjp)
      SIMD for (int k = 0; k < K; ++k) {
        GX[k] += acc[k] * UX[k]; GY[k] += acc[k] * UY[k]; GZ[k] += acc[k] * UZ[k];
      }
  }
  if (t.angular.empty()) goto scatter;

  // ---------------------------------------------------------------- angular
  {
    const size_t NG = t.groups.size();
    // pair factors a_g(r) = exp(-eta (r - rs)^2) f_c(r) and their r-derivatives
    for (size_t g = 0; g < NG; ++g) {
      const Group& G = t.groups[g];
      const T eta = T(G.eta), shift = T(G.shift);
      const T* RESTRICT fc = &s.fc[G.cut * M];
      const T* RESTRICT dfc = &s.dfc[G.cut * M];
      T* RESTRICT a = &s.a[g * M];
      T* RESTRICT da = &s.da[g * M];
      SIMD for (int k = 0; k < K; ++k) {
        T d = R[k] - shift;
        T e = vexp(-eta * d * d);
        a[k] = e * fc[k];
        da[k] = e * (dfc[k] - T(2) * eta * d * fc[k]);
      }
    }
    const T angular_cut = T(t.max_angular_cut);
    T* RESTRICT cs = s.cos.data();  // per pair (j, k0 + k), k = 0 .. n-1

    for (int j = 0; t.has_wide && j < K - 1; ++j) {  // type 9: the pairs of one j at a time
      if (!(R[j] < angular_cut)) continue;
      const int k0 = j + 1, n = K - k0;
      const T uxj = UX[j], uyj = UY[j], uzj = UZ[j];
      const T* RESTRICT uxk = UX + k0;
      const T* RESTRICT uyk = UY + k0;
      const T* RESTRICT uzk = UZ + k0;
      SIMD for (int k = 0; k < n; ++k) cs[k] = uxj * uxk[k] + uyj * uyk[k] + uzj * uzk[k];
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
    thread_local PairScratch<T> pairs;  // type 3: a flat list of the pairs with r_jk < r_c
    pairs.reserve(M, t);
    if (t.has_narrow) narrow_pairs<T, mode>(t, K, cutoff_type, alpha, cot, out, s, pairs);
  }
scatter:
  if (mode == kVjp)
    for (int k = 0; k < K; ++k) {
      const int m = s.slot[k];
      grad[3 * m] = GX[k]; grad[3 * m + 1] = GY[k]; grad[3 * m + 2] = GZ[k];
    }
}

// ------------------------------------------------------------------ threading

// Runs body(begin, end) over [0, n) in chunks on XLA's thread pool; the calling
// thread takes chunks too, so this finishes even when no pool thread is free.
void parallel_for(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t, int64_t)>& body) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (threads == 1 || n < 64) {
    body(0, n);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t chunks = 0, size = 0, n = 0;
    const std::function<void(int64_t, int64_t)>* body = nullptr;
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto state = std::make_shared<State>();
  state->n = n;
  state->chunks = std::min<int64_t>(n, 4 * (threads + 1));
  state->size = (n + state->chunks - 1) / state->chunks;
  state->chunks = (n + state->size - 1) / state->size;
  state->body = &body;
  auto work = [](State& st) {
    for (;;) {
      int64_t c = st.next.fetch_add(1);
      if (c >= st.chunks) return;
      (*st.body)(c * st.size, std::min(st.n, (c + 1) * st.size));
      if (st.done.fetch_add(1) + 1 == st.chunks) {
        std::lock_guard<std::mutex> lock(st.mutex);
        st.finished.notify_all();
      }
    }
  };
  for (int64_t w = 0; w < threads; ++w) pool.Schedule([state, work] { work(*state); });
  work(*state);
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done.load() == state->chunks; });
}

template <typename T, Mode mode>
ffi::Error run(ffi::ThreadPool pool, const Table& t, int cutoff_type, double alpha, ffi::AnyBuffer rij,
               ffi::AnyBuffer species, const T* cot, const T* tan, T* out, T* grad) {
  auto dims = rij.dimensions();
  if (dims.size() != 3 || dims[2] != 3) return ffi::Error::InvalidArgument("r_ij must have shape [n, M, 3]");
  const int64_t n = dims[0];
  const int slots = static_cast<int>(dims[1]);
  const T* r = rij.typed_data<T>();
  const int32_t* sp = species.typed_data<int32_t>();
  const int F = t.n_columns;
  parallel_for(pool, n, [&](int64_t begin, int64_t end) {
    thread_local Scratch<T> scratch;
    for (int64_t i = begin; i < end; ++i) {
      atom<T, mode>(t, cutoff_type, alpha, slots, r + i * slots * 3, sp + i * slots,
                    cot ? cot + i * F : nullptr, tan ? tan + i * slots * 3 : nullptr,
                    out ? out + i * F : nullptr, grad ? grad + i * slots * 3 : nullptr, scratch);
    }
  });
  return ffi::Error::Success();
}

template <Mode mode>
ffi::Error dispatch(ffi::ThreadPool pool, ffi::AnyBuffer rij, ffi::AnyBuffer species, ffi::AnyBuffer extra,
                    ffi::Result<ffi::AnyBuffer> result, ffi::Span<const double> table, int64_t cutoff_type,
                    double alpha, int64_t n_elements) {
  if (species.element_type() != ffi::DataType::S32) return ffi::Error::InvalidArgument("species must be int32");
  Table t = parse_table(table, static_cast<int>(n_elements));
  const int type = static_cast<int>(cutoff_type);
  if (rij.element_type() == ffi::DataType::F64) {
    const double* e = extra.typed_data<double>();
    double* o = result->typed_data<double>();
    return run<double, mode>(pool, t, type, alpha, rij, species, mode == kVjp ? e : nullptr,
                             mode == kJvp ? e : nullptr, mode == kVjp ? nullptr : o, mode == kVjp ? o : nullptr);
  }
  if (rij.element_type() == ffi::DataType::F32) {
    const float* e = extra.typed_data<float>();
    float* o = result->typed_data<float>();
    return run<float, mode>(pool, t, type, alpha, rij, species, mode == kVjp ? e : nullptr,
                            mode == kJvp ? e : nullptr, mode == kVjp ? nullptr : o, mode == kVjp ? o : nullptr);
  }
  return ffi::Error::InvalidArgument("r_ij must be float32 or float64");
}

ffi::Error values(ffi::ThreadPool pool, ffi::AnyBuffer rij, ffi::AnyBuffer species,
                  ffi::Result<ffi::AnyBuffer> result, ffi::Span<const double> table, int64_t cutoff_type,
                  double alpha, int64_t n_elements) {
  return dispatch<kValues>(pool, rij, species, rij, result, table, cutoff_type, alpha, n_elements);
}

}  // namespace

namespace {
// the arguments every handler takes: the thread pool, r_ij and the neighbour species
auto inputs() { return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>(); }

// ... then the result and the function-table attributes
template <typename Binding>
auto with_table(Binding binding) {
  return std::move(binding)
      .template Ret<ffi::AnyBuffer>()
      .template Attr<ffi::Span<const double>>("table")
      .template Attr<int64_t>("cutoff_type")
      .template Attr<double>("alpha")
      .template Attr<int64_t>("n_elements");
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MlipSfValues, values, with_table(inputs()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(MlipSfVjp, dispatch<kVjp>, with_table(inputs().Arg<ffi::AnyBuffer>()));  // + cotangent
XLA_FFI_DEFINE_HANDLER_SYMBOL(MlipSfJvp, dispatch<kJvp>, with_table(inputs().Arg<ffi::AnyBuffer>()));  // + tangent
