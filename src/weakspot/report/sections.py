"""The built-in report sections (each: ReportContext -> SectionOutput)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from weakspot.report.builder import ReportContext, Section, SectionOutput, esc

__all__ = [
    "builtin_sections",
    "render_what_broke",
    "render_overview",
    "render_accuracy",
    "render_heatmap",
    "render_classes",
    "render_examples",
    "render_confusion",
    "render_breaking",
    "render_adaptive",
]

_INTERVAL_NOTE = (
    "The intervals are 95% bootstrap intervals of the class mean drop (a continuous quantity; "
    "accuracies use Wilson intervals)."
)
#: below this many images per class, per-class z-scores and ranks are called noisy
FEW_PER_CLASS = 30


def per_class_note(n: int) -> str:
    """The note above the per-class tables; it calls the numbers noisy only when they are."""
    if n < FEW_PER_CLASS:
        return (
            f"Per-class numbers rest on few images (about {n} per class here): z-scores and ranks are noisy. "
            + _INTERVAL_NOTE
        )
    return f"Per-class numbers rest on about {n} images per class. " + _INTERVAL_NOTE


def _f(v, digits=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def _interval(lo, hi, *, pct: bool = False, digits: int = 2) -> str:
    """``[lo, hi]`` with as many decimals as it takes (up to 4 more) for a non-zero-width interval
    not to print as zero-width: 0.9960–0.9985 is ``[0.996, 0.998]``, never ``[1.00, 1.00]``."""
    if lo is None or hi is None or lo != lo or hi != hi:
        return "[—]"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    d = digits
    while d < digits + 4 and lo != hi and round(lo * scale, d) == round(hi * scale, d):
        d += 1
    return f"[{lo * scale:.{d}f}{unit}, {hi * scale:.{d}f}{unit}]"


def _p(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.2f}" if v >= 0.095 else f"{v:.2g}"


def _clean_x(ctx: ReportContext) -> dict:
    b = ctx.analysis.breaking
    out = {}
    for deg, g in b.groupby("degradation"):
        v = g.clean_x.iloc[0]
        out[deg] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


def _pts(v) -> str:
    """A difference of proportions in percentage points: ``'−42 pts'``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    pts = 100 * v
    return (f"{pts:+.0f} pts" if abs(pts) >= 9.5 or pts == 0 else f"{pts:+.1f} pts").replace("-", "−")


