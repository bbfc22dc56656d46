"""The report section "Camera operating envelope" (``summary.json`` ``sections.envelope``).

It renders :func:`weakspot.analysis.envelope.operating_envelope` of the run (stored results and
any crossings :func:`~weakspot.analysis.envelope.refine_envelope` stored; it runs no model):
a heat map of accuracy over the two camera parameters with the contour where the model keeps
``share`` (report option ``envelope_share``, default 0.9) of the default camera's accuracy, the
table of boundary crossings, and the sentence. Listed in :data:`weakspot.report.SECTION_REGISTRY`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from weakspot.analysis.envelope import format_value, operating_envelope
from weakspot.report import SectionOutput, esc

__all__ = ["render"]


def _figure(env):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(env.xs), 1.0 + 0.7 * len(env.ys)))
    im = ax.imshow(
        env.accuracy,
        origin="lower",
        cmap="RdYlGn",
        vmin=0.0,
        vmax=max(1e-9, env.reference_accuracy),
        aspect="auto",
    )
    for i in range(len(env.ys)):
        for j in range(len(env.xs)):
            v = env.accuracy[i, j]
            if not np.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{100 * v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    fontweight="bold" if env.keep[i, j] else "normal",
                )

    # the boundary: the crossings, in grid coordinates (linear between neighbouring indices)
    def to_index(values, v):
        return float(np.interp(v, values, np.arange(len(values))))

    pts = []
    for c in env.contour:
        if c["param"] == env.x:
            pts.append((to_index(env.xs, c["crossing"]), env.ys.index(c["fixed"]), c["refined"]))
        else:
            pts.append((env.xs.index(c["fixed"]), to_index(env.ys, c["crossing"]), c["refined"]))
    for refined, marker in ((False, "o"), (True, "D")):
        sel = [(x, y) for x, y, r in pts if r == refined]
        if sel:
            sx, sy = zip(*sel, strict=True)
            ax.scatter(
                sx,
                sy,
                marker=marker,
                facecolor="none",
                edgecolor="black",
                s=40,
                label="refined (bisection)" if refined else "interpolated",
            )
    if len(env.xs) > 1 and len(env.ys) > 1:
        ax.contour(
            np.arange(len(env.xs)),
            np.arange(len(env.ys)),
            np.nan_to_num(env.accuracy, nan=0.0),
            levels=[env.threshold],
            colors="black",
            linewidths=1.2,
        )
    ax.set_xticks(range(len(env.xs)), [format_value(env.x, v) for v in env.xs], fontsize=8, rotation=30)
    ax.set_yticks(range(len(env.ys)), [format_value(env.y, v) for v in env.ys], fontsize=8)
    ax.set_xlabel(env.x)
    ax.set_ylabel(env.y)
    if pts:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.25, 1.0))
    fig.colorbar(im, ax=ax, label="accuracy" if env.metric == "accuracy" else "agreement with clean")
    return fig


def render(ctx) -> SectionOutput | None:
    """The envelope of the run's first 2-D camera grid, or ``None`` when it has none."""
    env = operating_envelope(ctx.run, share=float(ctx.options.get("envelope_share", 0.9)))
    if env is None:
        return None
    fig_html, fig_md = ctx.figure(
        _figure(env),
        "camera-envelope",
        f"{env.metric} over {env.x} and {env.y} with the {100 * env.share:.0f}% contour",
    )
    ref = (
        "the default camera (camera_reference)" if env.reference == "camera_reference" else "the clean images"
    )
    intro = (
        f"<p><b>{esc(env.sentence)}</b></p><p>Reference: {esc(ref)}, {100 * env.reference_accuracy:.1f}% "
        f"{esc(env.metric)}; the envelope keeps ≥ {100 * env.share:.0f}% of it "
        f"(≥ {100 * env.threshold:.1f}%). Bold cells keep it; the black line is the {100 * env.share:.0f}% "
        f"contour, the markers its crossings between grid points ({len(env.contour)}, "
        f"{sum(c['refined'] for c in env.contour)} refined by bisection).</p>"
    )
    html, md = intro + fig_html, f"**{env.sentence}**\n\n{fig_md}"
    if env.contour:
        cross = pd.DataFrame(env.contour)
        cross["at"] = [
            f"{r.fixed_param} = {format_value(r.fixed_param, r.fixed)}" for r in cross.itertuples()
        ]
        cross["value"] = [format_value(r.param, r.crossing) for r in cross.itertuples()]
        cross["how"] = np.where(cross.refined, "bisection", "interpolated")
        t, tm = ctx.table(cross, {"param": "parameter", "at": "at", "value": "crosses at", "how": "how"})
        html += "<h3>Boundary crossings</h3>" + t
        md += "\n\n" + tm
    return SectionOutput(html, env.to_dict(), md)
