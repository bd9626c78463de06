"""A small CUDA case for compute-sanitizer: every op and kernel variant once, on awkward inputs.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitizer_case.py

Covers: float32/float16/bfloat16; both accumulate_ variants (initialize true/false); ratio_sums;
pair_ratio_sums; sizes below one vector, straddling a chunk, with a tail; an empty tensor; a
misaligned view (the scalar path); many tensors in one call; a tiny Linear-only model scored with
N = 2 (closed form) and N = 3. With the caching allocator off, every tensor is its own cudaMalloc,
so an out-of-bounds access lands outside an allocation and memcheck sees it. Results are checked
against the CPU kernels, so the run also fails on a wrong answer. Exit status 0 when all agree.
No cuDNN (Linear layers only, and cuDNN switched off besides): instrumenting library kernels is
slow and initcheck flags some of them, so benchmarks/gpu_check.sh also filters the sanitizers to
our kernels by name.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import zico_fast  # noqa: E402
from testing import kernel_ratio_sums, random_gradients  # noqa: E402
from zico_fast import _ops  # noqa: E402
from zico_fast.stats import NO_BAD_BATCH  # noqa: E402

SHAPES = [(3,), (4095,), (4097,), (0,), (33, 7), (16, 3, 3, 3)] + [(1 + 37 * i,) for i in range(40)]


def flags(like, device):
    return [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device) for _ in like]


def moments(per_batch, device):
    grads = [[g.to(device) for g in b] for b in per_batch]
    state = [[torch.empty(g.shape, device=device) for g in grads[0]] for _ in range(3)]
    bad = flags(grads[0], device)
    _ops.accumulate_(grads[1], grads[0], *state, bad, 1, True)
    _ops.accumulate_(grads[2], grads[0], *state, bad, 2, False)
    sums = _ops.ratio_sums(*state, 3).cpu()
    pair = _ops.pair_ratio_sums(grads[0], grads[1], flags(grads[0], device), 1).cpu()
    return [t.cpu() for group in state for t in group], sums, pair


def main() -> int:
    assert torch.cuda.is_available() and zico_fast.has_cuda_kernels(), "needs a GPU and the CUDA build"
    torch.backends.cudnn.enabled = False
    failures = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        per_batch = random_gradients(SHAPES, 3, dtype=dtype, seed=1)
        cpu_state, cpu_sums, cpu_pair = moments(per_batch, "cpu")
        gpu_state, gpu_sums, gpu_pair = moments(per_batch, "cuda")
        failures += sum(not torch.equal(a, b) for a, b in zip(cpu_state, gpu_state))
        failures += not torch.allclose(cpu_sums, gpu_sums, rtol=1e-12)
        failures += not torch.allclose(cpu_pair, gpu_pair, rtol=1e-12)
        misaligned = [[g.cuda()[1:] for g in b] for b in random_gradients([(5000,)], 3, dtype=dtype, seed=2)]
        got = kernel_ratio_sums(misaligned)
        want = kernel_ratio_sums([[g.cpu() for g in b] for b in misaligned])
        failures += abs(got[0] - want[0]) > 1e-12 * abs(want[0])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    for num_batches in (2, 3):
        batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))) for _ in range(num_batches)]
        cpu = zico_fast.zico_score(model, batches).score
        gpu = zico_fast.zico_score(model.cuda(), [(x.cuda(), y.cuda()) for x, y in batches]).score
        model.cpu()
        failures += abs(cpu - gpu) > 1e-4 * abs(cpu)  # cuBLAS and CPU matrix products round differently
    # init_weights_'s device path: pinned staging, one copy, fused splits, constant fills by group.
    from zico_fast._ops import init_weights_

    sizes, bounds = [1, 623, 625, 5000], [0.5, 0.25, 1.0, 0.125]
    on_cpu, on_gpu = [torch.empty(n) for n in sizes], [torch.empty(n, device="cuda") for n in sizes]
    constants = [torch.empty(7, device="cuda"), torch.empty((), dtype=torch.long, device="cuda")]
    init_weights_(on_cpu, bounds, [], [], 12345)
    init_weights_(on_gpu, bounds, constants, [1.0, 0.0], 12345)
    failures += sum(not torch.equal(a, b.cpu()) for a, b in zip(on_cpu, on_gpu))
    failures += not (constants[0].eq(1).all() and constants[1].item() == 0)
    torch.cuda.synchronize()
    print(f"sanitizer case: {failures} mismatches against the CPU kernels")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
