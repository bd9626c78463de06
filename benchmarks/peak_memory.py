"""Peak memory of one scoring run, measured in a fresh process: `python peak_memory.py MODE MODEL DEVICE`.

Prints one JSON line: the peak above the level reached after building the model and batches
(CPU: peak RSS from getrusage; CUDA: torch.cuda.max_memory_allocated).
MODE: bare (N plain forward/backward passes), zico (zico_score), reference, authors.
"""
import json
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import zico_fast  # noqa: E402
from test_end_to_end import bare_passes  # noqa: E402
from workloads import MODELS  # noqa: E402
from zico_fast.data import make_batches  # noqa: E402
from zico_fast.reference import authors_zico_score, zico_score_reference  # noqa: E402

RUNNERS = {"bare": bare_passes, "zico": zico_fast.zico_score, "reference": zico_score_reference,
           "authors": authors_zico_score}


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main(mode: str, model_name: str, device: str, batch_size: int = 64, num_batches: int = 2) -> None:
    torch.manual_seed(0)
    model = MODELS[model_name]().to(device)
    batches = make_batches(batch_size=batch_size, num_batches=num_batches, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = current_rss_bytes()
    RUNNERS[mode](model, batches)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "model": model_name, "device": device, "peak_above_setup_mb": (peak - base) / 2**20}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:]))
