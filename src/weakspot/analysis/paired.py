"""Exact and score intervals for proportions, paired tests and multiple-comparison corrections.

Every accuracy the tool prints rests on these: binomial intervals (never a percentile bootstrap
of 0/1 values, which covers far less than its nominal level at small n or near 0 and 1), exact
McNemar tests for "same images, two conditions", a score interval for the paired difference,
and Holm / Benjamini–Hochberg across the conditions of a run.

All functions are vectorised over NumPy arrays and return NumPy arrays (or floats for scalars).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = [
    "wilson_interval",
    "clopper_pearson_interval",
    "mcnemar_exact",
    "paired_difference_ci",
    "holm",
    "benjamini_hochberg",
    "PairedComparison",
    "compare_paired",
    "MIN_IMAGES_FOR_CLAIM",
]

#: fewer images than this in a group (a class, a condition) and no per-group claim is made
MIN_IMAGES_FOR_CLAIM = 5


def _z(ci: float) -> float:
    return float(stats.norm.ppf(0.5 + ci / 2.0))


def wilson_interval(successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Covers close to its nominal level at any n and p (unlike the Wald or the percentile bootstrap,
    which give ``[1, 1]`` for 20/20). ``n == 0`` gives NaN bounds.

    Args:
        successes, n: counts (scalars or arrays of the same shape).
        ci: central coverage, e.g. 0.95.
    Returns:
        ``(lo, hi)`` arrays in [0, 1].
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = _z(ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    # exact at the edges (floating point can leave 1e-17 instead of 0)
    lo = np.where(k == 0, 0.0, lo)
    hi = np.where(k == n, 1.0, hi)
    return lo, hi


def clopper_pearson_interval(successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson ("exact") interval from Beta quantiles; conservative (covers ≥ ``ci``)."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a = (1.0 - ci) / 2.0
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(a, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, n - k), 1.0)
    bad = n <= 0
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def mcnemar_exact(b, c) -> np.ndarray:
    """Two-sided exact McNemar p-value from the discordant counts.

    ``b``: pairs right under A and wrong under B; ``c``: wrong under A and right under B. Under the
    null both are equally likely, so ``b ~ Binomial(b + c, 1/2)``; the p-value is
    ``min(1, 2 · P(X ≤ min(b, c)))``. No discordant pair gives p = 1.
    """
    b = np.asarray(b, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    n = b + c
    m = np.minimum(b, c)
    p = np.where(n > 0, np.minimum(1.0, 2.0 * stats.binom.cdf(m, np.maximum(n, 1), 0.5)), 1.0)
    return p


def paired_difference_ci(n11, n10, n01, n00, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval (his method 10) for the difference of two paired proportions.

    The 2×2 table of the same items under A (rows) and B (columns): ``n11`` right under both,
    ``n10`` right under A only, ``n01`` right under B only, ``n00`` wrong under both. The difference
    is ``p_B − p_A = (n01 − n10) / n`` (positive = B is better). Each margin gets a Wilson interval;
    they are combined with the phi correlation of the table (Newcombe 1998, Stat Med 17:2635).

    Returns ``(diff, lo, hi)``.
    """
    n11, n10, n01, n00 = (np.asarray(x, dtype=np.float64) for x in (n11, n10, n01, n00))
    n = n11 + n10 + n01 + n00
    a_right = n11 + n10
    b_right = n11 + n01
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = a_right / n, b_right / n
        diff = pb - pa
        la, ua = wilson_interval(a_right, n, ci)
        lb, ub = wilson_interval(b_right, n, ci)
        # phi correlation of the paired table; 0 where a margin is empty (Newcombe's convention)
        num = n11 * n00 - n10 * n01
        den = np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
        phi = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        lo = diff - np.sqrt(
            np.maximum((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0.0)
        )
        hi = diff + np.sqrt(
            np.maximum((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0.0)
        )
    lo = np.clip(lo, -1.0, 1.0)
    hi = np.clip(hi, -1.0, 1.0)
    return diff, lo, hi


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false-discovery rate); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    ranked = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


class PairedComparison(dict):
    """Result of :func:`compare_paired` (a dict, so it serialises to JSON as it is)."""


def compare_paired(correct_a, correct_b, ci: float = 0.95, alpha: float = 0.05) -> PairedComparison:
    """Compare the same images under A (e.g. clean, or "before") and B (degraded, or "after").

    Args:
        correct_a, correct_b: ``(N,)`` booleans, item i right under A / under B.
    Returns:
        a dict with ``n``, ``acc_a``, ``acc_b``, ``diff`` (B − A), ``diff_lo``, ``diff_hi``,
        ``b`` (right under A only), ``c`` (right under B only), ``p`` (exact McNemar), and
        ``verdict``: ``"too few images"`` (n < :data:`MIN_IMAGES_FOR_CLAIM`), ``"not significant"``
        (p ≥ alpha), ``"better"`` or ``"worse"`` (B against A). No correction for multiple
        comparisons is applied here: use :func:`holm` across a family of comparisons.
    """
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired comparison needs the same items: {a.shape} vs {b_.shape}")
    n = int(a.size)
    n11 = int(np.sum(a & b_))
    n10 = int(np.sum(a & ~b_))
    n01 = int(np.sum(~a & b_))
    n00 = int(np.sum(~a & ~b_))
    diff, lo, hi = paired_difference_ci(n11, n10, n01, n00, ci)
    p = float(mcnemar_exact(n10, n01))
    if n < MIN_IMAGES_FOR_CLAIM:
        verdict = "too few images"
    elif p >= alpha:
        verdict = "not significant"
    else:
        verdict = "better" if n01 > n10 else "worse"
    return PairedComparison(
        n=n,
        acc_a=(n11 + n10) / n if n else float("nan"),
        acc_b=(n11 + n01) / n if n else float("nan"),
        diff=float(diff),
        diff_lo=float(lo),
        diff_hi=float(hi),
        b=n10,
        c=n01,
        p=p,
        verdict=verdict,
    )
