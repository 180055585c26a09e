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

}  // namespace mlip::native
