"""Percentile bootstrap of group means, vectorised over groups and resamples."""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_mean_ci"]


def bootstrap_mean_ci(
    values: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    max_block: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile-bootstrap interval of ``values`` within each group.

    Each resample draws, for every group of size ``n``, ``n`` values of that group
    with replacement (the ordinary nonparametric bootstrap, done for all groups at
    once). Returns ``(group_keys, mean, lo, hi)``; groups with a single value get
    ``lo == hi == mean``. NaN values are dropped first. Deterministic for a ``seed``.

    Args:
        values: ``(N,)`` numbers (e.g. 0/1 correctness, probability drops).
        groups: ``(N,)`` group keys, or ``None`` for one group.
        n_boot: number of resamples.
        ci: central coverage of the interval, e.g. 0.95.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.zeros(len(v), dtype=np.int64) if groups is None else np.asarray(groups)
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    if len(v) == 0:
        e = np.array([])
        return (np.unique(g), e, e, e)
    order = np.argsort(g, kind="stable")
    v, g = v[order], g[order]
    keys, start, counts = np.unique(g, return_index=True, return_counts=True)
    sums = np.add.reduceat(v, start)
    mean = sums / counts
    n = len(v)
    slot_start = np.repeat(start, counts)  # for every value slot: start of its group
    slot_count = np.repeat(counts, counts)
    rng = np.random.default_rng(seed)
    block = max(1, max_block // max(n, 1))
    boot = np.empty((n_boot, len(keys)))
    for b0 in range(0, n_boot, block):
        b1 = min(n_boot, b0 + block)
        u = rng.random((b1 - b0, n))
        idx = slot_start + np.minimum((u * slot_count).astype(np.int64), slot_count - 1)
        boot[b0:b1] = np.add.reduceat(v[idx], start, axis=1) / counts
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return keys, mean, lo, hi
