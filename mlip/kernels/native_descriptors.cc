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
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kTableWidth = 9;
enum Mode { kValues, kVjp, kJvp };

// ------------------------------------------------------------------ cutoffs

// f_c and df_c/dr for n distances, cutoff type as numbered by n2p2 (0-8).
template <typename T>
void cutoff(int type, double alpha, double r_cut, const T* r, T* f, T* df, int n) {
  const bool inner = !(type == 0 || type == 2 || type == 3);
  const T r_in = inner ? T(alpha * r_cut) : T(0);
  const T width = T(r_cut) - r_in;
  const T scale = T(1) / width;
  const T rc = T(r_cut);
  const T pi = T(M_PI);
  const T tanh_norm = T(1.0 / std::pow(std::tanh(1.0), 3));
  switch (type) {
    case 0:
      for (int k = 0; k < n; ++k) { f[k] = r[k] < rc ? T(1) : T(0); df[k] = T(0); }
      return;
    case 1:
      for (int k = 0; k < n; ++k) {
        T x = (r[k] - r_in) * scale;
        bool mid = x > T(0) && x < T(1);
        x = std::min(std::max(x, T(0)), T(1));
        T v = T(0.5) * (std::cos(pi * x) + T(1));
        T d = mid ? T(-0.5) * pi * std::sin(pi * x) * scale : T(0);
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc ? d : T(0);
      }
      return;
    case 2:
    case 3: {
      const T norm = type == 3 ? tanh_norm : T(1);
      for (int k = 0; k < n; ++k) {
        T x = std::min(std::max(r[k] / rc, T(0)), T(1));
        T t = std::tanh(T(1) - x);
        T v = norm * t * t * t;
        T d = -norm * T(3) * t * t * (T(1) - t * t) / rc;
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc && r[k] > T(0) ? d : T(0);
      }
      return;
    }
    case 4:
      for (int k = 0; k < n; ++k) {
        T x = (r[k] - r_in) * scale;
        bool mid = x > T(0) && x < T(1);
        x = std::min(std::max(x, T(0)), T(1) - T(1e-12));
        T q = T(1) - x * x;
        T v = std::exp(T(1) - T(1) / q);
        T d = mid ? -v * T(2) * x / (q * q) * scale : T(0);
        f[k] = r[k] < rc ? v : T(0);
        df[k] = r[k] < rc ? d : T(0);
      }
      return;
    default:
      for (int k = 0; k < n; ++k) {
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
  int n_columns = 0;
  bool one_element = false;  // every neighbour matches every function
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
    t.max_angular_cut = std::max(t.max_angular_cut, r_cut);
    if (kind == 3) t.max_narrow_cut = std::max(t.max_narrow_cut, r_cut);
  }
  return t;
}

// ------------------------------------------------------------------ one atom

template <typename T>
struct Scratch {  // per-thread buffers, sized by the neighbour capacity
  int capacity = 0;
  std::vector<T> x, y, z, r, inv_r, ux, uy, uz;
  std::vector<int> species, slot;
  std::vector<T> fc, dfc;          // [cutoffs][k]
  std::vector<T> a, da;            // [groups][k]: exp(-eta (r - rs)^2) f_c(r) and its r-derivative
  std::vector<T> cos, rjk, wx, wy, wz, inside;  // [k] for the current j
  std::vector<T> fcjk, dfcjk;      // [cutoffs][k]
  std::vector<T> tjk, dtjk;        // [groups][k]: r_jk Gaussian x cutoff (1 for wide groups)
  std::vector<T> p, dp;            // [shapes][k]: (1 + lambda cos)^zeta and d/dcos
  std::vector<T> q, dq;            // [groups][k]: cotangent- or value-weighted shape sums
  std::vector<T> acc_rj, acc_rk, acc_rjk, acc_c;  // [k]
  std::vector<T> gx, gy, gz;       // [k] gradient or tangent of the compacted neighbours
  std::vector<T> tang_r, tang_c, tang_rjk;  // [k] (JVP)

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
    for (auto* v : {&x, &y, &z, &r, &inv_r, &ux, &uy, &uz, &cos, &rjk, &wx, &wy, &wz, &inside, &acc_rj,
                    &acc_rk, &acc_rjk, &acc_c, &gx, &gy, &gz, &tang_r, &tang_c, &tang_rjk})
      v->assign(m, T(0));
    species.assign(m, -1);
    slot.assign(m, 0);
    size_t nc = n_cutoffs, ng = n_groups, ns = n_shapes;
    fc.assign(nc * m, T(0)); dfc.assign(nc * m, T(0)); fcjk.assign(nc * m, T(0)); dfcjk.assign(nc * m, T(0));
    a.assign(ng * m, T(0)); da.assign(ng * m, T(0)); tjk.assign(ng * m, T(0)); dtjk.assign(ng * m, T(0));
    q.assign(ng * m, T(0)); dq.assign(ng * m, T(0));
    p.assign(ns * m, T(0)); dp.assign(ns * m, T(0));
  }
};

