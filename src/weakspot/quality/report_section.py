"""The report's perception section: renders what ``weakspot perceive`` stored (no new computation)."""

from __future__ import annotations

import math

from weakspot.quality.relations import load_perception, quality_accuracy_figure

__all__ = ["render_perception"]

_LABELS = {
    "quality_vs_correct1": "quality vs correct top-1",
    "quality_predicts_error": "quality as a predictor of a top-1 error",
    "quality_vs_prob_drop": "quality vs drop of p(clean class)",
    "delta_quality_vs_prob_drop": "quality change vs drop of p(clean class)",
    "mean_quality_vs_top1_acc": "mean quality vs top-1 accuracy (conditions)",
    "mean_quality_vs_top5_acc": "mean quality vs top-5 accuracy (conditions)",
    "quality_map_vs_saliency": "patch quality map vs saliency (Pearson r)",
    "worst_quality_cells_in_salient_cells": "worst-quality cells among the most salient (chance 0.25)",
    "saliency_shift_vs_prob_drop": "saliency centroid shift vs drop of p(clean class)",
}


def _num(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def render_perception(ctx):
    """Section ``perception``: skipped (None) when ``RUN_DIR/perception/`` does not exist."""
    from weakspot.report import SectionOutput, esc

    res = load_perception(ctx.run.root)
    if res is None:
        return None
    corr = res.correlations.copy()
    corr["what"] = corr.relation.map(lambda r: _LABELS.get(r, r))
    corr["interval"] = [f"[{_num(a)}, {_num(b)}]" for a, b in zip(corr.lo, corr.hi, strict=True)]
    table_html, table_md = ctx.table(
        corr, {"what": "relation", "measure": "measure", "statistic": "statistic", "value": "value",
               "interval": "95% interval", "n": "n"}, {"value": _num, "n": lambda v: str(int(v))})
    parts, md = [], []
    meta = res.meta
    saliency = {"grad_cam": "Grad-CAM", "occlusion": "occlusion saliency", "none": "no saliency"}.get(
        meta.get("saliency", "grad_cam"), str(meta.get("saliency")))
    intro = (f"No-reference quality (NIQE, BRISQUE: higher = worse) and {saliency} on {meta.get('n_images', '?')} "
             f"sampled images under {len(res.conditions)} conditions; degraded images regenerated exactly as the "
             f"run evaluated them ({meta.get('top1_mismatches', 0)} top-1 mismatches). Intervals: 95% bootstrap.")
    parts.append(f"<p>{esc(intro)}</p>")
    md.append(intro)
    for m in ("brisque", "niqe"):
        if res.conditions[f"mean_{m}"].notna().any():
            h, mdi = ctx.figure(quality_accuracy_figure(res.conditions, m), f"perception-{m}-vs-top1",
                                alt=f"mean {m} vs top-1 accuracy per condition")
            parts.append(h)
            md.append(mdi)
    parts.append(table_html)
    md.append(table_md)
    overlays = sorted((res.out_dir / "figures").glob("overlay_*.png"))
    if overlays:
        parts.append(f"<p>Largest probability drops: degraded image, BRISQUE per cell, {esc(saliency)} on the clean "
                     "and the degraded image on one shared (raw) scale.</p>")
        for f in overlays:
            parts.append(ctx.image(f.read_bytes(), alt=f"overlay {f.stem}"))
    summary = {"meta": meta, "correlations": res.correlations}
    return SectionOutput("".join(parts), summary, "\n\n".join(md))
