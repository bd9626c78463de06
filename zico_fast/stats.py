"""Streaming per-element gradient statistics of a fixed list of weights, fed as backward runs."""
from __future__ import annotations

from collections import defaultdict

import torch

from zico_fast import _ops

NO_BAD_BATCH = 2**31 - 1  # bad_batch flag value meaning "every gradient so far was finite"


def _is_dense(t: torch.Tensor) -> bool:
    """Dense layouts the kernels can walk as flat memory (autograd produces these for weights)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


class GradientStatistics:
    """Holds, per weight, the moments of its gradients over batches (see csrc/zico_math.h).

    The first gradient of a weight is kept as the shift K: a reference to the gradient tensor
    itself, not a copy. Later gradients are queued and consumed by one multi-tensor kernel call per
    bucket (when the queue reaches `bucket_bytes`) or at the end of the batch, and then dropped,
    so no per-batch gradient copy outlives the batch. When a weight's second gradient is known to
    be its last one (N = 2), the closed form turns the pair into its ratio sum directly and no
    moments are ever allocated.
    """

    def __init__(self, num_tensors: int, bucket_bytes: int = 25 * 2**20, num_batches: int | None = None):
        self.num_tensors = num_tensors
        self.bucket_bytes = bucket_bytes
        self.num_batches = num_batches  # when known to be 2, the second batch uses the closed form
        self.batch = 0  # index of the batch whose gradients arrive now
        self.count = [0] * num_tensors  # samples consumed per weight
        self.shift: list[torch.Tensor | None] = [None] * num_tensors
        self.moments: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * num_tensors
        self.pair_sum: list[torch.Tensor | None] = [None] * num_tensors
        self._bad_flags: dict[torch.device, torch.Tensor] = {}
        self._bad_flag_views: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._pending_bytes = 0

    def bad_flags(self, indices: list[int], device: torch.device) -> list[torch.Tensor]:
        """The one-element int32 views that record each weight's first non-finite batch."""
        if device not in self._bad_flags:
            table = torch.full((self.num_tensors,), NO_BAD_BATCH, dtype=torch.int32, device=device)
            self._bad_flags[device] = table
            self._bad_flag_views[device] = table.split(1)  # made once: views cost microseconds each
        views = self._bad_flag_views[device]
        return [views[i] for i in indices]

    def add(self, index: int, grad: torch.Tensor) -> None:
        """Consumes the current batch's gradient of weight `index` (the caller may drop it after)."""
        if self.count[index] == 0:
            self.shift[index] = grad if _is_dense(grad) else grad.contiguous()
            self.count[index] = 1
            return
        if self.pair_sum[index] is not None:
            raise RuntimeError(
                "zico_fast: a weight received a third gradient after ZiCo was told there are only 2 "
                "batches; pass the right num_batches (or None) to ZiCo"
            )
        self._pending.append((index, self._match_layout(grad, self.shift[index])))
        self._pending_bytes += grad.numel() * grad.element_size()
        if self._pending_bytes >= self.bucket_bytes:
            self.flush()

    @staticmethod
    def _match_layout(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # The kernels walk raw memory, so a gradient must share its shift's strides; autograd's
        # layout contract makes this the rule, the copy below the rare exception.
        if grad.stride() == like.stride() and grad.dtype == like.dtype:
            return grad
        return torch.empty_like(like).copy_(grad)

    def flush(self) -> None:
        """Runs the kernels on every queued gradient, one call per (device, dtype, kind) group."""
        groups: dict[tuple, list[tuple[int, torch.Tensor]]] = defaultdict(list)
        pair_is_final = self.num_batches == 2 and self.batch == 1
        for index, grad in self._pending:
            if self.count[index] == 1:
                kind = "pair" if pair_is_final else "init"
            else:
                kind = "add"
            groups[(grad.device, grad.dtype, kind)].append((index, grad))
        self._pending, self._pending_bytes = [], 0
        for (device, _, kind), items in groups.items():
            indices = [i for i, _ in items]
            grads = [g for _, g in items]
            shifts = [self.shift[i] for i in indices]
            flags = self.bad_flags(indices, device)
            if kind == "pair":
                sums = _ops.pair_ratio_sums(shifts, grads, flags, self.batch).unbind()
                for j, i in enumerate(indices):
                    self.pair_sum[i] = sums[j]
                    self.shift[i] = None  # the closed form needs nothing more of the first gradient
            else:
                if kind == "init":
                    for i, g in zip(indices, grads):
                        # empty_like keeps the gradient's layout (channels_last too), as the kernels need
                        self.moments[i] = tuple(torch.empty_like(g, dtype=torch.float32) for _ in range(3))
                dev, sq, ab = (list(m) for m in zip(*(self.moments[i] for i in indices)))
                _ops.accumulate_(grads, shifts, dev, sq, ab, flags, self.batch, kind == "init")
            for i in indices:
                self.count[i] += 1

    def end_batch(self) -> None:
        """Called once the batch's backward has finished: consumes what is queued."""
        self.flush()
        self.batch += 1

    def ratio_sums(self, indices: list[int]) -> dict[int, torch.Tensor]:
        """Per weight of `indices` (all with count >= 2), the 0-d float64 sum of its kept ratios."""
        self.flush()
        out = {i: self.pair_sum[i] for i in indices if self.pair_sum[i] is not None}
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in indices:
            if i not in out:
                groups[(self.moments[i][0].device, self.count[i])].append(i)
        for (_, count), members in groups.items():
            dev, sq, ab = (list(m) for m in zip(*(self.moments[i] for i in members)))
            sums = _ops.ratio_sums(dev, sq, ab, count).unbind()
            out.update(zip(members, sums))
        return out

    def bad_batches(self, indices: list[int], device: torch.device) -> torch.Tensor:
        """int32 [len(indices)] on `device`: each weight's first non-finite batch, or NO_BAD_BATCH."""
        flags = torch.full((len(indices),), NO_BAD_BATCH, dtype=torch.int32, device=device)
        for table in self._bad_flags.values():
            flags = torch.minimum(flags, table[indices].to(device))
        return flags
