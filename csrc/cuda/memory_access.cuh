// Device helpers of the CUDA kernels: 16-byte vector loads and stores with a chosen cache policy,
// and deterministic warp/block sums.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace zico_fast {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
// The widest load one thread issues in one instruction.
constexpr int kLoadBytes = 16;

// Elements of T moved by one 16-byte load: 4 float32, 8 float16/bfloat16.
template <typename T>
constexpr int kVecOf = kLoadBytes / static_cast<int>(sizeof(T));

// N consecutive elements. Aligned to their size up to 16 bytes, so a Pack of up to 16 bytes is
// one load; a larger one (8 float32 moments beside 8 half gradients) is several 16-byte loads.
template <typename T, int N>
struct alignas(sizeof(T) * N < kLoadBytes ? sizeof(T) * N : kLoadBytes) Pack {
  T v[N];
};

// How a load should treat the caches:
//  kL2        cached in L2 only (ld.global.cg): data the kernel also writes, the moments of
//             accumulate_; no block reads an element twice, so L1 would only be polluted;
//  kReadOnly  read-only path (ld.global.nc): data read by every call, like the shift K;
//  kStreaming evict-first (ld.global.cs): data each call reads once (new gradients, final moments),
//             so it does not push the moments and shifts of a small network out of L2;
//  kL1        cached in L1 and L2 (ld.global.ca): only for the ZICO_HALF_MOMENTS_L1 variant of
//             NOTE: [Measured variants] in zico_stats_kernels.cuh.
enum class Cache { kL2, kReadOnly, kStreaming, kL1 };

// The integer word one instruction moves for a Pack of `Bytes` bytes.
template <int Bytes>
using WordOf = std::conditional_t<
    Bytes >= 16, uint4,
    std::conditional_t<Bytes == 8, uint2, std::conditional_t<Bytes == 4, unsigned int, unsigned short>>>;

template <Cache C, typename W>
__device__ __forceinline__ W load_word(const W* p) {
  if constexpr (C == Cache::kStreaming) {
    return __ldcs(p);
  } else if constexpr (C == Cache::kReadOnly) {
    return __ldg(p);
  } else if constexpr (C == Cache::kL1) {
    return __ldca(p);
  } else {
    return __ldcg(p);
  }
}

// Elements [i, i + N) of p, which must be aligned as Pack<T, N> is.
template <int N, Cache C, typename T>
__device__ __forceinline__ Pack<T, N> load(const T* p, int64_t i) {
  using P = Pack<T, N>;
  using W = WordOf<static_cast<int>(sizeof(P))>;
  constexpr int kWords = sizeof(P) / sizeof(W);
  static_assert(sizeof(P) % sizeof(W) == 0, "a Pack is a whole number of words");
  const W* src = reinterpret_cast<const W*>(p + i);
  W words[kWords];
#pragma unroll
  for (int w = 0; w < kWords; ++w) {
    words[w] = load_word<C>(src + w);
  }
  P out;
  memcpy(&out, words, sizeof(P));  // a register move, not a memory copy
  return out;
}

// Stores to L2 (st.global.cg). The explicit global instructions matter: the pointers come from an
// int64 table, so plain dereferences would compile to slower generic-address LD/ST.
template <int N, typename T>
__device__ __forceinline__ void store(T* p, int64_t i, const Pack<T, N>& x) {
  using P = Pack<T, N>;
  using W = WordOf<static_cast<int>(sizeof(P))>;
  constexpr int kWords = sizeof(P) / sizeof(W);
  W words[kWords];
  memcpy(words, &x, sizeof(P));
  W* dst = reinterpret_cast<W*>(p + i);
#pragma unroll
  for (int w = 0; w < kWords; ++w) {
    __stcg(dst + w, words[w]);
  }
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum over a block of kThreads with a fixed reduction tree, so the result is bitwise
// reproducible; valid in thread 0. Every thread of the block must call it, once per kernel.
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

}  // namespace zico_fast
