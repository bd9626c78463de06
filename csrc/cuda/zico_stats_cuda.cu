// CUDA implementation of the zico_fast ops: one multi-tensor launch per op call, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <vector>

#include "../launch_plan.h"
#include "../nvtx_range.h"
#include "../zico_math.h"
#include "memory_access.cuh"

namespace zico_fast {
namespace {

// NOTE: [Launch metadata table]
// A launch covers every tensor of the call, whatever their number. Its plan (per tensor: the raw
// data pointers, the bad_batch flag, whether vector loads are allowed, its range of chunks; per
// chunk: the launch_plan.h Chunk) is written into one pinned int64 tensor and copied to the device
// with non_blocking=true on the current stream, which orders it before the kernels; the caching
// host allocator keeps the pinned block alive until that copy is done. Kernel-argument structs
// (apex, ATen MultiTensorApply) would need a relaunch every ~100 tensors, and the reductions would
// then have to stitch partial sums across launches; the table keeps one launch per call for any
// network and costs one small async copy. Block c of the grid is chunk c of the plan, so partial
// sums land in plan order and the per-tensor sums never depend on block scheduling.
// The table is not safe under CUDA graph capture (a replay would read the recycled host buffer),
// so capture is refused with an error instead of giving wrong scores later.

// A chunk is one block's work: 4,096 elements, i.e. 4 vector loads per thread and list for
// float32 and 2 for float16/bfloat16 (8 halves per 16-byte load). A 1M-parameter network then
// gets ~250 blocks (two per SM of an H100) instead of ~120, under one wave, with 8,192.
constexpr int64_t kCudaChunkSize = 4096;
// accumulate_ walks five lists: grads, shifts, sum_dev, sum_sq_dev, sum_abs.
constexpr int kMaxLists = 5;

// Chunk starts must be multiples of the widest vector (8 halves) so that an aligned tensor stays
// aligned in every chunk, and a chunk must be a whole number of vector loads of every thread.
static_assert(kCudaChunkSize % (kThreads * kVecOf<c10::Half>) == 0, "chunks keep vector loads aligned");
static_assert(kCudaChunkSize % (kThreads * kVecOf<float>) == 0, "chunks keep vector loads aligned");

// One row of the table per tensor of the call. All fields are int64 so the table is one tensor.
struct TensorMeta {
  int64_t ptr[kMaxLists];  // this tensor's data pointer in each list of the op, in schema order
  int64_t bad_batch;       // its int32 flag (0 for ratio_sums, which has none)
  int64_t vectorised;      // 1 when every pointer allows aligned 16-byte loads
  int64_t first_chunk;     // chunks [first_chunk, end_chunk) of the plan cover this tensor
  int64_t end_chunk;
};
constexpr int64_t kTensorWords = sizeof(TensorMeta) / sizeof(int64_t);
constexpr int64_t kChunkWords = sizeof(Chunk) / sizeof(int64_t);
static_assert(sizeof(TensorMeta) % sizeof(int64_t) == 0 && sizeof(Chunk) == 3 * sizeof(int64_t),
              "the metadata table is made of int64 words");

template <typename T>
__device__ __forceinline__ T* as_ptr(int64_t address) {
  return reinterpret_cast<T*>(static_cast<intptr_t>(address));
}

// NOTE: [Chunk walk]
// An op exposes kVec (elements per 16-byte load of its narrowest list), a Loaded<N> register set,
// load<N>(i) and consume<N>(i, loaded). On a vectorised tensor each thread first issues the loads
// of all its kUnroll vectors, then computes and stores: every load of the chunk is in flight at
// once, instead of one vector's latency per step. Neighbouring threads take neighbouring vectors
// (coalesced). The rest (the < kVec-element tail of a tensor, or a whole chunk when a pointer is
// misaligned) goes element by element. Each thread's elements and their order are fixed.
template <typename Op>
__device__ __forceinline__ void walk_chunk(Op& op, const Chunk& chunk, bool vectorised) {
  constexpr int kVec = Op::kVec;
  constexpr int kUnroll = kCudaChunkSize / (kThreads * kVec);
  const int64_t tid = threadIdx.x;
  int64_t scalar_begin = chunk.begin;
  if (vectorised) {
    const int64_t vector_end = chunk.begin + (chunk.end - chunk.begin) / kVec * kVec;
    typename Op::template Loaded<kVec> in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = chunk.begin + (u * kThreads + tid) * kVec;
      if (i < vector_end) {
        in[u] = op.template load<kVec>(i);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = chunk.begin + (u * kThreads + tid) * kVec;
      if (i < vector_end) {
        op.template consume<kVec>(i, in[u]);
      }
    }
    scalar_begin = vector_end;
  }
  for (int64_t i = scalar_begin + tid; i < chunk.end; i += kThreads) {
    op.template consume<1>(i, op.template load<1>(i));
  }
}

// Folds the block's non-finite findings into its tensor's flag like record_bad_batches of the CPU
// file: a bad shift is charged to the earlier batch. Every thread of the block must call it.
__device__ __forceinline__ void report_non_finite(bool bad_shift, bool bad_grad, int64_t flag,
                                                  int32_t shift_batch, int32_t grad_batch) {
  const int any_shift = __syncthreads_or(bad_shift);
  const int any_grad = __syncthreads_or(bad_grad);
  if (threadIdx.x == 0 && (any_shift || any_grad)) {
    atomicMin(as_ptr<int>(flag), any_shift ? shift_batch : grad_batch);
  }
}

// kInitialize is a template argument: the initialising variant never reads the moments.
template <typename T, bool kInitialize>
struct AccumulateOp {
  static constexpr int kVec = kVecOf<T>;
  const T* grad;
  const T* shift;
  float* sum_dev;
  float* sum_sq_dev;
  float* sum_abs;
  bool bad_shift = false;
  bool bad_grad = false;

