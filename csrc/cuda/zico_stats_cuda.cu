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

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
// Elements per vector load: 16 bytes of float32 state, 8 bytes of a half/bfloat16 gradient.
constexpr int kVec = 4;
// 8 vector loads per thread: enough bytes in flight per block, ~200 blocks for a 1.5M-weight net.
constexpr int64_t kCudaChunkSize = 8192;
// accumulate_ walks five lists: grads, shifts, sum_dev, sum_sq_dev, sum_abs.
constexpr int kMaxLists = 5;

// Chunk starts must be multiples of kVec so that a 16-byte-aligned tensor stays aligned in every
// chunk; multiples of kThreads * kVec also give every thread the same number of vector loads.
static_assert(kCudaChunkSize % (kThreads * kVec) == 0, "chunk size must keep vector loads aligned");

// One row of the table per tensor of the call. All fields are int64 so the table is one tensor.
struct TensorMeta {
  int64_t ptr[kMaxLists];  // this tensor's data pointer in each list of the op, in schema order
  int64_t bad_batch;       // its int32 flag (0 for ratio_sums, which has none)
  int64_t vectorised;      // 1 when every pointer allows aligned kVec-element loads
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

// N consecutive elements, aligned so that one instruction moves them all.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load(const T* p, int64_t i) {
  return *reinterpret_cast<const Pack<T, N>*>(p + i);
}

template <int N, typename T>
__device__ __forceinline__ void store(T* p, int64_t i, const Pack<T, N>& x) {
  *reinterpret_cast<Pack<T, N>*>(p + i) = x;
}

// Runs op.apply<kVec>(i) on aligned groups of kVec elements of the chunk and op.apply<1>(i) on the
// rest (the tail of a tensor's last chunk, or the whole chunk when a pointer is misaligned).
// Neighbouring threads take neighbouring groups (coalesced), each in a fixed order.
template <typename Op>
__device__ __forceinline__ void walk_chunk(Op& op, const Chunk& chunk, bool vectorised) {
  const int64_t tid = threadIdx.x;
  int64_t scalar_begin = chunk.begin;
  if (vectorised) {
    scalar_begin = chunk.begin + (chunk.end - chunk.begin) / kVec * kVec;
    for (int64_t i = chunk.begin + tid * kVec; i < scalar_begin; i += kThreads * kVec) {
      op.template apply<kVec>(i);
    }
  }
  for (int64_t i = scalar_begin + tid; i < chunk.end; i += kThreads) {
    op.template apply<1>(i);
  }
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum over the block with a fixed reduction tree, so the result is bitwise reproducible;
// valid in thread 0. Every thread of the block must call it.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kWarps];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) {
    warp_sums[warp] = v;
  }
  __syncthreads();
  v = 0.0;
  if (warp == 0) {
    v = warp_sum(lane < kWarps ? warp_sums[lane] : 0.0);
  }
  return v;
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

template <typename T>
struct AccumulateOp {
  const T* grad;
  const T* shift;
  float* sum_dev;
  float* sum_sq_dev;
  float* sum_abs;
  bool initialize;
  bool bad_shift = false;
  bool bad_grad = false;

