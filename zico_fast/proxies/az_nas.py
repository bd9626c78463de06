"""AZ-NAS's per-block measures, exact and defined for any shape: the eigen-entropy of a feature's
channel covariance (float64) and the trainability term of one block's vector-Jacobian product.

Each measure has two halves. The `*_statistic` half runs inside a forward hook: tensor operations
only, no host sync (no float()/.item(), no linalg call that checks its result on the host). The
second half runs once when the result is read, on all blocks together.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ENTROPY_EPS = 1e-8  # AZ-NAS's log(p + 1e-8)


def as_positions(t: torch.Tensor) -> torch.Tensor:
    """[B, C, *spatial] -> [B * prod(spatial), C] (observations x channels)."""
    return t.reshape(t.shape[0], t.shape[1], -1).transpose(1, 2).reshape(-1, t.shape[1])


def channel_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over samples and positions of a[:, i] * b[:, j]: [C_a, C_b] = positions(a)^T positions(b),
    computed without the copy that positions() makes of an NCHW tensor where that is cheaper: as a
    batched product over samples when there are at least as many positions as channels (its
    [B, C_a, C_b] partial sums are then no larger than the input); from a free view in channels_last."""
    if a.dim() == 4 and all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                            for t in (a, b)):
        return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).T @ b.permute(0, 2, 3, 1).reshape(-1, b.shape[1])
    a3, b3 = a.reshape(a.shape[0], a.shape[1], -1), b.reshape(b.shape[0], b.shape[1], -1)
    if a3.shape[2] < max(a3.shape[1], b3.shape[1]):
        return as_positions(a).T @ as_positions(b)
    return torch.bmm(a3, b3.transpose(1, 2)).sum(0)


def covariance_statistic(feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C x C channel covariance in float64, 0-d bool "all finite") of a [B, C, *spatial] feature.

    float64 from the first operation: in float32 the centring and the sums lose the small
    eigenvalues of an ill-conditioned feature and make them negative (eigenvalues of -6e6 where
    float64 gives +459 on an NB201 network), which turned the entropy into NaN.
    """
    x = feature.detach().to(torch.float64, copy=True)  # our copy: centred in place
    x.sub_(x.mean([d for d in range(x.dim()) if d != 1], keepdim=True))
    sigma = channel_products(x, x) / (x.numel() // x.shape[1])
    finite = torch.isfinite(sigma).all()
    return torch.where(finite, sigma, torch.zeros_like(sigma)), finite  # eigvalsh fails on inf/NaN


def eigen_entropies(sigmas: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(entropy, total variance) per covariance: H = -sum p log(p + 1e-8), p = eigenvalues / their
    sum. Eigenvalues are clamped at 0 (a covariance is positive semi-definite; a negative float64
    eigenvalue is rounding, of order 1e-16 of the largest). Zero total variance gives NaN (0/0).
    Covariances of one size go through one batched eigvalsh."""
    entropies: list = [None] * len(sigmas)
    totals: list = [None] * len(sigmas)
    by_size: dict[tuple, list[int]] = {}
    for i, sigma in enumerate(sigmas):
        by_size.setdefault((sigma.shape[0], sigma.device), []).append(i)
    for indices in by_size.values():
        s = torch.linalg.eigvalsh(torch.stack([sigmas[i] for i in indices])).clamp_min(0)
        total = s.sum(-1, keepdim=True)
        p = s / total
        h = -(p * torch.log(p + ENTROPY_EPS)).sum(-1)
        for row, i in enumerate(indices):
            entropies[i], totals[i] = h[row], total[row, 0]
    return entropies, totals


def pair_positions(g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor | str:
    """g_in rearranged so that its positions are g_out's: a block of stride s folds each s x s
    window of its input into channels (pixel_unshuffle), padding the input's far edge with zero
    gradient where the size is not a multiple of s (a 7 x 7 input to a 4 x 4 output). A reason
    string when no stride maps one onto the other (other batch, fewer dims, upsampling)."""
    if g_in.dim() != g_out.dim() or g_in.shape[0] != g_out.shape[0]:
        return f"input {tuple(g_in.shape)} and output {tuple(g_out.shape)} do not pair position by position"
    sizes_in, sizes_out = g_in.shape[2:], g_out.shape[2:]
    strides = [math.ceil(i / o) if o > 0 else 0 for i, o in zip(sizes_in, sizes_out)]
    if any(s < 1 or math.ceil(i / s) != o for i, o, s in zip(sizes_in, sizes_out, strides)):
        return (f"no stride maps the input's positions {tuple(sizes_in)} onto the output's "
                f"{tuple(sizes_out)}")
    if all(s == 1 for s in strides):
        return g_in
    pad = []
    for i, o, s in zip(reversed(sizes_in), reversed(sizes_out), reversed(strides)):
        pad += [0, o * s - i]
    g = F.pad(g_in, pad)
    b, c = g.shape[:2]
    split = [b, c] + [n for o, s in zip(sizes_out, strides) for n in (o, s)]
    k = len(strides)
    order = [0, 1] + [3 + 2 * d for d in range(k)] + [2 + 2 * d for d in range(k)]
    return g.reshape(split).permute(order).reshape(b, c * math.prod(strides), *sizes_out)


def cross_moment_statistic(g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """E over positions of g_in g_out^T (g_in already paired), [C_in', C_out]."""
    return channel_products(g_in.float(), g_out.float()) / (g_out.numel() // g_out.shape[1])


def trainability_terms(moments: list[torch.Tensor]) -> list[torch.Tensor]:
    """2 - s - 1/(s + 1e-6) per block, s the top singular value of its cross moment (AZ-NAS); NaN
    for a cross moment holding inf/NaN (from a non-finite gradient), on which the SVD would fail."""
    out = []
    for mat in moments:
        finite = torch.isfinite(mat).all()
        top = torch.linalg.matrix_norm(torch.where(finite, mat, 0.0).double(), ord=2)
        out.append(torch.where(finite, 2.0 - top - 1.0 / (top + 1e-6), torch.nan))
    return out