def _pval(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def _md_text(text) -> str:
    """Plain text for the Markdown report: markup in names escaped (Markdown renders raw HTML)."""
    import html as _html

    return _html.escape(str(text), quote=False)


def _metric_words(labelled: bool) -> str:
    return "top-1 accuracy (labelled images)" if labelled else "agreement with the clean prediction"


# ---------------------------------------------------------------- what broke
def render_what_broke(ctx: ReportContext) -> SectionOutput | None:
    """First on the page: one ranked row per degradation (see :func:`weakspot.analysis.what_broke`)."""
    a, run = ctx.analysis, ctx.run
    b = getattr(a, "broke", None)
    if b is None or b.empty:
        return None
    has_ref = b["effect_vs_reference"].notna().any()
    value_h = "top-1: clean → there" if run.labelled else "agreement: clean → there"
    head = [
        "#",
        "degradation",
        "worst level",
        value_h,
        "effect vs clean [simultaneous 95% CI]",
        "real drop?",
        "from level",
        "classes that carry it",
    ] + (["effect vs camera reference [95% CI]"] if has_ref else [])
    body, md = [], ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in b.itertuples():
        carriers = ", ".join(f"{c['class_name']} ({c['lost']}/{c['n']} lost)" for c in r.carriers) or "—"
        sig = (
            f'<span class="bad">yes</span> <span class="note">(p {esc(_pval(r.p_holm))})</span>'
            if r.significant
            else f'<span class="note">no (p {esc(_pval(r.p_holm))})</span>'
        )
        cells = [
            str(r.rank),
            esc(r.degradation),
            esc(r.level),
            f"{_f(r.clean_value)} → {_f(r.value)}",
            f"<b>{esc(_pts(r.effect))}</b> [{esc(_pts(r.effect_lo))}, {esc(_pts(r.effect_hi))}]",
            sig,
            esc(r.first_significant_level or "—"),
            esc(carriers),
        ]
        mdc = [
            str(r.rank),
            r.degradation,
            r.level,
            f"{_f(r.clean_value)} → {_f(r.value)}",
            f"{_pts(r.effect)} [{_pts(r.effect_lo)}, {_pts(r.effect_hi)}]",
            ("yes" if r.significant else "no") + f" (p {_pval(r.p_holm)})",
            r.first_significant_level or "—",
            carriers,
        ]
        if has_ref:
            ref = (
                "—"
                if math.isnan(r.effect_vs_reference)
                else f"{_pts(r.effect_vs_reference)} [{_pts(r.effect_vs_reference_lo)}, {_pts(r.effect_vs_reference_hi)}]"
            )
            cells.append(esc(ref))
            mdc.append(ref)
        cls = ' class="sig"' if r.significant else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        from weakspot.report.builder import _md_cell

        md.append("| " + " | ".join(_md_cell(c) for c in mdc) + " |")
    n_sig = int(b.significant.sum())
    note = (
        f'<p class="note">Metric: {esc(_metric_words(run.labelled))}. Effect: the change against clean on the '
        "same images at the worst level, with a paired (Newcombe) interval of simultaneous 95% coverage over "
        f"all {len(run.degraded)} degraded conditions (Bonferroni: each at 1 − 0.05/{len(run.degraded)}). A drop is <b>real</b> when the "
        "exact McNemar test against clean stays below 0.05 after Holm's correction across all "
        f"{len(run.degraded)} degraded conditions of the run. {n_sig} of {len(b)} degradation(s) broke the "
        "model. Classes: those that lost the most images (right on clean, wrong here) at the worst level.</p>"
    )
    html = (
        f'<table class="broke"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>{note}"
    )
    return SectionOutput(html, {"metric": str(b.metric.iloc[0]), "rows": b}, "\n".join(md))


# ---------------------------------------------------------------- overview
def render_overview(ctx: ReportContext) -> SectionOutput:
    a, run = ctx.analysis, ctx.run
    acc = a.accuracy
    clean = acc[acc.condition_id == "clean"].iloc[0]
    metric = "top1" if run.labelled else "agreement"
    deg = acc[acc.condition_id.isin(set(run.degraded.condition_id))]
    kpis = {
        "clean_top1": clean.top1,
        "clean_top1_lo": clean.top1_lo,
        "clean_top1_hi": clean.top1_hi,
        "clean_top5": clean.top5,
        "n_images": int(len(run.images)),
        "n_classes": run.n_classes,
        "n_degradations": len(run.degradations),
        "metric": metric,
        "min_per_class": int(getattr(a, "min_per_class", 5)),
    }
    cards = [
        (
            f"{clean.top1:.1%}" if run.labelled else "—",
            f"clean top-1 accuracy {_interval(clean.top1_lo, clean.top1_hi, pct=True, digits=1)}"
            if run.labelled
            else "clean top-1 accuracy (no labels)",
        ),
        (str(len(run.images)), "images"),
        (str(len(run.degradations)), "degradations"),
    ]
    if not deg.empty:
        worst = deg.loc[deg[metric].idxmin()]
        kpis.update(worst_condition=worst.condition_id, worst_value=worst[metric])
        cards.append(
            (
                f"{worst[metric]:.1%}",
                f"worst {'top-1' if run.labelled else 'agreement'}: {worst.degradation} at {worst.level}",
            )
        )
    mce = a.mce
    mce_note = ""
    if mce.get("mce") is not None:
        kpis.update(
            mce=mce["mce"],
            relative_mce=mce["relative_mce"],
            mce_reference=mce["reference"],
            mce_comparable=bool(mce.get("comparable", False)),
            mce_coverage={
                "corruptions": mce.get("corruptions", []),
                "n_corruptions": len(mce.get("corruptions", [])),
                "of": 15,
                "severities": mce.get("severities", []),
                "n_images": mce.get("n_images", 0),
            },
        )
        cov = _mce_coverage(mce)
        cards.append((f"{mce['mce']:.1%}", f"mCE vs {mce['reference']} ({cov})"))
        if not mce.get("comparable", False):
            mce_note = (
                f'<p class="note bad">mCE covers {esc(cov)}: it is <b>not comparable with published '
                "values</b>, which need all 15 ImageNet-C corruptions at all 5 severities.</p>"
            )
    else:
        kpis["mce_comparable"] = False
    html = (
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><b>{esc(v)}</b><span>{esc(t)}</span></div>' for v, t in cards)
        + "</div>"
        + mce_note
    )
    if run.pending:
        kpis["pending_conditions"] = list(run.pending)
        html += (
            f'<p class="note bad">Partial run: {len(run.pending)} condition(s) have no predictions yet and are '
            f"left out ({esc(', '.join(run.pending[:5]))}{' …' if len(run.pending) > 5 else ''}); "
            "<code>weakspot run</code> with the same --out resumes it.</p>"
        )
    items = "".join(
        f'<li><span class="tag">{esc(r.kind)}</span>{esc(r.text)}</li>' for r in a.findings.itertuples()
    )
    html += f'<h3>Findings</h3><ul class="findings">{items or "<li>No degradation changed a prediction.</li>"}</ul>'
    md = "\n".join(f"- **{r.kind}**: {_md_text(r.text)}" for r in a.findings.itertuples())
    return SectionOutput(html, {"kpis": kpis}, md)


def _mce_coverage(mce: dict) -> str:
    sev = mce.get("severities", [])
    sev_s = ("severities " + ",".join(str(s) for s in sev)) if sev else "no common severity"
    return (
        f"{len(mce.get('corruptions', []))} of 15 corruptions, {sev_s}, "
        f"{mce.get('n_images', 0)} images per level"
    )


# ---------------------------------------------------------------- accuracy
def render_accuracy(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.report.figures import accuracy_figure

    a, run = ctx.analysis, ctx.run
    acc = a.accuracy
    if run.degraded.empty:
        return None
    cx = _clean_x(ctx)
    direction = (
        run.conditions.groupby("degradation")["direction"].first().to_dict()
        if "direction" in run.conditions
        else {}
    )
    parts, md = [], []
    parts.append(
        '<p class="note">Every axis runs from mild (left) to more damage (right). Band: 95% Wilson '
        "interval; filled markers: drops that are real (exact McNemar against clean, Holm-corrected "
        "across the run); hollow: not distinguishable from clean."
        + (" Camera axes start at the camera reference (◆)." if run.has_camera_reference else "")
        + "</p>"
    )
    for fam, g in run.degraded.groupby("family", sort=True):
        figs = []
        md.append(f"### {fam}\n")
        for deg in dict.fromkeys(g.degradation):
            fig = accuracy_figure(acc, [deg], cx, run.labelled, direction=direction)
            h, m = ctx.figure(fig, f"accuracy-{deg}", f"accuracy of {deg} against its physical parameter")
            figs.append(f"<div>{h}</div>")
            md.append(m + "\n")
        parts.append(f"<h3>{esc(fam)}</h3><div class='grid3'>{''.join(figs)}</div>")
    metric = "top1" if run.labelled else "agreement"
    t = acc.copy()
    t["ci"] = [_interval(lo, hi) for lo, hi in zip(t[f"{metric}_lo"], t[f"{metric}_hi"], strict=True)]
    t["vs_clean"] = [
        ("—" if cid == "clean" else f"{_pts(d)} [{_pts(lo)}, {_pts(hi)}]")
        for cid, d, lo, hi in zip(
            t.condition_id, t.diff_vs_clean, t.diff_vs_clean_lo, t.diff_vs_clean_hi, strict=True
        )
    ]
    t["real"] = [
        "" if cid == "clean" else ("yes" if sg else "no")
        for cid, sg in zip(t.condition_id, t.significant, strict=True)
    ]
    # per-level flip counts: the discordant pairs the McNemar test counts (right on clean → wrong here, and back)
    t["flips"] = [
        "—" if cid == "clean" or nl != nl else f"{int(nl)} lost / {int(ng)} gained"
        for cid, nl, ng in zip(
            t.condition_id,
            t.get("n_lost", pd.Series(np.nan, t.index)),
            t.get("n_gained", pd.Series(np.nan, t.index)),
            strict=True,
        )
    ]
    cols = {
        "degradation": "degradation",
        "level": "level",
        "n": "images",
        metric: "top-1" if run.labelled else "agreement",
        "ci": "95% CI",
        "vs_clean": "vs clean [95% CI]",
        "flips": "flips vs clean",
        "p_vs_clean_holm": "p (Holm)",
        "real": "real drop?",
    }
    if "diff_vs_reference" in t:
        t["vs_ref"] = [
            "" if d != d else f"{_pts(d)} [{_pts(lo)}, {_pts(hi)}] (p {_pval(p)})"
            for d, lo, hi, p in zip(
                t.diff_vs_reference,
                t.diff_vs_reference_lo,
                t.diff_vs_reference_hi,
                t.p_vs_reference_holm,
                strict=True,
            )
        ]
        cols["vs_ref"] = "vs camera reference [95% CI] (Holm p)"
    if run.labelled:
        cols.update({"top5": "top-5", "agreement": "agreement"})
    cols["mean_p_clean_class"] = "mean p(clean class)"
    fm: dict[str, Callable[[Any], str]] = {
        "p_vs_clean_holm": _pval,
        metric: _f,
        "top5": _f,
        "agreement": _f,
        "mean_p_clean_class": _f,
    }
    tt, tm = ctx.table(t, cols, fm)
    parts.append(
        "<details><summary>Accuracy table (95% Wilson intervals; paired exact McNemar test against "
        f"clean, Holm-corrected)</summary>{tt}</details>"
    )
    md.append(tm)
    ce = a.corruption_errors
    if (ce.reference != "").any():
        ref = a.mce["reference"]
        t, tm = ctx.table(
            ce[ce.reference != ""],
            {
                "degradation": "degradation",
                "severities": "severities",
                "n_images": "images",
                "mean_error": "mean error",
                "ce": "CE",
                "relative_ce": "relative CE",
            },
            {"severities": lambda v: ",".join(str(x) for x in v)},
        )
        comparable = (
            "comparable with published values"
            if a.mce.get("comparable")
            else "<b>not comparable with published values</b> (they need all 15 corruptions at all 5 "
            "severities)"
        )
        parts.append(
            f"<h3>Corruption error (normalised by {esc(ref)})</h3><p>mCE <b>{a.mce['mce']:.1%}</b>, "
            f"relative mCE <b>{a.mce['relative_mce']:.1%}</b> over {esc(_mce_coverage(a.mce))}: "
            f"{comparable}.</p>{t}"
        )
        md.append(
            f"mCE {a.mce['mce']:.3f}, relative mCE {a.mce['relative_mce']:.3f} (reference: {ref}; "
            f"{_mce_coverage(a.mce)}; comparable: {bool(a.mce.get('comparable'))})\n\n{tm}"
        )
    else:
        parts.append(
            '<p class="note">No corruption error: mCE needs an ImageNet model with ImageNet-C corruptions '
            "(normalised by AlexNet) or a baseline run (<code>weakspot report RUN --baseline BASE</code>).</p>"
        )
    keep = [
        "condition_id",
        "degradation",
        "family",
        "level",
        "x",
        "axis",
        "axis_unit",
        "severity",
        "n",
        "n_labelled",
        "top1",
        "top1_lo",
        "top1_hi",
        "top5",
        "top5_lo",
        "top5_hi",
        "agreement",
        "agreement_lo",
        "agreement_hi",
        "mean_p_clean_class",
        "metric",
        "n_tested",
        "n_lost",
        "n_gained",
        "diff_vs_clean",
        "diff_vs_clean_lo",
        "diff_vs_clean_hi",
        "diff_vs_clean_adj_lo",
        "diff_vs_clean_adj_hi",
        "p_vs_clean",
        "p_vs_clean_holm",
        "significant",
        "diff_vs_reference",
        "diff_vs_reference_lo",
        "diff_vs_reference_hi",
        "p_vs_reference",
        "p_vs_reference_holm",
    ]
    return SectionOutput(
        "".join(parts),
        {"conditions": acc[[c for c in keep if c in acc]], "corruption_errors": ce, "mce": a.mce},
        "\n".join(md),
    )


# ---------------------------------------------------------------- heat map
def render_heatmap(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.analysis import damage_matrix
    from weakspot.report.figures import heatmap_figure

    dmg = ctx.analysis.damage
    if dmg.empty:
        return None
    mpc = int(getattr(ctx.analysis, "min_per_class", 5))
    if "claim" in dmg:
        dmg = dmg[dmg["claim"]]
    if dmg.empty:
        return SectionOutput(
            f'<p class="note">No class has {mpc} images or more: a class × degradation map would '
            "rank classes the data cannot tell apart, so none is drawn.</p>",
            {
                "metric": "mean_drop",
                "classes": [],
                "degradations": [],
                "values": [],
                "reason": f"no class with at least {mpc} images",
            },
            "",
        )
    m = damage_matrix(dmg, "mean_drop")
    fig = heatmap_figure(m)
    h, md = ctx.figure(fig, "heatmap", "classes by degradations heat map of the mean probability drop")
    note = (
        f'<p class="note">Mean drop of the probability of each image\'s clean top-1 class, averaged over the '
        f"levels of each degradation; {min(30, len(m))} most damaged of {len(m)} classes with at least "
        f"{mpc} images shown.</p>"
    )
    summ = {
        "metric": "mean_drop",
        "classes": list(m.index),
        "degradations": list(m.columns),
        "values": m.to_numpy().tolist(),
    }
    return SectionOutput(note + h, summ, md)


# ---------------------------------------------------------------- classes
def _per_image(ctx: ReportContext, k: int = 12) -> tuple[str, str, list]:
    """Per-image observations at the worst level of each degradation (what the page shows when
    classes are too small for claims): the images whose clean-class probability fell most."""
    from weakspot.analysis import image_damage

    a, run = ctx.analysis, ctx.run
    b = getattr(a, "broke", pd.DataFrame())
    if b is None or b.empty:
        return "", "", []
    im = image_damage(run)
    im = im[im.condition_id.isin(set(b.condition_id))]
    im = im.sort_values(["drop", "image_index"], ascending=[False, True], kind="stable").head(k)
    ids = run.images.set_index("image_index").image_id
    n_class = run.rows[run.rows.condition_id == "clean"].groupby("ref_class").size()
    t = pd.DataFrame(
        {
            "image": [str(ids.get(i, i)) for i in im.image_index],
            "class": [f"{run.class_name(c)} (n = {int(n_class.get(c, 0))})" for c in im.ref_class],
            "degradation": [f"{d} at {lv}" for d, lv in zip(im.degradation, im.level, strict=True)],
            "clean": [
                f"{run.class_name(c)} p {_p(p)}" for c, p in zip(im.clean_top1, im.p_clean, strict=True)
            ],
            "degraded": [f"{run.class_name(c)}" for c in im.top1],
            "p_drop": [_p(v) for v in im["drop"]],
        }
    )
    h, m = ctx.table(
        t,
        {
            "image": "image",
            "class": "class",
            "degradation": "where",
            "clean": "clean top-1",
            "degraded": "degraded top-1",
            "p_drop": "drop of p(clean class)",
        },
    )
    return h, m, t.to_dict(orient="records")


def render_classes(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.analysis import rank_classes

    a = ctx.analysis
    dd = a.damage_by_degradation
    if dd.empty:
        return None
    mpc = int(getattr(a, "min_per_class", 5))
    n_class = a.run.rows[a.run.rows.condition_id == "clean"].groupby("ref_class").size()
    small = n_class[n_class < mpc]
    per_class = int(np.median(n_class))
    ranked = rank_classes(dd, by="mean_z", k=5)
    summ: dict = {
        "ranked_by": "mean_z",
        "min_per_class": mpc,
        "n_classes_too_small": int(len(small)),
        "degradations": {},
    }
    if not ranked:
        note = (
            f"Every class has fewer than {mpc} images (median {per_class}): the data cannot support per-class "
            "claims, so classes are not ranked. Per-image observations at the worst level of each degradation "
            "instead:"
        )
        h, m, recs = _per_image(ctx)
        summ.update(note=note, per_image=recs)
        return SectionOutput(f'<p class="note bad">{esc(note)}</p>{h}', summ, _md_text(note) + "\n\n" + m)
    note = per_class_note(per_class)
    if len(small):
        names = ", ".join(f"{a.run.class_name(k)} (n = {int(v)})" for k, v in small.head(8).items())
        note += (
            f" {len(small)} class(es) with fewer than {mpc} images are not ranked and get no interval: "
            f"{names}{' …' if len(small) > 8 else ''}."
        )
    # interval of the class at its worst level, for the table
    worst_ci = (
        a.damage.sort_values("mean_drop")
        .groupby(["degradation", "class"])
        .tail(1)
        .set_index(["degradation", "class"])
    )
    parts = [f'<p class="note">{esc(note)}</p>']
    md = [_md_text(note), ""]
    summ["note"] = note
    cols = {
        "class_name": "class",
        "n": "images",
        "mean_z": "mean z",
        "mean_drop": "mean drop",
        "acc_drop": "accuracy drop",
        "worst": "worst level: drop [95% CI]",
    }
    for n_deg, (deg, r) in enumerate(ranked.items()):
        blocks = []
        summ["degradations"][deg] = {}
        for kind in ("worst", "best"):
            t = r[kind].copy()
            if t.empty:
                continue
            t["worst"] = [
                f"{row.worst_level}: {_f(row.worst_level_drop)} [{_f(worst_ci.loc[(deg, row['class']), 'mean_drop_lo'])}, "
                f"{_f(worst_ci.loc[(deg, row['class']), 'mean_drop_hi'])}]"
                for _, row in t.iterrows()
            ]
            h, m = ctx.table(t, cols, {"mean_z": lambda v: f"{v:+.2f}", "n": lambda v: str(int(v))}, cls=kind)
            blocks.append(
                f"<div><h3>{'5 most affected' if kind == 'worst' else '5 least affected'}</h3>{h}</div>"
            )
            md.append(f"**{deg} — {kind}**\n\n{m}\n")
            summ["degradations"][deg][kind] = t[
                [
                    "class",
                    "class_name",
                    "n",
                    "mean_z",
                    "mean_drop",
                    "acc_drop",
                    "worst_level",
                    "worst_level_drop",
                ]
            ]
        top = ", ".join(r["worst"].class_name.head(3))
        opened = " open" if n_deg < 3 else ""
        parts.append(
            f"<details{opened}><summary><b>{esc(deg)}</b> — most affected: {esc(top)}</summary>"
            f"<div class='two'>{''.join(blocks)}</div></details>"
        )
    return SectionOutput("".join(parts), summ, "\n".join(md))


# ---------------------------------------------------------------- examples
def render_examples(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.analysis import image_damage
    from weakspot.report.examples import ImageSource, pick_examples, render_pair

    run = ctx.run
    k = int(ctx.options.get("max_examples", 8))
    picks = pick_examples(
        image_damage(run), k=k, per_degradation=max(2, -(-k // max(1, len(run.degradations))))
    )
    if picks.empty:
        return None
    src = ImageSource(run)
    rows = run.rows.set_index(["condition_id", "image_index"])
    images = run.images.set_index("image_index")
    cards, md, summ, missing = [], [], [], 0
    for i, p in enumerate(picks.itertuples()):
        try:
            pair = render_pair(run, src, p)
        except Exception as exc:  # a degradation that cannot be rebuilt here
            pair, src.note = None, f"could not regenerate {p.condition_id}: {exc}"
        if pair is None:
            missing += 1
            continue
        r = rows.loc[(p.condition_id, p.image_index)]
        c_name, n_name = run.class_name(p.clean_top1), run.class_name(p.top1)
        img_id = images.loc[p.image_index].image_id
        clean_html = ctx.image(pair[0], f"clean image {img_id}", cls="thumb")
        deg_html = ctx.image(pair[1], f"{p.degradation} at {p.level}", cls="thumb")
        changed = p.top1 != p.clean_top1
        cards.append(
            f'<div class="ex"><div class="deg">{esc(p.degradation)} · <b>{esc(p.level)}</b> · {esc(img_id)}</div>'
            f'<div class="pair"><figure>{clean_html}<figcaption>clean: <b>{esc(c_name)}</b> '
            f"p {_p(p.p_clean)}</figcaption></figure><figure>{deg_html}<figcaption>"
            f'<b class="{"bad" if changed else ""}">{esc(n_name)}</b> p {_p(float(r.top1_prob))}'
            + (f"<br>{esc(c_name)}: {_p(p.p_degraded)}" if changed else "")
            + "</figcaption></figure></div></div>"
        )
        from weakspot.evaluate.store import atomic_write_bytes

        for tag, png in (("clean", pair[0]), ("degraded", pair[1])):
            atomic_write_bytes(ctx.out_dir / f"figures/example-{i}-{tag}.png", png)
        md.append(
            f"| ![clean](figures/example-{i}-clean.png) | ![degraded](figures/example-{i}-degraded.png) | "
            + _md_text(
                f"{p.degradation} at {p.level}: {c_name} p {_p(p.p_clean)} → {n_name} p "
                f"{_p(float(r.top1_prob))} ({c_name} {_p(p.p_degraded)})"
            ).replace("|", "\\|")
            + " |"
        )
        summ.append(
            {
                "image_id": str(img_id),
                "degradation": p.degradation,
                "condition_id": p.condition_id,
                "level": p.level,
                "clean_class": c_name,
                "p_clean": float(p.p_clean),
                "degraded_class": n_name,
                "p_degraded_top1": float(r.top1_prob),
                "p_degraded_clean_class": float(p.p_degraded),
            }
        )
    note = ""
    if missing:
        note = (
            f'<p class="note">{missing} example(s) could not be shown: the original image was not found '
            f"(data moved?). {esc(src.note)}</p>"
        )
    if not cards:
        return SectionOutput(note, {"examples": [], "note": src.note or "images not found"}, "")
    html = (
        '<p class="note">Chosen automatically: the images whose clean-class probability fell most, each at the '
        "mildest level reaching 90% of its largest drop; regenerated with the run's seed.</p>"
        f'<div class="examples">{"".join(cards)}</div>{note}'
    )
    md_t = "| clean | degraded | what changed |\n|---|---|---|\n" + "\n".join(md)
    return SectionOutput(html, {"examples": summ}, md_t)


# ---------------------------------------------------------------- confusion
def render_confusion(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.report.figures import auc_figure, axis_label

    a = ctx.analysis
    pairs = a.confused_pairs
    if pairs.empty:
        return SectionOutput(
            '<p class="note">No prediction changed under any degradation.</p>',
            {"pairs": [], "auc": [], "reason": "no flips"},
            "",
        )
    cols = {
        "degradation": "degradation",
        "from_name": "clean top-1",
        "to_name": "became",
        "flips": "images",
        "first_level": "first at",
        "worst_level": "most at",
    }
    pairs = pairs.copy()
    pairs["flips"] = [
        f"{c}/{n} ({c / n:.0%})" if n else str(c)
        for c, n in zip(pairs["count"], pairs["n_from"], strict=True)
    ]
    top = pairs.sort_values(
        ["count", "degradation", "rank"], ascending=[False, True, True], kind="stable"
    ).head(12)
    t, _ = ctx.table(top, cols)
    t_all, tm = ctx.table(pairs, cols)
    parts = [
        "<h3>Most frequent confusions (clean prediction → degraded prediction)</h3>"
        '<p class="note">Images: how many of the images predicted as the clean class flipped, at the level '
        "where the pair is most frequent (counted per level, so never more than the images of the class). "
        "Flips to an image's true label are corrections and are not listed.</p>",
        t,
    ]
    if len(pairs) > len(top):
        parts.append(
            f"<details><summary>Top confused pairs of every degradation ({len(pairs)})</summary>"
            f"{t_all}</details>"
        )
    md = [tm]
    # flip matrices at the strongest level, only for the classes with enough flips to read
    from weakspot.analysis import flip_matrix
    from weakspot.report.figures import flip_matrix_figure

    min_flips = 2
    fm_figs = []
    for deg in list(dict.fromkeys(pairs.degradation))[:6]:
        strongest = ctx.run.degraded[ctx.run.degraded.degradation == deg].sort_values("order").iloc[-1]
        m = flip_matrix(ctx.run, strongest.condition_id, names=False)
        off = m.to_numpy().copy()
        np.fill_diagonal(off, 0)
        involvement = pd.Series(off.sum(0) + off.sum(1), index=m.index)
        keep = involvement[involvement >= min_flips].sort_values(ascending=False, kind="stable").index[:10]
        if len(keep) < 2:
            continue
        keep = sorted(keep)
        sub = m.loc[keep, keep]
        if np.trace(sub.to_numpy()) == sub.to_numpy().sum():
            continue
        sub.index = [ctx.run.class_name(k) for k in keep]
        sub.columns = sub.index
        h, mm = ctx.figure(
            flip_matrix_figure(sub, f"{deg} at {strongest.level}"),
            f"flips-{deg}",
            f"flip matrix of {deg} at {strongest.level}",
        )
        fm_figs.append(f"<div>{h}</div>")
        md.append(mm)
    if fm_figs:
        parts.append(
            "<h3>Flip matrices at the strongest level (clean top-1 → degraded top-1; grey = unchanged)"
            f'</h3><p class="note">Only classes with at least {min_flips} flips in or out, at most 10.'
            f"</p><div class='two'>{''.join(fm_figs)}</div>"
        )
    auc = a.auc
    reason = auc.attrs.get("reason", "")
    figs = []
    cx = _clean_x(ctx)
    if not auc.empty:
        for deg, g in auc.groupby("degradation", sort=False):
            ok = g.groupby(["from_class", "to_class"]).auc.transform(lambda s: s.notna().any())
            g = g[ok]
            if g.empty:
                continue
            d = ctx.run.degraded[ctx.run.degraded.degradation == deg]
            xl = axis_label(d.axis.iloc[0] if d.axis_value.notna().all() else None, d.axis_unit.iloc[0])
            dr = int(d.direction.iloc[0]) if "direction" in d else 1
            ax_name = d.axis.iloc[0] if d.axis_value.notna().all() else None
            h, m = ctx.figure(
                auc_figure(g, deg, cx.get(deg), xl, direction=dr, axis=ax_name),
                f"auc-{deg}",
                f"AUC against level, {deg}",
            )
            figs.append(f"<div>{h}</div>")
            md.append(m)
        if not figs:
            reason = reason or (
                "the confused classes have no images of their own in this data set (AUC needs "
                "images of both classes)"
            )
    if figs:
        parts.append(
            "<h3>Separability of the confused pairs: AUC of p(new class) over images of both classes</h3>"
            '<p class="note">1 = the model still tells them apart; 0.5 = chance; below 0.5 the original '
            "class looks more like the new one than the new one does. Clean is the first point.</p>"
            f"<div class='two'>{''.join(figs)}</div>"
        )
    if reason:
        parts.append(f'<p class="note">AUC curves: {esc(reason)}.</p>')
        md.append(f"AUC curves: {reason}.")
    return SectionOutput("".join(parts), {"pairs": pairs, "auc": auc, "reason": reason}, "\n\n".join(md))


# ---------------------------------------------------------------- breaking points
def _worst_first(b: pd.DataFrame, run) -> pd.DataFrame:
    """Breaking-point rows, those that break earliest along their axis first (the position of the
    break between the levels, 0 = clean/mildest, 1 = strongest), then those furthest down at the
    strongest level."""
    b = b.copy()
    pos = np.full(len(b), np.inf)
    levels = {deg: g.sort_values("order") for deg, g in run.degraded.groupby("degradation")}
    for i, (deg, x, st, cx, d) in enumerate(
        zip(
            b.degradation,
            b.breaking_x,
            b.status,
            b.clean_x,
            b.get("direction", pd.Series(1, index=b.index)),
            strict=True,
        )
    ):
        g = levels.get(deg)
        if g is None or st not in ("interpolated", "before_first_level") or x != x:
            continue
        xs = (int(d) * g.x.to_numpy(float)).tolist()
        steps = list(range(1, len(xs) + 1))
        if cx is not None and cx == cx:
            xs, steps = [int(d) * float(cx), *xs], [0, *steps]
        pos[i] = float(np.interp(int(d) * float(x), xs, steps)) / len(g)
    b["_pos"] = pos
    with np.errstate(invalid="ignore", divide="ignore"):
        b["_rel"] = np.where(b.clean_value > 0, b.final_value / b.clean_value, np.inf)
    return b.sort_values(["_pos", "_rel", "degradation", "class"], kind="stable").drop(
        columns=["_pos", "_rel"]
    )


def render_breaking(ctx: ReportContext) -> SectionOutput | None:
    a, run = ctx.analysis, ctx.run
    b = a.breaking
    if b.empty:
        return None
    mpc = int(getattr(a, "min_per_class", 5))
    metric = _metric_words(run.labelled)
    pooled = _worst_first(b[b["class"] == -1], run)
    per = b[(b["class"] != -1) & (b.n >= mpc) & b.status.isin(["interpolated", "before_first_level"])]
    per = _worst_first(per, run)
    cols = {
        "degradation": "degradation",
        "label": "half lost at",
        "clean_value": "clean",
        "final_value": "at strongest",
        "final_level": "strongest level",
    }
    fm: dict[str, Callable[[Any], str]] = {"clean_value": _f, "final_value": _f}
    t_all, tm = ctx.table(pooled, cols, fm)
    html = [
        f'<p class="note">Where {esc(metric)} falls to half its clean value (the same metric as the findings), '
        "linearly interpolated between levels; ≤/≥ x: already at the first level; not reached (&gt;/&lt; x): "
        "still above half at the strongest level. Signs follow the damage direction of each axis.</p>",
        "<h3>All images, worst first</h3>",
        t_all,
    ]
    md = [tm]
    pc_cols = {
        "degradation": "degradation",
        "class_name": "class",
        "n": "images",
        "label": "half lost at",
        "clean_value": "clean",
        "final_value": "at strongest",
    }
    if len(per):
        head, rest = per.head(10), per.iloc[10:]
        t1, m1 = ctx.table(head, pc_cols, {**fm, "n": lambda v: str(int(v))})
        html += [f"<h3>Classes that break, worst first (classes with at least {mpc} images)</h3>", t1]
        md.append(m1)
        if len(rest):
            t2, m2 = ctx.table(rest, pc_cols, {**fm, "n": lambda v: str(int(v))})
            html.append(
                f"<details><summary>{len(rest)} more class × degradation breaking points</summary>"
                f"{t2}</details>"
            )
            md.append(m2)
    elif (b[b["class"] != -1].n < mpc).all():
        html.append(
            f'<p class="note">No per-class breaking points: every class has fewer than {mpc} images.</p>'
        )
    n_not = int(((b["class"] != -1) & (b.n >= mpc) & (b.status == "not_reached")).sum())
    html.append(f'<p class="note">{n_not} class × degradation combination(s) never fell to half.</p>')
    bp = a.breaking_p
    if not bp.empty:
        tp, mp = ctx.table(
            _worst_first(bp[bp["class"] == -1], run), cols, {"clean_value": _p, "final_value": _p}
        )
        html.append(
            "<details><summary>Mean probability of the clean class (a second, continuous metric): "
            f"where it halves</summary>{tp}</details>"
        )
        md.append(mp)
    return SectionOutput(
        "".join(html),
        {"metric": "accuracy", "accuracy": pooled, "classes": per, "p_clean": bp},
        "\n\n".join(md),
    )


# ---------------------------------------------------------------- adaptive breaking points
def render_adaptive(ctx: ReportContext) -> SectionOutput | None:
    """Results of ``weakspot breaking RUN_DIR DEG`` (RUN_DIR/adaptive/*.parquet), if any were run."""
    import json

    import pyarrow.parquet as pq

    files = sorted((ctx.run.root / "adaptive").glob("*.parquet"))
    if not files:
        return None
    parts, md, summ = [], [], {}
    for f in files:
        t = pq.read_table(f)
        meta = json.loads((t.schema.metadata or {}).get(b"weakspot.adaptive", b"{}"))
        df = t.to_pandas()
        deg = f.stem
        unit = f" {meta.get('unit')}" if meta.get("unit") else ""
        df["breaks at"] = [("—" if x != x else f"{x:.3g}{unit}") for x in df.breaking_x]
        h, m = ctx.table(
            df,
            {
                "class_name": "class",
                "n_images": "images",
                "clean_value": "clean",
                "breaks at": "breaks at",
                "status": "status",
                "n_evals": "evaluations",
            },
            {"clean_value": _p},
        )
        saved = meta.get("saved", 0)
        total = meta.get("grid_image_evaluations", 0) or 1
        parts.append(
            f"<h3>{esc(deg)}: {esc(meta.get('axis', ''))} in [{esc(meta.get('mild'))}, "
            f"{esc(meta.get('severe'))}]{esc(unit)}, resolution {esc(meta.get('tol'))}</h3>"
            f"<p>{esc(meta.get('adaptive_image_evaluations'))} image evaluations instead of "
            f"{esc(meta.get('grid_image_evaluations'))} for a {esc(meta.get('grid_points'))}-point grid "
            f"(<b>{saved / total:.0%} saved</b>).</p>{h}"
        )
        md.append(f"**{deg}** — {saved} of {total} image evaluations saved\n\n{m}")
        summ[deg] = {"meta": meta, "classes": df.drop(columns=["breaks at"])}
    return SectionOutput("".join(parts), summ, "\n\n".join(md))


def builtin_sections() -> list[Section]:
    """The sections of :data:`~weakspot.report.builder.SECTION_REGISTRY` (kept for callers of the
    former API)."""
    from weakspot.report.builder import SECTION_REGISTRY

    return [e.section() for e in SECTION_REGISTRY]
