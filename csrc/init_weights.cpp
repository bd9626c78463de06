// init_weights_: a network's default initialisation in one call, bit for bit what PyTorch's
// constructors draw after torch.manual_seed(seed).
//
// NOTE: [Why a second Mersenne Twister]
// A search builds one network per candidate, and drawing its weights with Tensor.uniform_ costs
// about 4-6 ns per number plus a dispatch per tensor: 1-3 ms for an NB201 cell, more than all the
// rest of the search loop. torch's CPU generator is MT19937 (seeded with the low 32 bits of the
// seed) and uniform_ on a float32 CPU tensor turns each 32-bit output y into
//   x = (y & 0xFFFFFF) * 2^-24;  v = x * (to - from) + from;  v == to ? from : v
// in float arithmetic, one output per element, tensor after tensor. This file generates the same
// stream a block of 624 words at a time, in loops the compiler vectorises, and applies the same
// float arithmetic (see convert_words; tests/test_fast_build.py compares against uniform_ itself).
// The global generator is never touched.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace zico_fast {
namespace {

constexpr int kStateWords = 624;
constexpr int kShift = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfu;
constexpr uint32_t kUpper = 0x80000000u;
constexpr uint32_t kLower = 0x7fffffffu;

// Tempering, then uniform_'s arithmetic. torch's CPU kernel computes x * (to - from) + from with a
// fused multiply-add (its vectorised builds contract it), so this does too: with the instruction
// where the CPU has it (compiled for it, chosen at run time), else with the exact library fmaf.
//
// kSymmetric: from = -b, to = b, with (to - from) * 2^-24 a normal float, which every bound drawn
// here is. Two exact shortcuts then save a fifth of the conversion's instructions (~15% of a draw):
// - the scale: fma(k * 2^-24, range, from) == fma(k, range * 2^-24, from), since both products are
//   exact (k < 2^24, and a power-of-two scaling of a normal float) and the fma rounds once, after
//   the add;
// - the guard: v == to cannot happen. The largest x is 1 - 2^-24, so the exact result is at most
//   b - b * 2^-23 <= b - ulp(b), itself a float below b, and rounding is monotonic.
// Anything else takes the literal path (b = 0, for one: there torch 2.13's guard turns +0 into from = -0).
template <bool kHardware, bool kSymmetric>
inline void convert_words(const uint32_t* words, float* out, int64_t k, float from, float to) {
  constexpr float kScale = 1.0f / 16777216.0f;
  const float range = to - from;
  const float scaled_range = range * kScale;
  for (int64_t j = 0; j < k; ++j) {
    uint32_t y = words[j];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    // y < 2^24 fits an int32: the signed conversion is one vector instruction, the unsigned is not
    const float k24 = static_cast<float>(static_cast<int32_t>(y & 0xffffffu));
    if (kSymmetric) {
      out[j] = kHardware ? __builtin_fmaf(k24, scaled_range, from) : std::fma(k24, scaled_range, from);
    } else {
      const float x = k24 * kScale;
      const float v = kHardware ? __builtin_fmaf(x, range, from) : std::fma(x, range, from);
      out[j] = v == to ? from : v;
    }
  }
}

inline bool is_symmetric(float from, float to) {
  return from == -to && to > 0.0f && std::isnormal((to - from) * (1.0f / 16777216.0f));
}

inline uint32_t twist(uint32_t current, uint32_t following, uint32_t shifted) {
  const uint32_t y = (current & kUpper) | (following & kLower);
  return shifted ^ (y >> 1) ^ ((following & 1u) ? kMatrixA : 0u);
}

// The 624-word state update in three loops without a modulo, so each vectorises: word i reads
// word i + 397, which is an old word for i < 227 and a word this pass already rewrote after.
inline void next_state_words(uint32_t* s) {
  for (int i = 0; i < kStateWords - kShift; ++i) s[i] = twist(s[i], s[i + 1], s[i + kShift]);
#pragma GCC ivdep
  for (int i = kStateWords - kShift; i < kStateWords - 1; ++i) s[i] = twist(s[i], s[i + 1], s[i + kShift - kStateWords]);
  s[kStateWords - 1] = twist(s[kStateWords - 1], s[0], s[kShift - 1]);
}

#if defined(__x86_64__)
bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
  return yes;
}
__attribute__((target("avx2"))) void next_state_avx2(uint32_t* s) { next_state_words(s); }
void next_state(uint32_t* s) {
  if (has_avx2_fma()) {
    next_state_avx2(s);
  } else {
    next_state_words(s);
  }
}
template <bool kSymmetric>
__attribute__((target("avx2,fma"))) void convert_fma(const uint32_t* w, float* out, int64_t k, float from, float to) {
  convert_words<true, kSymmetric>(w, out, k, from, to);
}
void convert(const uint32_t* w, float* out, int64_t k, float from, float to) {
  const bool symmetric = is_symmetric(from, to);
  if (has_avx2_fma()) {
    symmetric ? convert_fma<true>(w, out, k, from, to) : convert_fma<false>(w, out, k, from, to);
  } else {
    symmetric ? convert_words<false, true>(w, out, k, from, to) : convert_words<false, false>(w, out, k, from, to);
  }
}
#else
void next_state(uint32_t* s) { next_state_words(s); }
void convert(const uint32_t* w, float* out, int64_t k, float from, float to) {  // std::fma is an instruction on aarch64
  is_symmetric(from, to) ? convert_words<false, true>(w, out, k, from, to) : convert_words<false, false>(w, out, k, from, to);
}
#endif