  template <int N>
  __device__ __forceinline__ void apply(int64_t i) {
    const Pack<T, N> g = load<N>(grad, i);
    const Pack<T, N> k = load<N>(shift, i);
    Pack<float, N> d, s, a;
    if (!initialize) {  // initialize overwrites the moments, so they are not read
      d = load<N>(sum_dev, i);
      s = load<N>(sum_sq_dev, i);
      a = load<N>(sum_abs, i);
    }
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const float gn = static_cast<float>(g.v[n]);
      const float kn = static_cast<float>(k.v[n]);
      bad_grad |= !is_finite(gn);
      Moments m;
      if (initialize) {
        bad_shift |= !is_finite(kn);
        m = moments_of_pair(kn, gn);
      } else {
        m = Moments{d.v[n], s.v[n], a.v[n]};
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
  const float* sum_dev;
  const float* sum_sq_dev;
  const float* sum_abs;
  int64_t count;
  double acc = 0.0;

  template <int N>
  __device__ __forceinline__ void apply(int64_t i) {
    const Pack<float, N> d = load<N>(sum_dev, i);
    const Pack<float, N> s = load<N>(sum_sq_dev, i);
    const Pack<float, N> a = load<N>(sum_abs, i);
#pragma unroll
    for (int n = 0; n < N; ++n) {
      acc += element_ratio(Moments{d.v[n], s.v[n], a.v[n]}, count);
    }
  }
};

template <typename T>
struct PairRatioOp {
  const T* first;
  const T* second;
  double acc = 0.0;
  bool bad_first = false;
  bool bad_second = false;

  template <int N>
  __device__ __forceinline__ void apply(int64_t i) {
    const Pack<T, N> k = load<N>(first, i);
    const Pack<T, N> g = load<N>(second, i);
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const float kn = static_cast<float>(k.v[n]);
      const float gn = static_cast<float>(g.v[n]);
      bad_first |= !is_finite(kn);
      bad_second |= !is_finite(gn);
      acc += pair_ratio(kn, gn);
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    accumulate_kernel(const TensorMeta* __restrict__ tensors, const Chunk* __restrict__ chunks,
                      bool initialize, int32_t shift_batch, int32_t grad_batch) {
  const Chunk chunk = chunks[blockIdx.x];
  const TensorMeta& t = tensors[chunk.tensor];
  AccumulateOp<T> op{as_ptr<const T>(t.ptr[0]), as_ptr<const T>(t.ptr[1]),
                     as_ptr<float>(t.ptr[2]), as_ptr<float>(t.ptr[3]), as_ptr<float>(t.ptr[4]),
                     initialize};
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

// One warp per tensor sums its chunks' partials: lane j takes chunks j, j + 32, ... in order, then
// a fixed shuffle tree. A tensor without chunks (empty) gets 0, so every output is written.
__global__ void __launch_bounds__(kWarpSize)
    sum_partials_kernel(const TensorMeta* __restrict__ tensors,
                        const double* __restrict__ partials, double* __restrict__ out) {
  const TensorMeta& t = tensors[blockIdx.x];
  double acc = 0.0;
  for (int64_t c = t.first_chunk + threadIdx.x; c < t.end_chunk; c += kWarpSize) {
    acc += partials[c];
  }
  acc = warp_sum(acc);
  if (threadIdx.x == 0) {
    out[blockIdx.x] = acc;
  }
}

// ---- host side -------------------------------------------------------------------------------

// The flags are int32; saturating equals the CPU's min-then-cast for every batch that fits.
int32_t to_flag_value(int64_t batch) {
  constexpr int64_t kLo = std::numeric_limits<int32_t>::min();
  constexpr int64_t kHi = std::numeric_limits<int32_t>::max();
  return static_cast<int32_t>(std::min(std::max(batch, kLo), kHi));
}

int64_t address_of(const at::Tensor& t) {
  return static_cast<int64_t>(reinterpret_cast<intptr_t>(t.data_ptr()));
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

// Plans chunks over lists[0] and uploads the table; uploads nothing when every tensor is empty.
// `bad_batch` may be empty (ratio_sums). Call under the tensors' CUDAGuard.
DevicePlan upload_plan(std::initializer_list<at::TensorList> lists, at::TensorList bad_batch) {
  TORCH_INTERNAL_ASSERT(lists.size() >= 1 && lists.size() <= kMaxLists);
  const at::TensorList like = *lists.begin();
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
  TensorMeta* metas = reinterpret_cast<TensorMeta*>(host.data_ptr<int64_t>());
  for (int64_t t = 0; t < plan.num_tensors; ++t) {
    TensorMeta m{};
    bool aligned = true;
    int j = 0;
    for (const at::TensorList& list : lists) {
      m.ptr[j++] = address_of(list[t]);
      aligned = aligned && address_of(list[t]) % (kVec * list[t].element_size()) == 0;
    }
    m.bad_batch = bad_batch.empty() ? 0 : address_of(bad_batch[t]);
    m.vectorised = aligned ? 1 : 0;
    metas[t] = m;
  }
  for (int64_t c = 0; c < plan.num_chunks; ++c) {
    TensorMeta& m = metas[chunks[c].tensor];
    // The kernels rely on aligned chunk starts and on each tensor's chunks being adjacent.
    TORCH_INTERNAL_ASSERT(chunks[c].begin % kVec == 0 && (m.end_chunk == 0 || m.end_chunk == c));
    if (m.end_chunk == 0) {
      m.first_chunk = c;
    }
    m.end_chunk = c + 1;
  }
  std::copy(chunks.begin(), chunks.end(),
            reinterpret_cast<Chunk*>(host.data_ptr<int64_t>() + tensor_words));

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
  sum_partials_kernel<<<blocks, kWarpSize, 0, stream>>>(
      plan.tensors, partials.const_data_ptr<double>(), out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor double_zeros(int64_t n, const at::Tensor& like) {
  return at::zeros({n}, like.options().dtype(at::kDouble));
}

void accumulate_cuda(at::TensorList grads, at::TensorList shifts, at::TensorList sum_dev,
                     at::TensorList sum_sq_dev, at::TensorList sum_abs, at::TensorList bad_batch,
                     int64_t batch, bool initialize) {
  const NvtxRange range("zico_fast::accumulate_");
  constexpr const char* op = "zico_fast::accumulate_";
  check_accumulate_args(op, grads, shifts, sum_dev, sum_sq_dev, sum_abs, bad_batch);

  const c10::cuda::CUDAGuard guard(grads[0].device());
  check_not_capturing(op);
  const DevicePlan plan = upload_plan({grads, shifts, sum_dev, sum_sq_dev, sum_abs}, bad_batch);
  if (plan.num_chunks == 0) {
    return;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType dtype = grads[0].scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "accumulate_cuda", [&] {
    accumulate_kernel<scalar_t><<<plan.blocks, kThreads, 0, stream>>>(
        plan.tensors, plan.chunks, initialize, to_flag_value(batch - 1), to_flag_value(batch));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor ratio_sums_cuda(at::TensorList sum_dev, at::TensorList sum_sq_dev,
                           at::TensorList sum_abs, int64_t count) {
  const NvtxRange range("zico_fast::ratio_sums");
  constexpr const char* op = "zico_fast::ratio_sums";
  check_ratio_sums_args(op, sum_dev, sum_sq_dev, sum_abs, count);

  const c10::cuda::CUDAGuard guard(sum_dev[0].device());
  check_not_capturing(op);
  const DevicePlan plan = upload_plan({sum_dev, sum_sq_dev, sum_abs}, {});
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
  const DevicePlan plan = upload_plan({first, second}, bad_batch);
  if (plan.num_chunks == 0) {
    return double_zeros(plan.num_tensors, second[0]);
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor partials = at::empty({plan.num_chunks}, second[0].options().dtype(at::kDouble));
  const at::ScalarType dtype = second[0].scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "pair_ratio_sums_cuda", [&] {
    pair_ratio_kernel<scalar_t><<<plan.blocks, kThreads, 0, stream>>>(
        plan.tensors, plan.chunks, to_flag_value(batch - 1), to_flag_value(batch),
        partials.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return sum_partials(plan, partials, stream);
}

}  // namespace

TORCH_LIBRARY_IMPL(zico_fast, CUDA, m) {
  m.impl("accumulate_", &accumulate_cuda);
  m.impl("ratio_sums", &ratio_sums_cuda);
  m.impl("pair_ratio_sums", &pair_ratio_sums_cuda);
}

}  // namespace zico_fast
