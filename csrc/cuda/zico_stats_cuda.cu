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
#include "zico_stats_kernels.cuh"

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
