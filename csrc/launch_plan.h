// Host-side argument checks and the chunk plan shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace zico_fast {

// One unit of parallel work: elements [begin, end) of tensor `tensor` of a launch.
struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

// Splits every non-empty tensor into chunks of at most `chunk_size` elements, in tensor order,
// so that chunks of one tensor are contiguous in the plan (reductions walk them in order and stay
// deterministic whatever the thread or block scheduling).
inline std::vector<Chunk> plan_chunks(at::TensorList tensors, int64_t chunk_size) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < static_cast<int64_t>(tensors.size()); ++t) {
    const int64_t n = tensors[t].numel();
    for (int64_t begin = 0; begin < n; begin += chunk_size) {
      chunks.push_back(Chunk{t, begin, std::min(n, begin + chunk_size)});
    }
  }
  return chunks;
}

// Runs the lambda with scalar_t bound to the gradient dtype. Only the three dtypes check_gradients
// admits are instantiated (a float64 kernel would be dead code).
#define ZICO_DISPATCH_GRAD_TYPES(TYPE, NAME, ...)                  \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                   \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)     \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)      \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

inline bool is_gradient_dtype(c10::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

// Checks that `group` matches `like` tensor by tensor: same device, same number of elements and
// the same memory layout (the kernels walk raw memory, so strides must agree), and, when
// `dtype` is given, that dtype. `what` names the group in the error message.
inline void check_group_matches(const char* op, const char* what, at::TensorList like,
                                at::TensorList group, c10::optional<c10::ScalarType> dtype) {
  TORCH_CHECK(group.size() == like.size(), op, ": ", what, " has ", group.size(),
              " tensors but the gradients have ", like.size());
  for (size_t i = 0; i < group.size(); ++i) {
    const at::Tensor& t = group[i];
    TORCH_CHECK(t.device() == like[0].device(), op, ": ", what, "[", i, "] is on ", t.device(),
                " but the gradients are on ", like[0].device(), "; move every tensor to one device");
    TORCH_CHECK(t.numel() == like[i].numel(), op, ": ", what, "[", i, "] has ", t.numel(),
                " elements, expected ", like[i].numel());
    TORCH_CHECK(t.is_non_overlapping_and_dense() && t.strides() == like[i].strides(), op, ": ",
                what, "[", i, "] must be dense with the same strides as its gradient; "
                "call .contiguous() on both");
    if (dtype.has_value()) {
      TORCH_CHECK(t.scalar_type() == *dtype, op, ": ", what, "[", i, "] must be ", *dtype,
                  ", got ", t.scalar_type());
    }
  }
}

// Checks a list of gradients: one device, one floating dtype (float32, float16 or bfloat16).
inline void check_gradients(const char* op, at::TensorList grads) {
  TORCH_CHECK(!grads.empty(), op, ": expected at least one gradient tensor");
  const c10::ScalarType dtype = grads[0].scalar_type();
  TORCH_CHECK(is_gradient_dtype(dtype), op, ": gradients must be float32, float16 or bfloat16, got ",
              dtype);
  check_group_matches(op, "gradients", grads, grads, dtype);
}

// The per-tensor "first batch with a non-finite gradient" flags: one int32 element each.
inline void check_bad_batch(const char* op, at::TensorList grads, at::TensorList bad_batch) {
  TORCH_CHECK(bad_batch.size() == grads.size(), op, ": bad_batch has ", bad_batch.size(),
              " tensors but the gradients have ", grads.size());
  for (size_t i = 0; i < bad_batch.size(); ++i) {
    TORCH_CHECK(bad_batch[i].numel() == 1 && bad_batch[i].scalar_type() == at::kInt &&
                    bad_batch[i].device() == grads[0].device(),
                op, ": bad_batch[", i, "] must be a one-element int32 tensor on ", grads[0].device());
  }
}

// The full argument checks of each op, shared by both backends.
inline void check_accumulate_args(const char* op, at::TensorList grads, at::TensorList shifts,
                                  at::TensorList sum_dev, at::TensorList sum_sq_dev,
                                  at::TensorList sum_abs, at::TensorList bad_batch) {
  check_gradients(op, grads);
  check_group_matches(op, "shifts", grads, shifts, grads[0].scalar_type());
  check_group_matches(op, "sum_dev", grads, sum_dev, at::kFloat);
  check_group_matches(op, "sum_sq_dev", grads, sum_sq_dev, at::kFloat);
  check_group_matches(op, "sum_abs", grads, sum_abs, at::kFloat);
  check_bad_batch(op, grads, bad_batch);
}

inline void check_ratio_sums_args(const char* op, at::TensorList sum_dev, at::TensorList sum_sq_dev,
                                  at::TensorList sum_abs, int64_t count) {
  TORCH_CHECK(count >= 2, op, ": need at least 2 samples, got ", count);
  TORCH_CHECK(!sum_dev.empty(), op, ": expected at least one tensor");
  check_group_matches(op, "sum_dev", sum_dev, sum_dev, at::kFloat);
  check_group_matches(op, "sum_sq_dev", sum_dev, sum_sq_dev, at::kFloat);
  check_group_matches(op, "sum_abs", sum_dev, sum_abs, at::kFloat);
}

inline void check_pair_args(const char* op, at::TensorList first, at::TensorList second,
                            at::TensorList bad_batch) {
  check_gradients(op, second);
  check_group_matches(op, "first", second, first, second[0].scalar_type());
  check_bad_batch(op, second, bad_batch);
}

}  // namespace zico_fast