  template <int N>
  struct Loaded {
    Pack<T, N> g, k;
    Pack<float, N> d, s, a;
  };

  template <int N>
  __device__ __forceinline__ Loaded<N> load(int64_t i) const {
    Loaded<N> x;
    x.g = zico_fast::load<N, Cache::kStreaming>(grad, i);  // a new gradient is read once
    x.k = zico_fast::load<N, Cache::kReadOnly>(shift, i);   // the shift is read every batch
    if constexpr (!kInitialize) {
      x.d = zico_fast::load<N, Cache::kL2>(sum_dev, i);
      x.s = zico_fast::load<N, Cache::kL2>(sum_sq_dev, i);
      x.a = zico_fast::load<N, Cache::kL2>(sum_abs, i);
    }
    return x;
  }

  template <int N>
  __device__ __forceinline__ void consume(int64_t i, const Loaded<N>& x) {
    Pack<float, N> d, s, a;
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const float gn = static_cast<float>(x.g.v[n]);
      const float kn = static_cast<float>(x.k.v[n]);
      bad_grad |= !is_finite(gn);
      Moments m;
      if constexpr (kInitialize) {
        bad_shift |= !is_finite(kn);
        m = moments_of_pair(kn, gn);
      } else {
        m = Moments{x.d.v[n], x.s.v[n], x.a.v[n]};
        add_sample(m, gn, kn);
      }
      d.v[n] = m.sum_dev;
      s.v[n] = m.sum_sq_dev;
      a.v[n] = m.sum_abs;
    }
    store<N>(sum_dev, i, d);
    store<N>(sum_sq_dev, i, s);
    store<N>(sum_abs, i, a);
  }
};

struct RatioOp {
  static constexpr int kVec = kVecOf<float>;
  const float* sum_dev;
  const float* sum_sq_dev;
  const float* sum_abs;
  int64_t count;
  double acc = 0.0;

  template <int N>
  struct Loaded {
    Pack<float, N> d, s, a;
  };

  template <int N>
  __device__ __forceinline__ Loaded<N> load(int64_t i) const {  // the final moments: read once
    return Loaded<N>{zico_fast::load<N, Cache::kStreaming>(sum_dev, i),
                     zico_fast::load<N, Cache::kStreaming>(sum_sq_dev, i),
                     zico_fast::load<N, Cache::kStreaming>(sum_abs, i)};
  }

  template <int N>
  __device__ __forceinline__ void consume(int64_t, const Loaded<N>& x) {
#pragma unroll
    for (int n = 0; n < N; ++n) {
      acc += element_ratio(Moments{x.d.v[n], x.s.v[n], x.a.v[n]}, count);
    }
  }
};

template <typename T>
struct PairRatioOp {
  static constexpr int kVec = kVecOf<T>;
  const T* first;
  const T* second;
  double acc = 0.0;
  bool bad_first = false;
  bool bad_second = false;

