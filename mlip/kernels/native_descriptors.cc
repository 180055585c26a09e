// Behler-Parrinello symmetry functions (n2p2 types 2, 3 and 9) with analytic
// derivatives, as XLA FFI custom calls for the CPU.
//
// Three handlers share one per-atom routine:
//   mlip_sf_values  G[n, F]            from r_ij [n, M, 3] and neighbour species [n, M]
//   mlip_sf_vjp     dL/dr_ij [n, M, 3] from the cotangent dL/dG [n, F], or [K, n, M, 3] from K
//                   cotangents [K, n, F] (an ensemble's members: each pair's geometry, cutoffs,
//                   exponentials and angular powers computed once for all K)
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
//
// The maths lives in headers under native/, shared with any other host of the
// kernel (namespace mlip::native, no XLA types): vector_math.h (exp, sin, cos),
// cutoff.h, table.h (the function table), scratch.h (per-atom buffers),
// angular_powers.h, radial.h (type 2), angular_wide.h (type 9),
// angular_narrow.h (type 3) and atom.h (one atom).  This file holds the XLA FFI
// handlers and the threading.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "native/atom.h"
#include "native/table.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using mlip::native::atom;
using mlip::native::kJvp;
using mlip::native::kValues;
using mlip::native::kVjp;
using mlip::native::Mode;
using mlip::native::parse_table;
using mlip::native::Scratch;
using mlip::native::Table;

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

// `members` cotangents (VJP): member c's cotangent rows at cot + c * n * F, its gradient at
// grad + c * n * M * 3
template <typename T, Mode mode>
ffi::Error run(ffi::ThreadPool pool, const Table& t, int cutoff_type, double alpha, ffi::AnyBuffer rij,
               ffi::AnyBuffer species, const T* cot, const T* tan, T* out, T* grad, int members) {
  auto dims = rij.dimensions();
  if (dims.size() != 3 || dims[2] != 3) return ffi::Error::InvalidArgument("r_ij must have shape [n, M, 3]");
  const int64_t n = dims[0];
  const int slots = static_cast<int>(dims[1]);
  const T* r = rij.typed_data<T>();
  const int32_t* sp = species.typed_data<int32_t>();
  const int F = t.n_columns;
  const int64_t cot_stride = n * F, grad_stride = n * slots * 3;
  parallel_for(pool, n, [&](int64_t begin, int64_t end) {
    thread_local Scratch<T> scratch;
    for (int64_t i = begin; i < end; ++i) {
      atom<T, mode>(t, cutoff_type, alpha, slots, r + i * slots * 3, sp + i * slots,
                    cot ? cot + i * F : nullptr, tan ? tan + i * slots * 3 : nullptr,
                    out ? out + i * F : nullptr, grad ? grad + i * slots * 3 : nullptr, scratch, members,
                    cot_stride, grad_stride);
    }
  });
  return ffi::Error::Success();
}

template <Mode mode>
ffi::Error dispatch(ffi::ThreadPool pool, ffi::AnyBuffer rij, ffi::AnyBuffer species, ffi::AnyBuffer extra,
                    ffi::Result<ffi::AnyBuffer> result, ffi::Span<const double> table, int64_t cutoff_type,
                    double alpha, int64_t n_elements) {
  if (species.element_type() != ffi::DataType::S32) return ffi::Error::InvalidArgument("species must be int32");
  Table t = parse_table(table.begin(), table.size(), static_cast<int>(n_elements));
  const int type = static_cast<int>(cutoff_type);
  int members = 1;  // VJP: a cotangent [K, n, F] gives K gradients [K, n, M, 3]
  if (mode == kVjp) {
    auto cd = extra.dimensions();
    auto rd = rij.dimensions();
    if (cd.size() == 3) {
      if (rd.size() != 3 || cd[1] != rd[0] || cd[2] != t.n_columns)
        return ffi::Error::InvalidArgument("cotangents must have shape [K, n, F]");
      members = static_cast<int>(cd[0]);
      if (members == 0) return ffi::Error::Success();
    } else if (cd.size() != 2) {
      return ffi::Error::InvalidArgument("the cotangent must have shape [n, F] or [K, n, F]");
    }
  }
  if (rij.element_type() == ffi::DataType::F64) {
    const double* e = extra.typed_data<double>();
    double* o = result->typed_data<double>();
    return run<double, mode>(pool, t, type, alpha, rij, species, mode == kVjp ? e : nullptr,
                             mode == kJvp ? e : nullptr, mode == kVjp ? nullptr : o, mode == kVjp ? o : nullptr,
                             members);
  }
  if (rij.element_type() == ffi::DataType::F32) {
    const float* e = extra.typed_data<float>();
    float* o = result->typed_data<float>();
    return run<float, mode>(pool, t, type, alpha, rij, species, mode == kVjp ? e : nullptr,
                            mode == kJvp ? e : nullptr, mode == kVjp ? nullptr : o, mode == kVjp ? o : nullptr,
                            members);
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
