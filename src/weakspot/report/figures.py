"""Matplotlib figures of the report (Agg backend; nothing is shown)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.transforms
import numpy as np
import pandas as pd

__all__ = [
    "mpl_text",
    "axis_label",
    "accuracy_figure",
    "auc_figure",
    "heatmap_figure",
    "flip_matrix_figure",
    "orient_axis",
    "exposure_label",
]

_BLUE, _ORANGE, _GREY, _GREEN = "#2c5fb3", "#e07b39", "#7f8796", "#1e8449"


def mpl_text(s) -> str:
    """Text safe for matplotlib (a ``$`` in a class name would start mathtext)."""
    return str(s).replace("$", r"\$")


def axis_label(axis, unit) -> str:
    if axis in (None, "", "severity") or (isinstance(axis, float) and math.isnan(axis)):
        return "severity"
    u = "" if unit in (None, "") or (isinstance(unit, float) and math.isnan(unit)) else f" ({unit})"
    return mpl_text(f"{axis}{u}")


def _style(ax):
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25)


def _maybe_log(ax, xs):
    xs = np.asarray([x for x in xs if x == x], float)
    if len(xs) >= 3 and (xs > 0).all() and xs.max() / xs.min() > 30:
        ax.set_xscale("log")


def orient_axis(ax, direction: int, axis=None, unit=None) -> None:
    """Right = more damage: invert the x axis when smaller values are worse (``direction == -1``);
    an exposure axis (``exposure_s``) is log-scaled and labelled as ``1/x s``."""
    if axis == "exposure_s":
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: exposure_label(v)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if direction < 0 and not ax.xaxis_inverted():
        ax.invert_xaxis()


def exposure_label(seconds: float) -> str:
    """``0.004`` → ``'1/250 s'``; one second or more → ``'2 s'``."""
    if not seconds or seconds != seconds or seconds <= 0:
        return ""
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"1/{1 / seconds:.0f} s"


def accuracy_figure(
    acc: pd.DataFrame,
    degradations: list[str],
    clean_x: dict,
    labelled: bool,
    *,
    direction: dict | None = None,
):
    """One panel per degradation: top-1 (with its Wilson band) or agreement, and the mean
    probability of the clean class, against the physical parameter, oriented so that right = more
    damage. Filled markers: significant drops (Holm); hollow: not significant. With a
    ``camera_reference`` row, camera panels show it as the first (◆) point."""
    n = len(degradations)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    direction = direction or {}
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.2 * rows), squeeze=False, sharey=True)
    clean = acc[acc.condition_id == "clean"].iloc[0]
    ref = acc[acc.condition_id == "camera_reference"]
    metric = "top1" if labelled else "agreement"
    for i, deg in enumerate(degradations):
        ax = axes[i // cols][i % cols]
        g = acc[acc.degradation == deg].sort_values("x")
        x = g.x.to_numpy(float)
        cx = clean_x.get(deg)
        xs, ys, lo, hi, pc = (
            x,
            g[metric].to_numpy(float),
            g[f"{metric}_lo"].to_numpy(float),
            g[f"{metric}_hi"].to_numpy(float),
            g.mean_p_clean_class.to_numpy(float),
        )
        sig = g["significant"].to_numpy(bool) if "significant" in g else np.zeros(len(g), bool)
        if cx is not None:
            xs = np.r_[cx, x]
            ys, lo, hi = (
                np.r_[clean[metric], ys],
                np.r_[clean[f"{metric}_lo"], lo],
                np.r_[clean[f"{metric}_hi"], hi],
            )
            pc = np.r_[clean.mean_p_clean_class, pc]
            sig = np.r_[False, sig]
        else:
            ax.axhline(clean[metric], color=_BLUE, ls=":", lw=1, label="clean")
        ax.fill_between(xs, lo, hi, color=_BLUE, alpha=0.15, lw=0)
        ax.plot(
            xs, ys, "-", color=_BLUE, lw=1.5, label="top-1 accuracy" if labelled else "agreement with clean"
        )
        ax.plot(xs[sig], ys[sig], "o", color=_BLUE, ms=5)
        ax.plot(xs[~sig], ys[~sig], "o", mfc="white", mec=_BLUE, ms=5)
        ax.plot(xs, pc, "s--", color=_ORANGE, ms=3, lw=1.2, label="mean p(clean class)")
        if labelled:
            ax.plot(
                xs if cx is None else xs[1:],
                g.agreement.to_numpy(float),
                ":",
                color=_GREY,
                lw=1,
                label="agreement with clean",
            )
        fam = str(g.family.iloc[0]) if len(g) else ""
        if len(ref) and fam == "camera":
            rv = float(ref[metric].iloc[0])
            ax.axhline(rv, color=_GREEN, ls="--", lw=1, label="camera reference")
            trans = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
            ax.plot([0.0], [rv], "D", color=_GREEN, ms=6, transform=trans, clip_on=False)
        axis, unit = g.axis.iloc[0], g.axis_unit.iloc[0]
        d = int(direction.get(deg, 1))
        if axis == "exposure_s":
            orient_axis(ax, d, axis)
            ax.set_xticks(
                np.unique(xs[xs > 0])
            )  # label every exposure: a log axis may show no decade in range
            ax.tick_params(axis="x", labelsize=8, labelrotation=30)
        else:
            _maybe_log(ax, xs)
            orient_axis(ax, d)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(mpl_text(deg), fontsize=11)
        xl = axis_label(axis, unit)
        ax.set_xlabel(
            xl
            + (
                "  (← longer · shorter →)"
                if axis == "exposure_s"
                else "  (smaller = worse →)"
                if d < 0
                else ""
            ),
            fontsize=9,
        )
        if i % cols == 0:
            ax.set_ylabel(
                "top-1 accuracy / probability" if labelled else "agreement / probability", fontsize=9
            )
        _style(ax)
        if i == 0:
            ax.legend(fontsize=7, loc="best", frameon=True, framealpha=0.85)  # never over the curve
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout()
    return fig


def auc_figure(auc: pd.DataFrame, degradation: str, clean_x, xlabel: str, *, direction: int = 1, axis=None):
    """AUC-vs-level curves of the confused pairs of one degradation (right = more damage)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.3))
    g = auc[auc.degradation == degradation]
    unit_axis = g[g.order > 0]
    for (a, b), p in g.groupby(["from_name", "to_name"], sort=False):
        p = p.sort_values("order")
        deg = p[p.order > 0]
        xs, ys = deg.x.to_numpy(float), deg.auc.to_numpy(float)
        c0 = p[p.order == 0].auc
        if clean_x is not None and len(c0):
            xs, ys = np.r_[clean_x, xs], np.r_[float(c0.iloc[0]), ys]
        ax.plot(xs, ys, "o-", ms=4, label=mpl_text(f"{a} → {b}"))
    ax.axhline(0.5, color=_GREY, ls=":", lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("AUC of p(new class)")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(mpl_text(degradation), fontsize=11)
    if axis == "exposure_s":
        orient_axis(ax, direction, axis)
    else:
        _maybe_log(ax, unit_axis.x)
        orient_axis(ax, direction)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    _style(ax)
    fig.tight_layout()
    return fig


def heatmap_figure(matrix: pd.DataFrame, *, max_rows: int = 30, label: str = "mean drop of p(clean class)"):
    """Classes × degradations heat map (most damaged classes first)."""
    m = matrix.head(max_rows)
    h = max(2.6, 0.28 * len(m) + 1.4)
    w = max(5.0, 0.9 * m.shape[1] + 3.2)
    fig, ax = plt.subplots(figsize=(w, h))
    vals = m.to_numpy(float)
    im = ax.imshow(
        vals,
        cmap="magma_r",
        vmin=0,
        vmax=max(0.05, float(np.nanmax(vals)) if vals.size else 1),
        aspect="auto",
    )
    ax.set_xticks(range(m.shape[1]), [mpl_text(c) for c in m.columns], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(m)), [mpl_text(c)[:40] for c in m.index], fontsize=8)
    if vals.size <= 400:
        for (r, c), v in np.ndenumerate(vals):
            if v == v:
                ax.text(
                    c,
                    r,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.5 * np.nanmax(vals) else "black",
                )
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(label, fontsize=8)
    fig.tight_layout()
    return fig


