"""The three statistics ops on tensors of more than 2^31 elements, against exact expected values.

    python benchmarks/big_tensor_check.py                     # GPU: n = 2^31 + 9 (about 35 GB)
    python benchmarks/big_tensor_check.py --device cpu --n 12297   # the same code path, small (CI)

The kernels index with int64 by reading; this runs them where an int32 index would wrap.

Data (float16, one tensor each): first = 1 everywhere, second = 3 everywhere except three markers,
at the element just below the boundary B = n - 9 (B = 2^31 for the default n), at B, and at the
last element n - 1 (the scalar tail: 9 = one 8-half vector + 1):
    second[B - 1] = 2,   second[B] = 5,   second[n - 1] = 1.5.
Derivation of the expected sums. With N = 2 each element's ratio is (|g1| + |g2|) / |g2 - g1|
(csrc/zico_math.h, pair_ratio), so first = 1 and second = s give (1 + s) / |s - 1|:
    s = 3: 4 / 2 = 2;   s = 2: 3 / 1 = 3;   s = 5: 6 / 4 = 1.5;   s = 1.5: 2.5 / 0.5 = 5.
The sum is 2 (n - 3) + 3 + 1.5 + 5 = 2 n + 3.5. Every term and partial sum is a multiple of 0.5
below 2^53, so float64 adds them exactly in any order: the result must equal 2 n + 3.5 exactly.
A dropped marker (a chunk skipped or an index wrapped) or one read twice changes it by >= 1.5.
accumulate_(grads=second, shifts=first, initialize) stores per element d = s - 1, d^2 and
1 + |s|; ratio_sums with count 2 computes (1 + |s|) / sqrt(2 d^2 - d^2) = the same (1 + s) / |s - 1|,
so ratio_sums of those moments (float32 tensors of n elements) must also be exactly 2 n + 3.5.
Then second[n - 1] = NaN: pair_ratio_sums and the moments' ratio_sums must be NaN and both ops
must flag batch 1 (the NaN is in `grads`/`second`, charged to the batch given); the flags of the
finite run must stay NO_BAD_BATCH. Exit status 0 when every check holds.
"""
import argparse
import math
import sys

import torch

import zico_fast  # noqa: F401  (loads the ops)
from zico_fast import _ops
from zico_fast.stats import NO_BAD_BATCH

GPU_N = 2**31 + 9
TAIL = 9  # elements after the boundary: one vector of 8 halves plus one scalar


def flag(device):
    return [torch.full((1,), NO_BAD_BATCH, dtype=torch.int32, device=device)]


def make_pair(n, device):
    """first = 1, second = 3 with the markers of the docstring."""
    boundary = n - TAIL
    first = torch.ones(n, dtype=torch.float16, device=device)
    second = torch.full((n,), 3.0, dtype=torch.float16, device=device)
    second[boundary - 1], second[boundary], second[n - 1] = 2.0, 5.0, 1.5
    return first, second


def expected_sum(n):
    return 2.0 * n + 3.5


def moment_bytes(n):
    return 3 * 4 * n  # three float32 moment tensors


def run_checks(n, device, with_moments):
    """Returns a list of (check name, passed, detail)."""
    results = []

    def check(name, passed, detail):
        results.append((name, bool(passed), detail))
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}", flush=True)

    first, second = make_pair(n, device)
    want = expected_sum(n)
    pair_flag = flag(device)
    got = _ops.pair_ratio_sums([first], [second], pair_flag, 1).item()
    check("pair_ratio_sums finite", got == want, f"{got!r} (want {want!r})")
    check("pair_ratio_sums flag finite", pair_flag[0].item() == NO_BAD_BATCH, f"{pair_flag[0].item()}")

    moments = None
    if with_moments:
        moments = [torch.empty(n, dtype=torch.float32, device=device) for _ in range(3)]
        acc_flag = flag(device)
        _ops.accumulate_([second], [first], *[[m] for m in moments], acc_flag, 1, True)
        got = _ops.ratio_sums(*[[m] for m in moments], 2).item()
        check("accumulate_ + ratio_sums finite", got == want, f"{got!r} (want {want!r})")
        check("accumulate_ flag finite", acc_flag[0].item() == NO_BAD_BATCH, f"{acc_flag[0].item()}")

    second[n - 1] = float("nan")
    pair_flag = flag(device)
    got = _ops.pair_ratio_sums([first], [second], pair_flag, 1).item()
    check("pair_ratio_sums NaN tail", math.isnan(got), f"{got!r} (want nan)")
    check("pair_ratio_sums flag NaN tail", pair_flag[0].item() == 1, f"{pair_flag[0].item()} (want 1)")
    if moments is not None:
        acc_flag = flag(device)
        _ops.accumulate_([second], [first], *[[m] for m in moments], acc_flag, 1, True)
        got = _ops.ratio_sums(*[[m] for m in moments], 2).item()
        check("accumulate_ + ratio_sums NaN tail", math.isnan(got), f"{got!r} (want nan)")
        check("accumulate_ flag NaN tail", acc_flag[0].item() == 1, f"{acc_flag[0].item()} (want 1)")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=GPU_N, help="elements per tensor (> 2^31 on a GPU)")
    args = parser.parse_args(argv)
    if args.n < TAIL + 1:
        parser.error(f"--n must be at least {TAIL + 1}")
    device = torch.device(args.device)
    # The half pair needs 4 n bytes; the moments 12 n more. Without room for the moments the
    # pair is still checked and the moments are reported as skipped (not as passed).
    with_moments = True
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        print(f"device {torch.cuda.get_device_name(device)}: {free / 1e9:.1f} of {total / 1e9:.1f} GB free; "
              f"n = {args.n} (2^31 + {args.n - 2**31})", flush=True)
        if 4 * args.n > 0.9 * free:
            print(f"SKIPPED: the two float16 tensors need {4 * args.n / 1e9:.1f} GB", flush=True)
            return 0
        with_moments = 4 * args.n + moment_bytes(args.n) < 0.9 * free
        if not with_moments:
            print(f"SKIPPED accumulate_ + ratio_sums: the moments need {moment_bytes(args.n) / 1e9:.1f} GB more",
                  flush=True)
    results = run_checks(args.n, device, with_moments)
    failed = [name for name, passed, _ in results if not passed]
    print(f"big tensor check: {len(results) - len(failed)} of {len(results)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
