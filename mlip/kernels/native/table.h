// table.h: the function table (one row per output column) and its grouping into
// radial functions, angular functions, radial groups and (lambda, zeta) shapes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace mlip::native {

// columns of a function-table row (mlip.kernels.native.TABLE_WIDTH)
constexpr int kTableWidth = 9;

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

// the table of n_values / kTableWidth rows, grouped for the kernels
inline Table parse_table(const double* rows, size_t n_values, int n_elements) {
  Table t;
  t.one_element = n_elements == 1;
  t.n_elements = n_elements;
  t.n_columns = static_cast<int>(n_values / kTableWidth);
  auto cut_index = [&](double r_cut) {
    for (size_t n = 0; n < t.cutoffs.size(); ++n)
      if (t.cutoffs[n] == r_cut) return static_cast<int>(n);
    t.cutoffs.push_back(r_cut);
    return static_cast<int>(t.cutoffs.size() - 1);
  };
  for (int c = 0; c < t.n_columns; ++c) {
    const double* row = rows + c * kTableWidth;
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

}  // namespace mlip::native