def flip_matrix_figure(m: pd.DataFrame, title: str):
    """Clean top-1 (rows) → degraded top-1 (columns) counts; the diagonal (unchanged) is greyed."""
    n = len(m)
    size = max(3.2, 0.32 * n + 1.8)
    fig, ax = plt.subplots(figsize=(size + 0.6, size))
    vals = m.to_numpy(float)
    off = vals.copy()
    np.fill_diagonal(off, np.nan)
    im = ax.imshow(
        off, cmap="Reds", vmin=0, vmax=max(1.0, float(np.nanmax(off)) if np.isfinite(off).any() else 1)
    )
    diag = np.full_like(vals, np.nan)
    np.fill_diagonal(diag, 1.0)
    ax.imshow(diag, cmap="Greys", vmin=0, vmax=4, alpha=0.6)
    labels = [mpl_text(c)[:18] for c in m.index]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), labels, fontsize=9)
    ax.set_xlabel("degraded top-1", fontsize=9)
    ax.set_ylabel("clean top-1", fontsize=9)
    if n <= 16:
        for (r, c), v in np.ndenumerate(vals):
            if v > 0:
                ax.text(
                    c,
                    r,
                    f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if r != c and v > 0.6 * np.nanmax(off) else "black",
                )
    ax.set_title(mpl_text(title), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("images", fontsize=8)
    fig.tight_layout()
    return fig
