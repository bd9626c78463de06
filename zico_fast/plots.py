"""The figures (matplotlib, the `plot` extra): drawn only after the results they show are written."""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def search_plot(path: Path, history, strategy: str, best_score: float) -> None:
    """Best, median and lowest member of the population against the iteration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if history:
        its, best, median, low = zip(*history)
        ax.plot(its, best, label="best")
        ax.plot(its, median, label="population median")
        ax.plot(its, low, label="population min")
        ax.legend(loc="lower right")
    ax.set_xlabel("iteration")
    ax.set_ylabel("ZiCo score")
    ax.set_title(f"{strategy} search: best {best_score:.2f}")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def scatter_plot(path: Path, zico, truth, truth_column: str, tau: float, rho: float) -> None:
    """ZiCo against the ground truth, one dot per architecture."""
    plt = _pyplot()
    z, t = np.asarray(zico, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    keep = np.isfinite(z) & np.isfinite(t)

    def fmt(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(z[keep], t[keep], s=8, alpha=0.6, edgecolors="none")
    ax.set_xlabel("ZiCo score")
    ax.set_ylabel(truth_column)
    ax.set_title(f"ZiCo vs {truth_column} (N={int(keep.sum())}): Kendall tau {fmt(tau)}, Spearman {fmt(rho)}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