class MersenneStream {
 public:
  explicit MersenneStream(int64_t seed) {
    state_[0] = static_cast<uint32_t>(static_cast<uint64_t>(seed) & 0xffffffffu);
    for (int j = 1; j < kStateWords; ++j) {
      state_[j] = 1812433253u * (state_[j - 1] ^ (state_[j - 1] >> 30)) + static_cast<uint32_t>(j);
    }
  }

  // Fills out[0..n) as uniform_(from, to) would, consuming n outputs of the stream.
  void fill_uniform(float* out, int64_t n, float from, float to) {
    while (n > 0) {
      if (next_ == kStateWords) regenerate();
      const int64_t k = std::min<int64_t>(kStateWords - next_, n);
      convert(state_ + next_, out, k, from, to);
      out += k;
      n -= k;
      next_ += static_cast<int>(k);
    }
  }

 private:
  void regenerate() {
    next_state(state_);
    next_ = 0;
  }

  uint32_t state_[kStateWords];
  int next_ = kStateWords;
};

void check_targets(const at::TensorList tensors, const char* what, const at::Device device) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.device() == device, "init_weights_: ", what, "[", i, "] is on ", t.device(),
                ", the others on ", device);
    TORCH_CHECK(t.is_contiguous(), "init_weights_: ", what, "[", i, "] must be contiguous");
  }
}

// uniform[i] <- U[-bounds[i], bounds[i]) from one MT19937 stream, in list order (the order the
// constructors draw in); constant[i] <- values[i] (float32 or int64 tensors), drawing nothing.
void init_weights_(at::TensorList uniform, at::ArrayRef<double> bounds, at::TensorList constant,
                   at::ArrayRef<double> values, int64_t seed) {
  TORCH_CHECK(uniform.size() == bounds.size(), "init_weights_: ", uniform.size(), " uniform tensors but ",
              bounds.size(), " bounds");
  TORCH_CHECK(constant.size() == values.size(), "init_weights_: ", constant.size(), " constant tensors but ",
              values.size(), " values");
  // Without a tensor there is no device to pick (and constant[0] would read past an empty list).
  TORCH_CHECK(!uniform.empty() || !constant.empty(),
              "init_weights_: both tensor lists are empty; pass at least one tensor "
              "(zico_fast._ops.init_weights_ skips the call when there is nothing to initialise)");
  const at::Tensor& first = uniform.empty() ? constant[0] : uniform[0];
  const at::Device device = first.device();
  check_targets(uniform, "uniform", device);
  check_targets(constant, "constant", device);
  for (size_t i = 0; i < uniform.size(); ++i) {
    TORCH_CHECK(uniform[i].scalar_type() == at::kFloat, "init_weights_: uniform[", i, "] must be float32");
  }
  MersenneStream stream(seed);
  if (device.is_cpu()) {
    for (size_t i = 0; i < uniform.size(); ++i) {
      const float bound = static_cast<float>(bounds[i]);
      stream.fill_uniform(uniform[i].data_ptr<float>(), uniform[i].numel(), -bound, bound);
      uniform[i].unsafeGetTensorImpl()->bump_version();
    }
    for (size_t i = 0; i < constant.size(); ++i) {
      const at::Tensor& t = constant[i];
      if (t.scalar_type() == at::kFloat) {
        std::fill_n(t.data_ptr<float>(), t.numel(), static_cast<float>(values[i]));
      } else {
        TORCH_CHECK(t.scalar_type() == at::kLong, "init_weights_: constant[", i, "] must be float32 or int64");
        std::fill_n(t.data_ptr<int64_t>(), t.numel(), static_cast<int64_t>(values[i]));
      }
      t.unsafeGetTensorImpl()->bump_version();
    }
    return;
  }
  // Another device: the same numbers into one pinned host buffer, one asynchronous copy, then
  // fused per-tensor copies (the caching host allocator keeps the buffer until the copy is done).
  if (!uniform.empty()) {
    int64_t total = 0;
    for (const at::Tensor& t : uniform) total += t.numel();
    at::Tensor staging = at::empty({total}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    float* out = staging.data_ptr<float>();
    for (size_t i = 0; i < uniform.size(); ++i) {
      const float bound = static_cast<float>(bounds[i]);
      stream.fill_uniform(out, uniform[i].numel(), -bound, bound);
      out += uniform[i].numel();
    }
    const at::Tensor on_device = staging.to(device, /*non_blocking=*/true);
    std::vector<at::Tensor> sources;
    sources.reserve(uniform.size());
    int64_t offset = 0;
    for (const at::Tensor& t : uniform) {
      sources.push_back(on_device.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
    at::_foreach_copy_(uniform, sources);
  }
  // Constants by value and dtype: zero every group, then add its value (exact for these values).
  std::vector<std::pair<std::pair<double, int>, std::vector<at::Tensor>>> groups;
  for (size_t i = 0; i < constant.size(); ++i) {
    const std::pair<double, int> key{values[i], static_cast<int>(constant[i].scalar_type())};
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == key; });
    if (it == groups.end()) {
      groups.push_back({key, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(constant[i]);
  }
  for (auto& [key, tensors] : groups) {
    at::_foreach_zero_(tensors);
    if (key.first != 0.0) at::_foreach_add_(tensors, at::Scalar(key.first));
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(zico_fast, CompositeExplicitAutograd, m) { m.impl("init_weights_", &init_weights_); }

}  // namespace zico_fast