  template <int N>
  struct Loaded {
    Pack<T, N> k, g;
  };

  template <int N>
  __device__ __forceinline__ Loaded<N> load(int64_t i) const {  // both gradients: read once
    return Loaded<N>{zico_fast::load<N, Cache::kStreaming>(first, i),
                     zico_fast::load<N, Cache::kStreaming>(second, i)};
  }

  template <int N>
  __device__ __forceinline__ void consume(int64_t, const Loaded<N>& x) {
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const float kn = static_cast<float>(x.k.v[n]);
      const float gn = static_cast<float>(x.g.v[n]);
      bad_first |= !is_finite(kn);
      bad_second |= !is_finite(gn);
      acc += pair_ratio(kn, gn);
    }
  }
};

template <typename T, bool kInitialize>
__global__ void __launch_bounds__(kThreads)
    accumulate_kernel(const TensorMeta* __restrict__ tensors, const Chunk* __restrict__ chunks,
                      int32_t shift_batch, int32_t grad_batch) {
  const Chunk chunk = chunks[blockIdx.x];
  const TensorMeta& t = tensors[chunk.tensor];
  AccumulateOp<T, kInitialize> op{as_ptr<const T>(t.ptr[0]), as_ptr<const T>(t.ptr[1]),
                                  as_ptr<float>(t.ptr[2]), as_ptr<float>(t.ptr[3]),
                                  as_ptr<float>(t.ptr[4])};
  walk_chunk(op, chunk, t.vectorised != 0);
  report_non_finite(op.bad_shift, op.bad_grad, t.bad_batch, shift_batch, grad_batch);
}

__global__ void __launch_bounds__(kThreads)
    ratio_kernel(const TensorMeta* __restrict__ tensors, const Chunk* __restrict__ chunks,
                 int64_t count, double* __restrict__ partials) {
  const Chunk chunk = chunks[blockIdx.x];
  const TensorMeta& t = tensors[chunk.tensor];
  RatioOp op{as_ptr<const float>(t.ptr[0]), as_ptr<const float>(t.ptr[1]),
             as_ptr<const float>(t.ptr[2]), count};
  walk_chunk(op, chunk, t.vectorised != 0);
  const double total = block_sum(op.acc);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = total;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    pair_ratio_kernel(const TensorMeta* __restrict__ tensors, const Chunk* __restrict__ chunks,
                      int32_t shift_batch, int32_t grad_batch, double* __restrict__ partials) {
  const Chunk chunk = chunks[blockIdx.x];
  const TensorMeta& t = tensors[chunk.tensor];
  PairRatioOp<T> op{as_ptr<const T>(t.ptr[0]), as_ptr<const T>(t.ptr[1])};
  walk_chunk(op, chunk, t.vectorised != 0);
  const double total = block_sum(op.acc);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = total;
  }
  report_non_finite(op.bad_first, op.bad_second, t.bad_batch, shift_batch, grad_batch);
}

// One block per tensor sums its chunks' partials: thread j takes chunks j, j + 256, ... in order,
// then the fixed block_sum tree, so the result never depends on scheduling. A 100M-element
// tensor (~24k chunks) costs each thread ~100 loads instead of one warp's ~760. A tensor without
// chunks (empty) gets 0, so every output is written.
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const TensorMeta* __restrict__ tensors,
                        const double* __restrict__ partials, double* __restrict__ out) {
  const TensorMeta& t = tensors[blockIdx.x];
  double acc = 0.0;
  for (int64_t c = t.first_chunk + threadIdx.x; c < t.end_chunk; c += kThreads) {
    acc += partials[c];
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0) {
    out[blockIdx.x] = total;
  }
}

// ---- host side -------------------------------------------------------------------------------

// The flags are int32; saturating equals the CPU's min-then-cast for every batch that fits.
int32_t to_flag_value(int64_t batch) {
  constexpr int64_t kLo = std::numeric_limits<int32_t>::min();
  constexpr int64_t kHi = std::numeric_limits<int32_t>::max();
  return static_cast<int32_t>(std::min(std::max(batch, kLo), kHi));
}

int64_t address_of(const void* p) {
  return static_cast<int64_t>(reinterpret_cast<intptr_t>(p));
}

