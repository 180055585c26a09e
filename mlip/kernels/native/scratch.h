// scratch.h: per-thread buffers of one atom's compacted neighbours and pair factors.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>
#include "table.h"

namespace mlip::native {

template <typename T>
struct Scratch {  // per-thread buffers, sized by the neighbour capacity
  int capacity = 0;
  std::vector<T> x, y, z, r, inv_r, ux, uy, uz;  // [k]: the real neighbours, compacted
  std::vector<int> species, slot;
  std::vector<T> fc, dfc;          // [cutoffs][k]
  std::vector<T> a, da;            // [groups][k]: exp(-eta (r - rs)^2) f_c(r) and its r-derivative
  std::vector<T> cos;              // [k] for the current j (type 9)
  std::vector<T> p, dp;            // [shapes][k]: (1 + lambda cos)^zeta and d/dcos (type 9)
  std::vector<T> q, dq;            // [members][groups][k]: cotangent- or tangent-weighted shape sums (type 9)
  std::vector<T> acc_rj, acc_c;    // [k]
  std::vector<T> acc_rk;           // [members][k]
  std::vector<T> gx, gy, gz;       // [members][k] gradient (VJP) or [k] tangent (JVP) of the compacted neighbours
  std::vector<T> tang_r, tang_c;   // [k] (JVP)
  std::vector<T> cot;              // [members][F]: this atom's cotangents (VJP)
  std::vector<T> jac, side;        // VJP of many members, type 9: [functions][3][k], [functions][5][k]

  // VJP: the number of cotangents (ensemble members) of the current atom; member
  // c's arrays start at c * capacity (gx, gy, gz, acc_rk), c * n_groups * capacity
  // (q, dq) and c * F (cot)
  int members = 1;
  size_t n_cutoffs = 0, n_groups = 0, n_shapes = 0, n_members = 0, n_columns = 0;

  // buffers for m neighbour slots, t's cutoffs, groups and shapes, and `count`
  // cotangents (this thread's scratch serves every kernel, so any of them may have grown)
  void reserve(int m, const Table& t, int count = 1) {
    members = count;
    if (m <= capacity && t.cutoffs.size() <= n_cutoffs && t.groups.size() <= n_groups &&
        t.shapes.size() <= n_shapes && size_t(count) <= n_members && size_t(t.n_columns) <= n_columns)
      return;
    m = std::max(m, capacity);
    n_cutoffs = std::max(n_cutoffs, t.cutoffs.size());
    n_groups = std::max(n_groups, t.groups.size());
    n_shapes = std::max(n_shapes, t.shapes.size());
    n_members = std::max(n_members, size_t(count));
    n_columns = std::max(n_columns, size_t(t.n_columns));
    capacity = m;
    for (auto* v : {&x, &y, &z, &r, &inv_r, &ux, &uy, &uz, &cos, &acc_rj, &acc_c, &tang_r, &tang_c})
      v->assign(m, T(0));
    for (auto* v : {&acc_rk, &gx, &gy, &gz}) v->assign(n_members * m, T(0));
    cot.assign(n_members * n_columns, T(0));
    species.assign(m, -1);
    slot.assign(m, 0);
    size_t nc = n_cutoffs, ng = n_groups, ns = n_shapes;
    fc.assign(nc * m, T(0)); dfc.assign(nc * m, T(0));
    a.assign(ng * m, T(0)); da.assign(ng * m, T(0));
    q.assign(n_members * ng * m, T(0)); dq.assign(n_members * ng * m, T(0));
    p.assign(ns * m, T(0)); dp.assign(ns * m, T(0));
  }
};

}  // namespace mlip::native