template <typename T>
inline T int_power(T base, int n) {
  T result = T(1);
  for (int e = 0; e < n; ++e) result *= base;
  return result;
}

// mode kValues: out[F] = G; kVjp: grad[M*3] = sum_f cot[f] dG_f/dr_ij; kJvp: out[F] = sum dG/dr . tan.
template <typename T, Mode mode>
void atom(const Table& t, int cutoff_type, double alpha, int n_slots, const T* rij, const int32_t* species,
          const T* cot, const T* tan, T* out, T* grad, Scratch<T>& s) {
  s.reserve(n_slots, t);
  const int F = t.n_columns;
  if (mode != kVjp) std::fill(out, out + F, T(0));
  if (mode == kVjp) std::fill(grad, grad + 3 * n_slots, T(0));

  // compact the real neighbours inside the largest cutoff
  const T max_cut2 = T(t.max_cut * t.max_cut);
  int K = 0;
  for (int m = 0; m < n_slots; ++m) {
    if (species[m] < 0) continue;
    T x = rij[3 * m], y = rij[3 * m + 1], z = rij[3 * m + 2];
    T r2 = x * x + y * y + z * z;
    if (!(r2 < max_cut2) || r2 == T(0)) continue;
    s.x[K] = x; s.y[K] = y; s.z[K] = z; s.species[K] = species[m]; s.slot[K] = m;
    if (mode == kJvp) {
      s.gx[K] = tan[3 * m]; s.gy[K] = tan[3 * m + 1]; s.gz[K] = tan[3 * m + 2];
    } else {
      s.gx[K] = s.gy[K] = s.gz[K] = T(0);
    }
    ++K;
  }
  if (K == 0) return;
  for (int k = 0; k < K; ++k) {
    s.r[k] = std::sqrt(s.x[k] * s.x[k] + s.y[k] * s.y[k] + s.z[k] * s.z[k]);
    s.inv_r[k] = T(1) / s.r[k];
    s.ux[k] = s.x[k] * s.inv_r[k]; s.uy[k] = s.y[k] * s.inv_r[k]; s.uz[k] = s.z[k] * s.inv_r[k];
  }
  const int M = s.capacity;
  for (size_t c = 0; c < t.cutoffs.size(); ++c)
    cutoff<T>(cutoff_type, alpha, t.cutoffs[c], s.r.data(), &s.fc[c * M], &s.dfc[c * M], K);
  // radial tangent along r: dr_k = u_k . tan_k (JVP)
  if (mode == kJvp)
    for (int k = 0; k < K; ++k) s.tang_r[k] = s.ux[k] * s.gx[k] + s.uy[k] * s.gy[k] + s.uz[k] * s.gz[k];
  // the radial gradient along u_k accumulates in acc_rk before the pair loop
  std::fill(s.acc_rk.begin(), s.acc_rk.begin() + K, T(0));

  // ---------------------------------------------------------------- type 2
  for (const Radial& f : t.radial) {
    const T eta = T(f.eta), shift = T(f.shift);
    const T* fc = &s.fc[f.cut * M];
    const T* dfc = &s.dfc[f.cut * M];
    const bool all = t.one_element;
    T sum = T(0);
    const T weight = mode == kVjp ? cot[f.column] : T(1);
    for (int k = 0; k < K; ++k) {
      T match = (all || s.species[k] == f.element) ? T(1) : T(0);
      T d = s.r[k] - shift;
      T g = std::exp(-eta * d * d);
      if (mode == kValues) {
        sum += match * g * fc[k];
      } else {
        T deriv = match * g * (dfc[k] - T(2) * eta * d * fc[k]);
        if (mode == kVjp) s.acc_rk[k] += weight * deriv;
        else sum += deriv * s.tang_r[k];
      }
    }
    if (mode != kVjp) out[f.column] += sum;
  }
  if (mode == kVjp)
    for (int k = 0; k < K; ++k) {
      s.gx[k] += s.acc_rk[k] * s.ux[k]; s.gy[k] += s.acc_rk[k] * s.uy[k]; s.gz[k] += s.acc_rk[k] * s.uz[k];
    }

  // ---------------------------------------------------------------- angular
  if (!t.angular.empty()) {
    const size_t NG = t.groups.size(), NS = t.shapes.size();
    // pair factors a_g(r) = exp(-eta (r - rs)^2) f_c(r)
    for (size_t g = 0; g < NG; ++g) {
      const Group& G = t.groups[g];
      const T eta = T(G.eta), shift = T(G.shift);
      const T* fc = &s.fc[G.cut * M];
      const T* dfc = &s.dfc[G.cut * M];
      T* a = &s.a[g * M];
      T* da = &s.da[g * M];
      for (int k = 0; k < K; ++k) {
        T d = s.r[k] - shift;
        T e = std::exp(-eta * d * d);
        a[k] = e * fc[k];
        da[k] = e * (dfc[k] - T(2) * eta * d * fc[k]);
      }
    }
    const bool any_narrow = t.max_narrow_cut > 0;
    const T angular_cut = T(t.max_angular_cut);

    for (int j = 0; j < K - 1; ++j) {
      if (!(s.r[j] < angular_cut)) continue;
      const int k0 = j + 1, n = K - k0;
      const T xj = s.x[j], yj = s.y[j], zj = s.z[j];
      const T uxj = s.ux[j], uyj = s.uy[j], uzj = s.uz[j];
      T* cs = &s.cos[k0];
      T* rjk = &s.rjk[k0];
      T* wx = &s.wx[k0];
      T* wy = &s.wy[k0];
      T* wz = &s.wz[k0];
      for (int k = 0; k < n; ++k) {
        T dx = s.x[k0 + k] - xj, dy = s.y[k0 + k] - yj, dz = s.z[k0 + k] - zj;
        wx[k] = dx; wy[k] = dy; wz[k] = dz;
        cs[k] = uxj * s.ux[k0 + k] + uyj * s.uy[k0 + k] + uzj * s.uz[k0 + k];
        T r2 = dx * dx + dy * dy + dz * dz;
        rjk[k] = std::sqrt(std::max(r2, T(1e-30)));
      }
      if (any_narrow)
        for (size_t c = 0; c < t.cutoffs.size(); ++c)
          cutoff<T>(cutoff_type, alpha, t.cutoffs[c], rjk, &s.fcjk[c * M + k0], &s.dfcjk[c * M + k0], n);
      for (size_t g = 0; g < NG; ++g) {
        const Group& G = t.groups[g];
        T* tj = &s.tjk[g * M + k0];
        T* dtj = &s.dtjk[g * M + k0];
        if (!G.narrow) continue;
        const T eta = T(G.eta), shift = T(G.shift);
        const T* fc = &s.fcjk[G.cut * M + k0];
        const T* dfc = &s.dfcjk[G.cut * M + k0];
        for (int k = 0; k < n; ++k) {
          T d = rjk[k] - shift;
          T e = std::exp(-eta * d * d);
          tj[k] = e * fc[k];
          dtj[k] = e * (dfc[k] - T(2) * eta * d * fc[k]);
        }
      }
      for (size_t l = 0; l < NS; ++l) {
        const Shape& S = t.shapes[l];
        const T lambda = T(S.lambda), zeta = T(S.zeta);
        T* p = &s.p[l * M + k0];
        T* dp = &s.dp[l * M + k0];
        if (S.integer_zeta >= 1) {
          const int z = S.integer_zeta;
          for (int k = 0; k < n; ++k) {
            T base = T(1) + lambda * cs[k];
            T lower = int_power(base, z - 1);
            p[k] = lower * base;
            dp[k] = T(z) * lambda * lower;
          }
        } else {
          for (int k = 0; k < n; ++k) {
            T base = std::max(T(1) + lambda * cs[k], T(0));
            T lower = std::pow(base, zeta - T(1));
            p[k] = lower * base;
            dp[k] = zeta * lambda * lower;
          }
        }
      }

      // partner element of j for each function (-2: any, -1: none)
      const int ej = s.species[j];
      auto partner = [&](const Angular& f) {
        if (t.one_element) return -2;
        if (ej == f.lo) return f.hi;
        if (ej == f.hi) return f.lo;
        return -1;
      };

      if (mode == kValues) {
        for (const Angular& f : t.angular) {
          const int other = partner(f);
          if (other == -1) continue;
          const Group& G = t.groups[f.group];
          const T* a = &s.a[f.group * M + k0];
          const T* p = &s.p[f.shape * M + k0];
          const T* tj = &s.tjk[f.group * M + k0];
          const bool narrow = G.narrow;
          T sum = T(0);
          for (int k = 0; k < n; ++k) {
            T match = (other == -2 || s.species[k0 + k] == other) ? T(1) : T(0);
            sum += match * a[k] * (narrow ? tj[k] : T(1)) * p[k];
          }
          out[f.column] += T(f.coefficient) * s.a[f.group * M + j] * sum;
        }
        continue;
      }

      // q_g[k] = sum over the group's functions of weight_f * P_l, dq_g with dP_l, where
      // weight is the cotangent (VJP) or 1 per column (JVP: accumulated per function below)
      if (mode == kVjp) {
        for (size_t g = 0; g < NG; ++g) {
          std::fill(&s.q[g * M + k0], &s.q[g * M + k0] + n, T(0));
          std::fill(&s.dq[g * M + k0], &s.dq[g * M + k0] + n, T(0));
        }
        for (const Angular& f : t.angular) {
          const int other = partner(f);
          if (other == -1) continue;
          const T w = T(f.coefficient) * cot[f.column];
          const T* p = &s.p[f.shape * M + k0];
          const T* dp = &s.dp[f.shape * M + k0];
          T* q = &s.q[f.group * M + k0];
          T* dq = &s.dq[f.group * M + k0];
          for (int k = 0; k < n; ++k) {
            T match = (other == -2 || s.species[k0 + k] == other) ? w : T(0);
            q[k] += match * p[k];
            dq[k] += match * dp[k];
          }
        }
        T* arj = &s.acc_rj[k0];
        T* ark = &s.acc_rk[k0];
        T* arjk = &s.acc_rjk[k0];
        T* ac = &s.acc_c[k0];
        std::fill(arj, arj + n, T(0)); std::fill(ark, ark + n, T(0));
        std::fill(arjk, arjk + n, T(0)); std::fill(ac, ac + n, T(0));
        for (size_t g = 0; g < NG; ++g) {
          const T aj = s.a[g * M + j], daj = s.da[g * M + j];
          const T* a = &s.a[g * M + k0];
          const T* da = &s.da[g * M + k0];
          const T* q = &s.q[g * M + k0];
          const T* dq = &s.dq[g * M + k0];
          if (t.groups[g].narrow) {
            const T* tj = &s.tjk[g * M + k0];
            const T* dtj = &s.dtjk[g * M + k0];
            for (int k = 0; k < n; ++k) {
              T tq = tj[k] * q[k];
              arj[k] += daj * a[k] * tq;
              ark[k] += aj * da[k] * tq;
              arjk[k] += aj * a[k] * dtj[k] * q[k];
              ac[k] += aj * a[k] * tj[k] * dq[k];
            }
          } else {
            for (int k = 0; k < n; ++k) {
              arj[k] += daj * a[k] * q[k];
              ark[k] += aj * da[k] * q[k];
              ac[k] += aj * a[k] * dq[k];
            }
          }
        }
        // d cos / d r_j = (u_k - cos u_j) / r_j, d cos / d r_k = (u_j - cos u_k) / r_k,
        // d r_jk / d r_k = w / r_jk = -d r_jk / d r_j
        const T inv_rj = s.inv_r[j];
        T gjx = T(0), gjy = T(0), gjz = T(0);
        for (int k = 0; k < n; ++k) {
          const int kk = k0 + k;
          T c = cs[k];
          T along = arjk[k] / rjk[k];
          T cj = ac[k] * inv_rj, ck = ac[k] * s.inv_r[kk];
          gjx += arj[k] * uxj + cj * (s.ux[kk] - c * uxj) - along * wx[k];
          gjy += arj[k] * uyj + cj * (s.uy[kk] - c * uyj) - along * wy[k];
          gjz += arj[k] * uzj + cj * (s.uz[kk] - c * uzj) - along * wz[k];
          s.gx[kk] += ark[k] * s.ux[kk] + ck * (uxj - c * s.ux[kk]) + along * wx[k];
          s.gy[kk] += ark[k] * s.uy[kk] + ck * (uyj - c * s.uy[kk]) + along * wy[k];
          s.gz[kk] += ark[k] * s.uz[kk] + ck * (uzj - c * s.uz[kk]) + along * wz[k];
        }
        s.gx[j] += gjx; s.gy[j] += gjy; s.gz[j] += gjz;
        continue;
      }

      // JVP: tangents of r_j, r_k, cos and r_jk along the input tangent
      {
        const T inv_rj = s.inv_r[j];
        const T tjx = s.gx[j], tjy = s.gy[j], tjz = s.gz[j];
        const T trj = s.tang_r[j];
        for (int k = 0; k < n; ++k) {
          const int kk = k0 + k;
          T c = cs[k];
          T tkx = s.gx[kk], tky = s.gy[kk], tkz = s.gz[kk];
          s.tang_c[kk] = ((s.ux[kk] - c * uxj) * tjx + (s.uy[kk] - c * uyj) * tjy + (s.uz[kk] - c * uzj) * tjz) *
                             inv_rj +
                         ((uxj - c * s.ux[kk]) * tkx + (uyj - c * s.uy[kk]) * tky + (uzj - c * s.uz[kk]) * tkz) *
                             s.inv_r[kk];
          s.tang_rjk[kk] = (wx[k] * (tkx - tjx) + wy[k] * (tky - tjy) + wz[k] * (tkz - tjz)) / rjk[k];
        }
        // per group: value tangent b1 (through r_j, r_k, r_jk) and angular weight b2 (through cos)
        for (size_t g = 0; g < NG; ++g) {
          const T aj = s.a[g * M + j], daj = s.da[g * M + j];
          const T* a = &s.a[g * M + k0];
          const T* da = &s.da[g * M + k0];
          T* b1 = &s.q[g * M + k0];
          T* b2 = &s.dq[g * M + k0];
          if (t.groups[g].narrow) {
            const T* tj = &s.tjk[g * M + k0];
            const T* dtj = &s.dtjk[g * M + k0];
            for (int k = 0; k < n; ++k) {
              const int kk = k0 + k;
              b1[k] = (daj * trj * a[k] + aj * da[k] * s.tang_r[kk]) * tj[k] + aj * a[k] * dtj[k] * s.tang_rjk[kk];
              b2[k] = aj * a[k] * tj[k] * s.tang_c[kk];
            }
          } else {
            for (int k = 0; k < n; ++k) {
              const int kk = k0 + k;
              b1[k] = daj * trj * a[k] + aj * da[k] * s.tang_r[kk];
              b2[k] = aj * a[k] * s.tang_c[kk];
            }
          }
        }
        for (const Angular& f : t.angular) {
          const int other = partner(f);
          if (other == -1) continue;
          const T* p = &s.p[f.shape * M + k0];
          const T* dp = &s.dp[f.shape * M + k0];
          const T* b1 = &s.q[f.group * M + k0];
          const T* b2 = &s.dq[f.group * M + k0];
          T sum = T(0);
          for (int k = 0; k < n; ++k) {
            T match = (other == -2 || s.species[k0 + k] == other) ? T(1) : T(0);
            sum += match * (b1[k] * p[k] + b2[k] * dp[k]);
          }
          out[f.column] += T(f.coefficient) * sum;
        }
      }
    }
  }

  if (mode == kVjp)
    for (int k = 0; k < K; ++k) {
      const int m = s.slot[k];
      grad[3 * m] = s.gx[k]; grad[3 * m + 1] = s.gy[k]; grad[3 * m + 2] = s.gz[k];
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(MlipSfValues, values,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("table")
                                  .Attr<int64_t>("cutoff_type")
                                  .Attr<double>("alpha")
                                  .Attr<int64_t>("n_elements"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MlipSfVjp, dispatch<kVjp>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("table")
                                  .Attr<int64_t>("cutoff_type")
                                  .Attr<double>("alpha")
                                  .Attr<int64_t>("n_elements"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MlipSfJvp, dispatch<kJvp>,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("table")
                                  .Attr<int64_t>("cutoff_type")
                                  .Attr<double>("alpha")
                                  .Attr<int64_t>("n_elements"));