void check_not_capturing(const char* op) {
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
              op, " cannot be captured in a CUDA graph (its launch plan is uploaded from host "
              "memory on every call); call it outside the capture");
}

// The table of NOTE: [Launch metadata table], on the device. `table` owns the device copy.
struct DevicePlan {
  at::Tensor table;
  const TensorMeta* tensors = nullptr;
  const Chunk* chunks = nullptr;
  int64_t num_tensors = 0;
  int64_t num_chunks = 0;
  unsigned int blocks = 0;  // one block per chunk
};

// Plans chunks over the first input list and uploads the table; uploads nothing when every tensor
// is empty. `inputs` are read (const_data_ptr), `outputs` written (mutable_data_ptr); their
// pointers go into TensorMeta::ptr in that order. `vec` is the op's elements per vector load: a
// tensor is vectorised when each of its pointers is aligned for its Pack of `vec` elements.
// `bad_batch` may be empty (ratio_sums). Call under the tensors' CUDAGuard.
DevicePlan upload_plan(std::initializer_list<at::TensorList> inputs,
                       std::initializer_list<at::TensorList> outputs, at::TensorList bad_batch, int vec) {
  TORCH_INTERNAL_ASSERT(inputs.size() >= 1 && inputs.size() + outputs.size() <= kMaxLists);
  const at::TensorList like = *inputs.begin();
  const std::vector<Chunk> chunks = plan_chunks(like, kCudaChunkSize);
  DevicePlan plan;
  plan.num_tensors = static_cast<int64_t>(like.size());
  plan.num_chunks = static_cast<int64_t>(chunks.size());
  if (chunks.empty()) {
    return plan;
  }
  constexpr int64_t kMaxGrid = std::numeric_limits<int32_t>::max();  // gridDim.x limit
  TORCH_CHECK(plan.num_chunks <= kMaxGrid && plan.num_tensors <= kMaxGrid,
              "zico_fast: too many tensors or elements for one launch; split the call");
  plan.blocks = static_cast<unsigned int>(plan.num_chunks);

  const int64_t tensor_words = plan.num_tensors * kTensorWords;
  at::Tensor host = at::empty({tensor_words + plan.num_chunks * kChunkWords},
                              at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  TensorMeta* metas = reinterpret_cast<TensorMeta*>(host.mutable_data_ptr<int64_t>());
  for (int64_t t = 0; t < plan.num_tensors; ++t) {
    TensorMeta m{};
    bool aligned = true;
    int j = 0;
    const auto add = [&](const at::Tensor& x, int64_t address) {
      m.ptr[j++] = address;
      const int64_t alignment = std::min<int64_t>(kLoadBytes, vec * x.element_size());
      aligned = aligned && address % alignment == 0;
    };
    for (const at::TensorList& list : inputs) {
      add(list[t], address_of(list[t].const_data_ptr()));
    }
    for (const at::TensorList& list : outputs) {
      add(list[t], address_of(list[t].mutable_data_ptr()));
    }
    m.bad_batch = bad_batch.empty() ? 0 : address_of(bad_batch[t].mutable_data_ptr());
    m.vectorised = aligned ? 1 : 0;
    metas[t] = m;
  }
  for (int64_t c = 0; c < plan.num_chunks; ++c) {
    TensorMeta& m = metas[chunks[c].tensor];
    // The kernels rely on aligned chunk starts and on each tensor's chunks being adjacent.
    TORCH_INTERNAL_ASSERT(chunks[c].begin % vec == 0 && (m.end_chunk == 0 || m.end_chunk == c));
    if (m.end_chunk == 0) {
      m.first_chunk = c;
    }
    m.end_chunk = c + 1;
  }
  std::copy(chunks.begin(), chunks.end(),
            reinterpret_cast<Chunk*>(host.mutable_data_ptr<int64_t>() + tensor_words));

  plan.table = host.to(like[0].device(), at::kLong, /*non_blocking=*/true);
  const int64_t* words = plan.table.const_data_ptr<int64_t>();
  plan.tensors = reinterpret_cast<const TensorMeta*>(words);
  plan.chunks = reinterpret_cast<const Chunk*>(words + tensor_words);
  return plan;
}

// The float64 [num_tensors] result of a reduction, from the per-chunk partials.
at::Tensor sum_partials(const DevicePlan& plan, const at::Tensor& partials, cudaStream_t stream) {
  at::Tensor out = at::empty({plan.num_tensors}, partials.options());
  const auto blocks = static_cast<unsigned int>(plan.num_tensors);  // checked by upload_plan
  sum_partials_kernel<<<blocks, kThreads, 0, stream>>>(
      plan.tensors, partials.const_data_ptr<double>(), out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor double_zeros(int64_t n, const at::Tensor& like) {
  return at::zeros({n}, like.options().dtype(at::kDouble));
}

template <typename T, bool kInitialize>
void launch_accumulate(const DevicePlan& plan, cudaStream_t stream, int64_t batch) {
  accumulate_kernel<T, kInitialize><<<plan.blocks, kThreads, 0, stream>>>(
      plan.tensors, plan.chunks, to_flag_value(batch - 1), to_flag_value(batch));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void accumulate_cuda(at::TensorList grads, at::TensorList shifts, at::TensorList sum_dev,
                     at::TensorList sum_sq_dev, at::TensorList sum_abs, at::TensorList bad_batch,
                     int64_t batch, bool initialize) {
  const NvtxRange range("zico_fast::accumulate_");
  constexpr const char* op = "zico_fast::accumulate_";
  check_accumulate_args(op, grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch);

  const c10::cuda::CUDAGuard guard(grads[0].device());
  check_not_capturing(op);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  ZICO_DISPATCH_GRAD_TYPES(grads[0].scalar_type(), "accumulate_cuda", [&] {
    const DevicePlan plan =
        upload_plan({grads, shifts}, {sum_dev, sum_sq_dev, sum_abs}, bad_batch, kVecOf<scalar_t>);
    if (plan.num_chunks == 0) {
      return;
    }
    if (initialize) {
      launch_accumulate<scalar_t, true>(plan, stream, batch);
    } else {
      launch_accumulate<scalar_t, false>(plan, stream, batch);
    }
  });
}

at::Tensor ratio_sums_cuda(at::TensorList sum_dev, at::TensorList sum_sq_dev,
                           at::TensorList sum_abs, int64_t count) {
  const NvtxRange range("zico_fast::ratio_sums");
  constexpr const char* op = "zico_fast::ratio_sums";
  check_ratio_sums_args(op, sum_dev, sum_sq_dev, sum_abs, count);

  const c10::cuda::CUDAGuard guard(sum_dev[0].device());
  check_not_capturing(op);
  const DevicePlan plan = upload_plan({sum_dev, sum_sq_dev, sum_abs}, {}, {}, RatioOp::kVec);
  if (plan.num_chunks == 0) {
    return double_zeros(plan.num_tensors, sum_dev[0]);
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor partials = at::empty({plan.num_chunks}, sum_dev[0].options().dtype(at::kDouble));
  ratio_kernel<<<plan.blocks, kThreads, 0, stream>>>(plan.tensors, plan.chunks, count,
                                                    partials.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return sum_partials(plan, partials, stream);
}

at::Tensor pair_ratio_sums_cuda(at::TensorList first, at::TensorList second,
                                at::TensorList bad_batch, int64_t batch) {
  const NvtxRange range("zico_fast::pair_ratio_sums");
  constexpr const char* op = "zico_fast::pair_ratio_sums";
  check_pair_args(op, first, second, bad_batch);

  const c10::cuda::CUDAGuard guard(second[0].device());
  check_not_capturing(op);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor out;
  ZICO_DISPATCH_GRAD_TYPES(second[0].scalar_type(), "pair_ratio_sums_cuda", [&] {
    const DevicePlan plan = upload_plan({first, second}, {}, bad_batch, kVecOf<scalar_t>);
    if (plan.num_chunks == 0) {
      out = double_zeros(plan.num_tensors, second[0]);
      return;
    }
    at::Tensor partials = at::empty({plan.num_chunks}, second[0].options().dtype(at::kDouble));
    pair_ratio_kernel<scalar_t><<<plan.blocks, kThreads, 0, stream>>>(
        plan.tensors, plan.chunks, to_flag_value(batch - 1), to_flag_value(batch),
        partials.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    out = sum_partials(plan, partials, stream);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zico_fast, CUDA, m) {
  m.impl("accumulate_", &accumulate_cuda);
  m.impl("ratio_sums", &ratio_sums_cuda);
  m.impl("pair_ratio_sums", &pair_ratio_sums_cuda);
}

}  // namespace zico_fast
