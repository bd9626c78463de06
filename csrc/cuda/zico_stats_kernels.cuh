// The CUDA kernels of the zico_fast ops and the launch table they read (NOTE: [Launch metadata
// table] in zico_stats_cuda.cu, the only file that includes this one and launches them).
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

#include "../launch_plan.h"
#include "../zico_math.h"
#include "memory_access.cuh"

namespace zico_fast {

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

// NOTE: [Measured variants]
// Two changes a review proposed are compile-time switches, off by default, until a GPU measures
// them (benchmarks/gpu_steps/variants.py builds each and times it beside the default build; keep
// whichever is faster, then delete the switch):
//  ZICO_MIN_BLOCKS_PER_SM=N  the minimum-blocks argument of __launch_bounds__ for the three
//    statistics kernels. accumulate_ (float32/bfloat16) takes 112 registers and ratio_kernel 116,
//    so only 2 blocks of 256 threads fit on an SM; N = 3 caps them at 85 (ptxas may spill).
//  ZICO_HALF_MOMENTS_L1  for float16/bfloat16 gradients (8 per 16-byte load), a thread's 8 float
//    moments are two 16-byte loads 32 bytes apart, so each load instruction of a warp touches 32
//    sectors half-used and the second one fetches the same sectors from L2 again. Read through L1
//    (ld.global.ca) instead of L2 only, the second load hits L1. Safe: within a launch each moment
//    is read and then written by one thread only, and L1 holds no global data across launches.
#ifdef ZICO_MIN_BLOCKS_PER_SM
#define ZICO_STATS_LAUNCH_BOUNDS __launch_bounds__(kThreads, ZICO_MIN_BLOCKS_PER_SM)
#else
#define ZICO_STATS_LAUNCH_BOUNDS __launch_bounds__(kThreads)
#endif
#ifdef ZICO_HALF_MOMENTS_L1
constexpr bool kHalfMomentsThroughL1 = true;
#else
constexpr bool kHalfMomentsThroughL1 = false;
#endif

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
  static constexpr Cache kMoments = kHalfMomentsThroughL1 && sizeof(T) == 2 ? Cache::kL1 : Cache::kL2;
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
      x.d = zico_fast::load<N, kMoments>(sum_dev, i);
      x.s = zico_fast::load<N, kMoments>(sum_sq_dev, i);
      x.a = zico_fast::load<N, kMoments>(sum_abs, i);
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
__global__ void ZICO_STATS_LAUNCH_BOUNDS
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

__global__ void ZICO_STATS_LAUNCH_BOUNDS
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
__global__ void ZICO_STATS_LAUNCH_BOUNDS
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

}  // namespace zico_fast
