"""The report's perception section: renders what ``weakspot perceive`` stored (no new computation)."""

from __future__ import annotations

import math

from weakspot.quality.relations import MEASURE_NAMES, load_perception, quality_accuracy_figure

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
    "saliency_shift_px": "saliency centroid shift (px on the model view)",
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
    if "degradation" not in corr:
        corr["degradation"] = ""
    corr["what"] = [
        _LABELS.get(r, r) + (f" under {d}" if isinstance(d, str) and d else "")
        for r, d in zip(corr.relation, corr.degradation, strict=True)
    ]
    corr["measure"] = corr.measure.map(lambda m: MEASURE_NAMES.get(m, m))
    corr["interval"] = [f"[{_num(a)}, {_num(b)}]" for a, b in zip(corr.lo, corr.hi, strict=True)]
    table_html, table_md = ctx.table(
        corr,
        {
            "what": "relation",
            "measure": "measure",
            "statistic": "statistic",
            "value": "value",
            "interval": "95% interval",
            "n": "n",
        },
        {"value": _num, "n": lambda v: str(int(v))},
    )
    parts, md = [], []
    meta = res.meta
    saliency = {"grad_cam": "Grad-CAM", "occlusion": "occlusion saliency", "none": "no saliency"}.get(
        meta.get("saliency", "grad_cam"), str(meta.get("saliency"))
    )
    intro = (
        f"No-reference quality (NIQE, BRISQUE: higher = worse), full-reference quality against each image's "
        f"clean original (PSNR in dB, SSIM: higher = better; LPIPS: higher = worse) and {saliency} on "
        f"{meta.get('n_images', '?')} sampled images under {len(res.conditions)} conditions; degraded images "
        f"regenerated exactly as the run evaluated them ({meta.get('top1_mismatches', 0)} top-1 mismatches). "
        "Intervals: 95% bootstrap. AUC: the score oriented so that worse quality is higher; 0.5 = chance."
    )
    parts.append(f"<p>{esc(intro)}</p>")
    md.append(intro)
    if meta.get("lpips") and not str(meta["lpips"]).startswith("LPIPS ("):
        parts.append(f'<p class="note">{esc(meta["lpips"])}.</p>')
        md.append(str(meta["lpips"]) + ".")
    for m in ("brisque", "niqe"):
        if res.conditions[f"mean_{m}"].notna().any():
            h, mdi = ctx.figure(
                quality_accuracy_figure(res.conditions, m),
                f"perception-{m}-vs-top1",
                alt=f"mean {m} vs top-1 accuracy per condition",
            )
            parts.append(h)
            md.append(mdi)
    parts.append(table_html)
    md.append(table_md)
    overlays = sorted((res.out_dir / "figures").glob("overlay_*.png"))
    if overlays:
        parts.append(
            f"<p>Largest probability drops: degraded image, BRISQUE per cell, {esc(saliency)} on the clean "
            "and the degraded image on one shared (raw) scale.</p>"
        )
        for f in overlays:
            parts.append(ctx.image(f.read_bytes(), alt=f"overlay {f.stem}"))
    conclusions = res.conclusions
    found = [c for c in conclusions if not c.startswith("Warning: ")]
    warn = [c[len("Warning: ") :] for c in conclusions if c.startswith("Warning: ")]
    parts.append("<h3>Conclusions</h3><ul>" + "".join(f"<li>{esc(c)}</li>" for c in found) + "</ul>")
    md.append("### Conclusions\n\n" + "\n".join(f"- {c}" for c in found))
    if warn:
        parts.append(
            '<p class="note bad"><b>Quality measures that rank against the damage order</b> (their mean '
            "worse-score does not grow with the degradation level):</p><ul>"
            + "".join(f'<li class="bad">{esc(w)}</li>' for w in warn)
            + "</ul>"
        )
        md.append(
            "**Quality measures that rank against the damage order:**\n\n" + "\n".join(f"- {w}" for w in warn)
        )
    summary = {"meta": meta, "correlations": res.correlations, "flags": res.flags, "conclusions": conclusions}
    return SectionOutput("".join(parts), summary, "\n\n".join(md))
