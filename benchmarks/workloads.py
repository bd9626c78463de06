"""Models, gradients and the statistics implementations the benchmarks compare, in one place."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zico_fast.reference import AuthorsStatistics, ForeachStatistics, ReferenceStatistics
from zico_fast.spaces.nb201 import NB201Space
from zico_fast.stats import GradientStatistics

# The largest NAS-Bench-201 cell: 1.53M parameters in 291 tensors (every edge a 3x3 conv).
NB201_LARGEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
# A mid-sized cell: about 0.5M parameters, the typical NB201 network.
NB201_TYPICAL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"


def _basic_block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def resnet18_like(num_classes: int = 10) -> nn.Module:
    """ResNet-18's convolution stack without skip connections (11.2M parameters, same tensors)."""
    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_basic_block(cin, cout, stride), _basic_block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


def wide_linear_stack(width: int = 3584, depth: int = 8, num_classes: int = 10) -> nn.Module:
    """A stack of wide Linear layers: about 100M parameters in few, large tensors."""
    layers = [nn.Flatten(), nn.Linear(3 * 32 * 32, width)]
    for _ in range(depth - 1):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(width, num_classes))


MODELS = {
    "nb201-0.5M": lambda: NB201Space().build(NB201_TYPICAL),
    "nb201-1.5M": lambda: NB201Space().build(NB201_LARGEST),
    "resnet18-11M": resnet18_like,
    "linear-100M": wide_linear_stack,
}


def weight_shapes(model: nn.Module) -> list[torch.Size]:
    """Shapes of the weights ZiCo scores (Conv2d and Linear) in `model`."""
    return [m.weight.shape for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def gradient_sets(shapes, device, count: int = 2, seed: int = 0) -> list[list[torch.Tensor]]:
    """`count` distinct sets of random gradients; a benchmark cycles through them."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return [[torch.randn(s, device=device, generator=gen) * 1e-3 for s in shapes] for _ in range(count)]


class FusedStatistics:
    """zico_fast's kernels through GradientStatistics, behind the references' update/ratio_sums API."""

    def __init__(self, num_batches: int):
        self.num_batches = num_batches
        self.stats = None

    def update(self, grads):
        if self.stats is None:
            self.stats = GradientStatistics(len(grads), num_batches=self.num_batches)
        for index, grad in enumerate(grads):
            self.stats.add(index, grad)
        self.stats.end_batch()

    def ratio_sums(self):
        return self.stats.ratio_sums(list(range(self.stats.num_tensors)))


IMPLEMENTATIONS = {
    "fused": FusedStatistics,
    "reference": lambda n: ReferenceStatistics(),
    "foreach": lambda n: ForeachStatistics(),
    "authors": lambda n: AuthorsStatistics(),
}


def run_statistics(name: str, grad_sets, num_batches: int, device) -> torch.Tensor:
    """Feeds `num_batches` gradient sets to implementation `name` and finalises (host sync included)."""
    stats = IMPLEMENTATIONS[name](num_batches)
    for n in range(num_batches):
        stats.update(grad_sets[n % len(grad_sets)])
    sums = stats.ratio_sums().cpu()
    if device == "cuda":
        torch.cuda.synchronize()
    return sums


def bare_passes(model: nn.Module, batches) -> None:
    """The baseline every scorer is timed against: train(), then per batch zero_grad + forward +
    cross-entropy + backward, with the gradients dropped at the end (the passes ZiCo needs, nothing else)."""
    model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
