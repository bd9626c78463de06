"""A short, NVTX-annotated scoring loop to run under Nsight Systems or Nsight Compute.

    python benchmarks/profile.py --model resnet18-11M --device cuda --candidates 3

Ranges: zico/candidate, zico/forward, zico/backward, zico/statistics (the fused update at the end
of each backward; C++ ranges zico_fast::<op> inside it), zico/finalize. See benchmarks/README.md.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import zico_fast  # noqa: E402
from workloads import MODELS  # noqa: E402
from zico_fast.data import make_batches  # noqa: E402
from zico_fast.nvtx import nvtx_range  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="nb201-1.5M")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=3, help="scoring runs after one warm-up run")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MODELS[args.model]().to(args.device)
    batches = make_batches(batch_size=args.batch_size, num_batches=args.batches, device=args.device)
    zico_fast.zico_score(model, batches)  # warm-up: allocator, kernels, autotuning
    for index in range(args.candidates):
        start = time.perf_counter()
        with nvtx_range(f"zico/candidate {index}"):
            result = zico_fast.zico_score(model, batches)
        print(f"candidate {index}: score {result.score:.6f} in {time.perf_counter() - start:.4f} s")


if __name__ == "__main__":
    main()
