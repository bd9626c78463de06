"""Random fuzz cases for scripts/fuzz.py: a model, its batches and how to score it, each fully
determined by its seed (an NB201 or MobileNet-space network, or a random module graph)."""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

import zico_fast
from zico_fast.spaces import get_space
from zico_fast.spaces.base import Cost


class RandomGraph(nn.Module):
    """Convs (plain, strided, depthwise) with optional BN and parallel branches, an unused
    branch, weights tied across same-shape convs, frozen weights, and a dead (zero-scaled) path."""

    def __init__(self, rng: random.Random, classes: int):
        super().__init__()
        width = rng.choice([4, 6, 8])
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks, self.branches = nn.ModuleList(), nn.ModuleList()
        for _ in range(rng.randint(1, 4)):
            stride, kernel = rng.choice([1, 1, 2]), rng.choice([1, 3])
            groups = rng.choice([1, width])
            layers = [nn.Conv2d(width, width, kernel, stride, kernel // 2, groups=groups, bias=rng.random() < 0.5)]
            if rng.random() < 0.6:
                layers.append(nn.BatchNorm2d(width, affine=rng.random() < 0.7))
            self.blocks.append(nn.Sequential(*layers, nn.ReLU()))
            self.branches.append(nn.Conv2d(width, width, 1, stride) if rng.random() < 0.4 else nn.Identity())
        self.unused = nn.Conv2d(width, width, 3)
        self.dead = nn.Linear(width, classes) if rng.random() < 0.2 else None
        self.head = nn.Linear(width, classes)
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d) and m is not self.unused]
        if rng.random() < 0.4:
            a, b = rng.sample(convs, 2) if len(convs) > 1 else (convs[0], convs[0])
            if a.weight.shape == b.weight.shape and a.groups == b.groups:
                b.weight = a.weight
        if rng.random() < 0.3:
            rng.choice(convs).weight.requires_grad_(False)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for block, branch in zip(self.blocks, self.branches):
            x = block(x) + (branch(x) if not isinstance(branch, nn.Identity) else 0)
        x = x.mean((2, 3))
        out = self.head(x)
        return out + 0 * self.dead(x) if self.dead is not None else out


def make_case(seed: int, proxies: tuple[str, ...] = ()):
    """(description, model, batches, analytic cost) for one seed; `proxies` changes only how a
    user-loop case is scored (through compute), never the model or data drawn."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    kind = rng.choices(["nb201", "mobilenet", "graph"], [4, 2, 4])[0]
    classes = 10
    if kind == "nb201":
        space = get_space("nb201", C=rng.choice([4, 8, 16]), N=rng.choice([1, 1, 2, 5]))
        arch = space.random(rng)
        model, size, cost = space.build(arch), rng.choice([8, 16, 16, 32]), space.cost(arch)
    elif kind == "mobilenet":
        space = get_space("mobilenet", num_classes=classes)
        arch = space.random(rng)
        model, size = space.build(arch), rng.choices([32, 64, 96, 224], [10, 5, 2, 1])[0]
        cost = space.cost(arch)
    else:
        model, size = RandomGraph(rng, classes), rng.choice([5, 8, 12])
        cost = Cost(params=sum(p.numel() for p in model.parameters()), flops=0, depth=0)  # no analytic FLOPs
    desc = {"seed": seed, "kind": kind, "size": size}
    dtype = rng.choices([torch.float32, torch.bfloat16, torch.float16], [8, 1, 1])[0]
    if dtype != torch.float32:
        model = model.to(dtype)
    if rng.random() < 0.2:
        model = model.to(memory_format=torch.channels_last)
        desc["channels_last"] = True
    if rng.random() < 0.2:
        model.eval()  # the scorer must use train mode and hand eval mode back
    num_batches = rng.choices([2, 3, 5], [6, 2, 1])[0]
    batch = rng.choice([2, 3, 4]) if size < 96 else 2
    x = torch.randn(num_batches * batch, 3, size, size).to(dtype)
    y = torch.randint(0, classes, (num_batches * batch,))
    poison = rng.random() < 0.1
    if poison:
        x[rng.randrange(len(x)), 0, 0, 0] = rng.choice([math.nan, math.inf])
    if rng.random() < 0.15:  # a DataLoader with an odd batch size and a short last batch
        odd = rng.choice([3, 5])
        batches = list(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=odd))
        desc["loader_batch"] = odd
    else:
        batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(num_batches)]
    if rng.random() < 0.05:  # the same batch values twice: zero spread, which must be reported
        batches = [batches[0], (batches[0][0].clone(), batches[0][1].clone())]
        desc["repeated"] = True
    how = rng.choices(["score", "score_norestore", "user_loop"], [6, 2, 2])[0]
    if how == "user_loop" and (cpu_layout_hazard(model) or proxies):
        how = "score"  # the user's passes would crash inside torch (zico_score must refuse), or the
        # proxies are wanted, which only compute() gives
    desc.update(dtype=str(dtype).split(".")[-1], batches=len(batches), how=how, poison=poison,
                nonfinite=rng.choice(["raise", "nan"]), params=sum(p.numel() for p in model.parameters()))
    return desc, model, batches, cost


def cpu_layout_hazard(model) -> bool:
    """A channels_last model with a strided 1x1 conv: torch's own CPU backward corrupts memory
    there (zico_score refuses it with a clear error; a user loop would crash in torch itself)."""
    return zico_fast.model_state.ModelPlan.build(model, None).cpu_layout_hazard() is not None
