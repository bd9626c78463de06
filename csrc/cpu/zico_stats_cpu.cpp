// CPU implementation of the zico_fast ops: one OpenMP-parallel pass over all tensors of a call.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <limits>
#include <vector>

#include "../launch_plan.h"
#include "../nvtx_range.h"
#include "../zico_math.h"

namespace zico_fast {
namespace {

// Large enough to amortise scheduling, small enough to balance 300 layers over the cores.
constexpr int64_t kCpuChunkSize = 16384;

// Bits of a chunk's non-finite flags: in the shift (the earlier batch) or in the new gradient.
constexpr uint8_t kBadShift = 1;
constexpr uint8_t kBadGrad = 2;

// The data pointers of a list: read-only for inputs (const_data_ptr), writable for outputs.
template <typename T>
std::vector<const T*> input_pointers(at::TensorList tensors) {
  std::vector<const T*> out;
  out.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    out.push_back(t.const_data_ptr<T>());
  }
  return out;
}

template <typename T>
std::vector<T*> output_pointers(at::TensorList tensors) {
  std::vector<T*> out;
  out.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    out.push_back(t.mutable_data_ptr<T>());
  }
  return out;
}

// Folds per-chunk non-finite bits into the per-tensor bad_batch flags (serially: few chunks).
void record_bad_batches(const std::vector<Chunk>& chunks, const std::vector<uint8_t>& bad,
                        at::TensorList bad_batch, int64_t batch) {
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (bad[c] == 0) {
      continue;
    }
    int32_t* flag = bad_batch[chunks[c].tensor].mutable_data_ptr<int32_t>();
    const int64_t at_batch = (bad[c] & kBadShift) ? batch - 1 : batch;
    *flag = static_cast<int32_t>(std::min<int64_t>(*flag, at_batch));
  }
}

// Sums per-chunk partial sums into one float64 per tensor, in chunk order (deterministic).
at::Tensor sum_partials_per_tensor(const std::vector<Chunk>& chunks,
                                   const std::vector<double>& partial, int64_t num_tensors) {
  at::Tensor out = at::zeros({num_tensors}, at::TensorOptions().dtype(at::kDouble));
  double* sums = out.mutable_data_ptr<double>();
  for (size_t c = 0; c < chunks.size(); ++c) {
    sums[chunks[c].tensor] += partial[c];
  }
  return out;
}

// One chunk of accumulate_; returns its non-finite bits. kInitialize is a template argument so that
// each variant is a branch-free loop the compiler vectorises.
template <typename scalar_t, bool kInitialize>
uint8_t accumulate_chunk(const scalar_t* __restrict__ g, const scalar_t* __restrict__ k, float* __restrict__ d,
                         float* __restrict__ s, float* __restrict__ a, int64_t begin, int64_t end) {
  bool finite_g = true;
  bool finite_k = true;
#pragma omp simd reduction(&& : finite_k, finite_g)
  for (int64_t i = begin; i < end; ++i) {
    const float gi = static_cast<float>(g[i]);
    const float ki = static_cast<float>(k[i]);
    finite_g &= is_finite(gi);
    Moments m;
    if (kInitialize) {
      finite_k &= is_finite(ki);
      m = moments_of_pair(ki, gi);
    } else {
      m = Moments{d[i], s[i], a[i]};
      add_sample(m, gi, ki);
    }
    d[i] = m.sum_dev;
    s[i] = m.sum_sq_dev;
    a[i] = m.sum_abs;
  }
  return (finite_k ? 0 : kBadShift) | (finite_g ? 0 : kBadGrad);
}

void accumulate_cpu(at::TensorList grads, at::TensorList shifts, at::TensorList sum_dev,
                    at::TensorList sum_sq_dev, at::TensorList sum_abs, at::TensorList bad_batch,
                    int64_t batch, bool initialize) {
  constexpr const char* op = "zico_fast::accumulate_";
  const NvtxRange range(op);
  check_accumulate_args(op, grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch);

  const std::vector<Chunk> chunks = plan_chunks(grads, kCpuChunkSize);
  std::vector<uint8_t> bad(chunks.size(), 0);
  auto dev = output_pointers<float>(sum_dev);
  auto sq = output_pointers<float>(sum_sq_dev);
  auto ab = output_pointers<float>(sum_abs);

  ZICO_DISPATCH_GRAD_TYPES(grads[0].scalar_type(), "accumulate_cpu", [&] {
    auto g_ptrs = input_pointers<scalar_t>(grads);
    auto k_ptrs = input_pointers<scalar_t>(shifts);
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        const Chunk ch = chunks[c];
        const auto args = std::make_tuple(g_ptrs[ch.tensor], k_ptrs[ch.tensor], dev[ch.tensor], sq[ch.tensor],
                                          ab[ch.tensor], ch.begin, ch.end);
        bad[c] = initialize ? std::apply(accumulate_chunk<scalar_t, true>, args)
                            : std::apply(accumulate_chunk<scalar_t, false>, args);
      }
    });
  });
  record_bad_batches(chunks, bad, bad_batch, batch);
}

