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
#if defined(__CUDA_ARCH__)
  // nvcc would contract this into an FMA (one rounding instead of two): round like the CPU does.
  m.sum_sq_dev = __fadd_rn(m.sum_sq_dev, __fmul_rn(dev, dev));
#else
  m.sum_sq_dev += dev * dev;
#endif
  m.sum_abs += ::fabsf(g);
}

// mean(|g|) / std(g) of one element over `count` samples; 0 for a dropped element.
// With q = count * sum_sq_dev - sum_dev^2 = count^2 * var, the ratio (sum_abs / count) / std is
// sum_abs / sqrt(q): one square root and one division. sum_dev^2 and count * sum_sq_dev are exact
// in double, so q carries a single rounding. Branch-free so the CPU loops vectorise; NaN in the
// moments propagates (NaN <= 0 is false), so a non-finite gradient cannot vanish silently.
C10_HOST_DEVICE inline double element_ratio(const Moments& m, double count) {
  const double dev = static_cast<double>(m.sum_dev);
  const double q = count * static_cast<double>(m.sum_sq_dev) - dev * dev;
  const double ratio = static_cast<double>(m.sum_abs) / ::sqrt(q);
  // q <= 0 with sum_sq_dev > 0 is only reachable through rounding (exact arithmetic gives q > 0).
  const bool dropped = m.sum_sq_dev == 0.f || q <= 0.0;
  return dropped ? 0.0 : ratio;
}

// The N = 2 closed form, (|g1| + |g2|) / |g1 - g2|, with the same drop rule as element_ratio of
// moments_of_pair(first, second) (the squared float32 deviation underflows to 0).
C10_HOST_DEVICE inline double pair_ratio(float first, float second) {
  const float dev = second - first;
  const double ratio =
      (static_cast<double>(::fabsf(first)) + static_cast<double>(::fabsf(second))) / ::fabs(static_cast<double>(dev));
  return dev * dev == 0.f ? 0.0 : ratio;
}

// fabs(NaN) <= max is false, fabs(inf) <= max is false: a compare the CPU loops can vectorise.
C10_HOST_DEVICE inline bool is_finite(float x) {
  return ::fabsf(x) <= 3.402823466e+38f;
}

}  // namespace zico_fast
