// Per-element ZiCo statistics math, written once and shared by the CPU and CUDA kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace zico_fast {

// NOTE: [Shifted sums]
// For every weight element we need, over the N mini-batch gradients g_1..g_N,
//   mean_abs = mean(|g|)            and   std = population std (ddof=0) of the signed g.
// ZiCo's interesting elements have |mean| >> std, where float32 Welford or sum/sum-of-squares
// lose digits. We keep the first gradient K = g_1 as a shift and accumulate, in float32,
//   sum_dev = sum(g - K),  sum_sq_dev = sum((g - K)^2),  sum_abs = sum(|g|).
// g - K is exact when g and K are within a factor of two (Sterbenz), and K is itself a sample,
// so |mean - K| is at most a few std and the final var = sum_sq/N - (sum_dev/N)^2 (done in
// double) cancels only mildly: two-pass accuracy with one streaming pass and additive merges.
//
// NOTE: [Dropped elements]
// The authors drop elements whose numpy float32 std is exactly 0 (no epsilon). That happens when
// every squared float32 deviation underflows to 0, i.e. all samples agree to within ~2.6e-23.
// Squaring the deviations in float32 here reproduces that: sum_sq_dev == 0 means "dropped".
// (numpy measures deviations from the float32 mean, we from K; the two rules can only differ
// for deviations between ~2.6e-23 and ~5.3e-23, far below any real gradient.) Deviations below
// ~1e-19 square to float32 denormals, in numpy as here, so such elements keep only ~4 digits.

struct Moments {
  float sum_dev;
  float sum_sq_dev;
  float sum_abs;
};

// The first two samples: K = first, plus the second one.
C10_HOST_DEVICE inline Moments moments_of_pair(float first, float second) {
  const float dev = second - first;
  return Moments{dev, dev * dev, ::fabsf(first) + ::fabsf(second)};
}

// Adds one more sample g to moments taken relative to the shift K.
C10_HOST_DEVICE inline void add_sample(Moments& m, float g, float shift) {
  const float dev = g - shift;
  m.sum_dev += dev;
  m.sum_sq_dev += dev * dev;
  m.sum_abs += ::fabsf(g);
}

// mean(|g|) / std(g) of one element over `count` samples; 0 for a dropped element.
// NaN in the moments propagates, so a non-finite gradient cannot vanish silently.
C10_HOST_DEVICE inline double element_ratio(const Moments& m, int64_t count) {
  if (m.sum_sq_dev == 0.f) {
    return 0.0;
  }
  const double n = static_cast<double>(count);
  const double mean_dev = static_cast<double>(m.sum_dev) / n;
  const double var = static_cast<double>(m.sum_sq_dev) / n - mean_dev * mean_dev;
  if (var <= 0.0) {
    return 0.0;  // only reachable through rounding: exact arithmetic gives var > 0 here
  }
  return (static_cast<double>(m.sum_abs) / n) / ::sqrt(var);
}

C10_HOST_DEVICE inline bool is_finite(float x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

}  // namespace zico_fast
