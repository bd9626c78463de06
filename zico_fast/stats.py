"""Streaming per-element gradient statistics of a fixed list of weights, fed as backward runs."""
from __future__ import annotations

import threading
from collections import defaultdict

import torch

from zico_fast import _ops
from zico_fast.errors import ZiCoUserError

NO_BAD_BATCH = 2**31 - 1  # bad_batch flag value meaning "every gradient so far was finite"

# Flag tables of finished statistics, for reuse: splitting a fresh table into one-element views
# costs about a microsecond per weight, a real share of scoring a small network.
_flag_pool: dict[tuple[torch.device, int], list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]] = {}


def _is_dense(t: torch.Tensor) -> bool:
    """Dense layouts the kernels can walk as flat memory (autograd produces these for weights)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _producer_stream(t: torch.Tensor):
    """The stream `t` is being produced on (CUDA only): where the caller's hook runs now."""
    return torch.cuda.current_stream(t.device) if t.is_cuda else None


class GradientStatistics:
    """Holds, per weight, the moments of its gradients over batches (see csrc/zico_math.h).

    The first gradient of a weight is kept as the shift K: a reference to the gradient tensor
    itself, not a copy. Later gradients are queued and consumed by one multi-tensor kernel call per
    bucket (when the queue reaches `bucket_bytes`) or at the end of the batch, and then dropped,
    so no per-batch gradient copy outlives the batch. When a weight's second gradient is known to
    be its last one (N = 2), the closed form turns the pair into its ratio sum directly and no
    moments are ever allocated.

    `add` may be called from several autograd device threads at once (a model spread over GPUs):
    the queue is swapped under a lock, so no gradient is lost between reading and resetting it.
    On CUDA a gradient made on another stream than the one that consumes it is waited for and
    `record_stream`ed onto the consumer, so the allocator never reuses it while a kernel reads it.
    """

    def __init__(self, num_tensors: int, bucket_bytes: int = 25 * 2**20, num_batches: int | None = None):
        self.num_tensors = num_tensors
        self.bucket_bytes = bucket_bytes
        self.num_batches = num_batches  # when known to be 2, the second batch uses the closed form
        self.batch = 0  # index of the batch whose gradients arrive now
        self.count = [0] * num_tensors  # samples consumed per weight
        self.shift: list[torch.Tensor | None] = [None] * num_tensors
        self._shift_stream: list = [None] * num_tensors
        self.moments: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * num_tensors
        self._pair_sums: dict[int, tuple[torch.Tensor, int]] = {}  # index -> (sums of its group, position)
        self._bad_flags: dict[torch.device, torch.Tensor] = {}
        self._bad_flag_views: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._lock = threading.Lock()
        self._pending: list[tuple[int, torch.Tensor, object]] = []  # (index, gradient, producer stream)
        self._pending_bytes = 0

    def bad_flags(self, indices: list[int], device: torch.device) -> list[torch.Tensor]:
        """The one-element int32 views that record each weight's first non-finite batch."""
        with self._lock:
            if device not in self._bad_flags:
                pooled = _flag_pool.get((device, self.num_tensors))
                if pooled:
                    table, views = pooled.pop()
                    table.fill_(NO_BAD_BATCH)
                else:
                    table = torch.full((self.num_tensors,), NO_BAD_BATCH, dtype=torch.int32, device=device)
                    views = table.split(1)
                self._bad_flags[device], self._bad_flag_views[device] = table, views
        views = self._bad_flag_views[device]
        return [views[i] for i in indices]

    def add(self, index: int, grad: torch.Tensor, stream=None) -> None:
        """Consumes the current batch's gradient of weight `index` (the caller may drop it after).

        `stream`: the CUDA stream producing `grad` (default: the current one, where hooks run).
        """
        if stream is None:
            stream = _producer_stream(grad)
        if self.count[index] == 0:
            self.shift[index] = grad if _is_dense(grad) else grad.contiguous()
            self._shift_stream[index] = stream
            self.count[index] = 1
            return
        if index in self._pair_sums:
            raise ZiCoUserError(
                "a weight received a third gradient after ZiCo was told there are only 2 batches; pass the "
                "right num_batches (or None) to ZiCo"
            )
        grad = self._match_layout(grad, self.shift[index])
        with self._lock:
            self._pending.append((index, grad, stream))
            self._pending_bytes += grad.numel() * grad.element_size()
            full = self._pending_bytes >= self.bucket_bytes
        if full:
            self.flush()

    def add_batch(self, grads: list[torch.Tensor | None]) -> None:
        """One whole batch at once, `grads[i]` the gradient of weight i (None: it got none), then
        consumed in one kernel call per group: the cheap path for a caller that owns the passes
        and reads `.grad` after backward() (autograd has synced it with the current stream)."""
        pending = []
        for index, grad in enumerate(grads):
            if grad is None:
                continue
            if self.count[index] == 0:
                self.shift[index] = grad if _is_dense(grad) else grad.contiguous()
                self.count[index] = 1
            elif index in self._pair_sums:
                raise RuntimeError("zico_fast: a weight received a third gradient after its closed form")
            else:
                pending.append((index, self._match_layout(grad, self.shift[index]), None))
        with self._lock:
            self._pending.extend(pending)
        self.end_batch()

    @staticmethod
    def _match_layout(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # The kernels walk raw memory, so a gradient must share its shift's strides; autograd's
        # layout contract makes this the rule, the copy below the rare exception.
        if grad.stride() == like.stride() and grad.dtype == like.dtype:
            return grad
        return torch.empty_like(like).copy_(grad)

    def _take_pending(self) -> list[tuple[int, torch.Tensor, object]]:
        with self._lock:  # one atomic swap: a device thread appending now lands in the next list
            pending, self._pending, self._pending_bytes = self._pending, [], 0
        return pending

    def flush(self) -> None:
        """Runs the kernels on every queued gradient, one call per (device, dtype, kind) group."""
        pending = self._take_pending()
        if not pending:
            return
        groups: dict[tuple, list[tuple[int, torch.Tensor, object]]] = defaultdict(list)
        pair_is_final = self.num_batches == 2 and self.batch == 1
        for item in pending:
            index, grad = item[0], item[1]
            kind = ("pair" if pair_is_final else "init") if self.count[index] == 1 else "add"
            groups[(grad.device, grad.dtype, kind)].append(item)
        for (device, _, kind), items in groups.items():
            indices = [item[0] for item in items]
            grads = [item[1] for item in items]
            shifts = [self.shift[i] for i in indices]
            if device.type == "cuda":
                self._sync_streams(device, items)
            flags = self.bad_flags(indices, device)
            if kind == "pair":
                sums = _ops.pair_ratio_sums(shifts, grads, flags, self.batch)
                for position, i in enumerate(indices):
                    self._pair_sums[i] = (sums, position)
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

    def _sync_streams(self, device: torch.device, items) -> None:
        """Makes the consuming stream wait for gradients (and shifts) made on other streams, and
        marks them used there, so freeing them after the kernel is enqueued is safe."""
        consumer = torch.cuda.current_stream(device)
        for index, grad, stream in items:
            for tensor, producer in ((grad, stream), (self.shift[index], self._shift_stream[index])):
                if producer is not None and producer != consumer:
                    consumer.wait_stream(producer)
                    tensor.record_stream(consumer)

    def end_batch(self) -> None:
        """Called once the batch's backward has finished: consumes what is queued."""
        self.flush()
        self.batch += 1

    def ratio_sums(self, indices: list[int]) -> torch.Tensor:
        """float64 [len(indices)]: each weight's sum of kept ratios (all need count >= 2), on the
        first weight's device. One group's closed-form output is returned as is, without copies."""
        self.flush()
        parts: dict[int, torch.Tensor] = {}
        pair_tensors = {id(t): t for t, _ in (self._pair_sums[i] for i in indices if i in self._pair_sums)}
        if len(pair_tensors) == 1 and all(i in self._pair_sums for i in indices):
            sums = next(iter(pair_tensors.values()))
            positions = [self._pair_sums[i][1] for i in indices]
            if positions == list(range(len(sums))):
                return sums
            return sums[positions]
        for i in indices:
            if i in self._pair_sums:
                sums, position = self._pair_sums[i]
                parts[i] = sums[position]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in indices:
            if i not in parts:
                groups[(self.moments[i][0].device, self.count[i])].append(i)
        for (_, count), members in groups.items():
            dev, sq, ab = (list(m) for m in zip(*(self.moments[i] for i in members)))
            parts.update(zip(members, _ops.ratio_sums(dev, sq, ab, count).unbind()))
        device = parts[indices[0]].device
        return torch.stack([parts[i].to(device) for i in indices])

    def recycle(self) -> None:
        """Hands the flag tables back for reuse. Only after the results were copied to the host
        (that sync orders the kernels that wrote them before any reuse); the object is done."""
        for device, table in self._bad_flags.items():
            _flag_pool.setdefault((device, self.num_tensors), []).append((table, self._bad_flag_views[device]))
        self._bad_flags, self._bad_flag_views = {}, {}

    def bad_batches(self, indices: list[int], device: torch.device) -> torch.Tensor:
        """int32 [len(indices)] on `device`: each weight's first non-finite batch, or NO_BAD_BATCH."""
        tables = list(self._bad_flags.values())
        if len(tables) == 1 and tables[0].device == device and len(indices) == self.num_tensors \
                and indices == list(range(self.num_tensors)):
            return tables[0]
        flags = torch.full((len(indices),), NO_BAD_BATCH, dtype=torch.int32, device=device)
        index = torch.tensor(indices)
        for table in tables:
            flags = torch.minimum(flags, table[index.to(table.device)].to(device))
        return flags