at::Tensor ratio_sums_cpu(at::TensorList sum_dev, at::TensorList sum_sq_dev, at::TensorList sum_abs,
                          int64_t count) {
  constexpr const char* op = "zico_fast::ratio_sums";
  const NvtxRange range(op);
  check_ratio_sums_args(op, sum_dev, sum_sq_dev, sum_abs, count);

  const std::vector<Chunk> chunks = plan_chunks(sum_dev, kCpuChunkSize);
  std::vector<double> partial(chunks.size(), 0.0);
  auto dev = input_pointers<float>(sum_dev);
  auto sq = input_pointers<float>(sum_sq_dev);
  auto ab = input_pointers<float>(sum_abs);
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const Chunk ch = chunks[c];
      const float* __restrict__ d = dev[ch.tensor];
      const float* __restrict__ s = sq[ch.tensor];
      const float* __restrict__ a = ab[ch.tensor];
      double acc = 0.0;
      // NOTE: [Deterministic simd sums] the simd reduction reorders the additions, but in a fixed
      // way for a given binary and chunk plan, so results do not depend on the thread count.
#pragma omp simd reduction(+ : acc)
      for (int64_t i = ch.begin; i < ch.end; ++i) {
        acc += element_ratio(Moments{d[i], s[i], a[i]}, count);
      }
      partial[c] = acc;
    }
  });
  return sum_partials_per_tensor(chunks, partial, static_cast<int64_t>(sum_dev.size()));
}

// One chunk of pair_ratio_sums: its ratio sum into `sum`, its non-finite bits returned.
template <typename scalar_t>
uint8_t pair_chunk(const scalar_t* __restrict__ k, const scalar_t* __restrict__ g, int64_t begin, int64_t end,
                   double& sum) {
  double acc = 0.0;
  bool finite_k = true;
  bool finite_g = true;
  // See NOTE: [Deterministic simd sums].
#pragma omp simd reduction(+ : acc) reduction(&& : finite_k, finite_g)
  for (int64_t i = begin; i < end; ++i) {
    const float ki = static_cast<float>(k[i]);
    const float gi = static_cast<float>(g[i]);
    finite_k &= is_finite(ki);
    finite_g &= is_finite(gi);
    acc += pair_ratio(ki, gi);
  }
  sum = acc;
  return (finite_k ? 0 : kBadShift) | (finite_g ? 0 : kBadGrad);
}

at::Tensor pair_ratio_sums_cpu(at::TensorList first, at::TensorList second, at::TensorList bad_batch,
                               int64_t batch) {
  constexpr const char* op = "zico_fast::pair_ratio_sums";
  const NvtxRange range(op);
  check_pair_args(op, first, second, bad_batch);

  const std::vector<Chunk> chunks = plan_chunks(second, kCpuChunkSize);
  std::vector<double> partial(chunks.size(), 0.0);
  std::vector<uint8_t> bad(chunks.size(), 0);
  ZICO_DISPATCH_GRAD_TYPES(second[0].scalar_type(), "pair_ratio_sums_cpu", [&] {
    auto k_ptrs = input_pointers<scalar_t>(first);
    auto g_ptrs = input_pointers<scalar_t>(second);
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        const Chunk ch = chunks[c];
        bad[c] = pair_chunk(k_ptrs[ch.tensor], g_ptrs[ch.tensor], ch.begin, ch.end, partial[c]);
      }
    });
  });
  record_bad_batches(chunks, bad, bad_batch, batch);
  return sum_partials_per_tensor(chunks, partial, static_cast<int64_t>(second.size()));
}

}  // namespace

TORCH_LIBRARY_IMPL(zico_fast, CPU, m) {
  m.impl("accumulate_", &accumulate_cpu);
  m.impl("ratio_sums", &ratio_sums_cpu);
  m.impl("pair_ratio_sums", &pair_ratio_sums_cpu);
}

}  // namespace zico_fast
