"""A complete small search space: plain CNNs of three 3x3 conv layers, each 8, 16 or 32 channels wide.
Use it with  zico-fast search --space examples/tiny_space.py:TinySpace --out runs/tiny"""
from random import Random

from torch import nn

from zico_fast.spaces import Cost, SearchSpace

WIDTHS = (8, 16, 32)


class TinySpace(SearchSpace):
    name = "tiny"

    def __init__(self, num_classes: int = 10, resolution: int = 32):
        self.num_classes, self.resolution = num_classes, resolution  # the CLI draws data to fit these

    def canonical(self, arch: str) -> str:
        widths = arch.strip().split("-")
        if len(widths) != 3 or any(w not in map(str, WIDTHS) for w in widths):
            raise ValueError(f"{arch!r}: expected three widths from {WIDTHS} joined by '-', e.g. '8-16-32'")
        return "-".join(widths)

    def widths(self, arch: str) -> list[int]:
        return [int(w) for w in self.canonical(arch).split("-")]

    def initial(self, rng: Random) -> str:
        return "8-8-8"

    def random(self, rng: Random) -> str:
        return "-".join(str(rng.choice(WIDTHS)) for _ in range(3))

    def mutate(self, arch: str, rng: Random, num_blocks: int = 1) -> str:
        widths = self.widths(arch)
        for layer in rng.sample(range(3), min(num_blocks, 3)):
            widths[layer] = rng.choice([w for w in WIDTHS if w != widths[layer]])
        return "-".join(map(str, widths))

    def build(self, arch: str) -> nn.Module:
        layers, channels = [], 3
        for width in self.widths(arch):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, self.num_classes))

    def cost(self, arch: str) -> Cost:
        channels = [3, *self.widths(arch)]
        convs = [a * b * 9 for a, b in zip(channels, channels[1:])]  # weights of each conv
        head = channels[-1] * self.num_classes
        return Cost(params=sum(convs) + 2 * sum(channels[1:]) + head + self.num_classes,
                    flops=sum(convs) * self.resolution ** 2 + head, depth=3)
