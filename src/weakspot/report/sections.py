"""The built-in report sections (each: ReportContext -> SectionOutput)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from weakspot.report.builder import ReportContext, Section, SectionOutput, esc

__all__ = ["builtin_sections"]

NOISY_NOTE = ("Per-class numbers rest on few images (about {n} per class here): with ~10 images per class "
              "z-scores and ranks are noisy. The intervals are 95% bootstrap intervals of the class mean drop.")


def _f(v, digits=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


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


# ---------------------------------------------------------------- overview
def _overview(ctx: ReportContext) -> SectionOutput:
    a, run = ctx.analysis, ctx.run
    acc = a.accuracy
    clean = acc[acc.condition_id == "clean"].iloc[0]
    metric = "top1" if run.labelled else "agreement"
    deg = acc[acc.condition_id != "clean"]
    kpis = {"clean_top1": clean.top1, "clean_top5": clean.top5, "n_images": int(len(run.images)),
            "n_classes": run.n_classes, "n_degradations": len(run.degradations)}
    cards = [(f"{clean.top1:.1%}" if run.labelled else "—", "clean top-1 accuracy"),
             (str(len(run.images)), "images"), (str(len(run.degradations)), "degradations")]
    if not deg.empty:
        worst = deg.loc[deg[metric].idxmin()]
        kpis.update(worst_condition=worst.condition_id, worst_value=worst[metric])
        cards.append((f"{worst[metric]:.1%}", f"worst: {worst.degradation} at {worst.level}"))
    if a.mce.get("mce") is not None:
        kpis.update(mce=a.mce["mce"], relative_mce=a.mce["relative_mce"], mce_reference=a.mce["reference"])
        cards.append((f"{a.mce['mce']:.1%}", f"mCE vs {a.mce['reference']} ({a.mce['n_degradations']} corruptions)"))
    html = '<div class="kpis">' + "".join(f'<div class="kpi"><b>{esc(v)}</b><span>{esc(t)}</span></div>'
                                          for v, t in cards) + "</div>"
    if run.pending:
        kpis["pending_conditions"] = list(run.pending)
        html += (f'<p class="note bad">Partial run: {len(run.pending)} condition(s) have no predictions yet and are '
                 f"left out ({esc(', '.join(run.pending[:5]))}{' …' if len(run.pending) > 5 else ''}); "
                 "<code>weakspot run</code> with the same --out resumes it.</p>")
    items = "".join(f'<li><span class="tag">{esc(r.kind)}</span>{esc(r.text)}</li>' for r in a.findings.itertuples())
    html += f'<h3>Findings</h3><ul class="findings">{items or "<li>No degradation changed a prediction.</li>"}</ul>'
    md = "\n".join(f"- **{r.kind}**: {r.text}" for r in a.findings.itertuples())
    return SectionOutput(html, {"kpis": kpis}, md)


# ---------------------------------------------------------------- accuracy
def _accuracy(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.report.figures import accuracy_figure

    a, run = ctx.analysis, ctx.run
    acc = a.accuracy
    if run.degraded.empty:
        return None
    cx = _clean_x(ctx)
    parts, md = [], []
    for fam, g in run.degraded.groupby("family", sort=True):
        figs = []
        md.append(f"### {fam}\n")
        for deg in dict.fromkeys(g.degradation):
            fig = accuracy_figure(acc, [deg], cx, run.labelled)
            h, m = ctx.figure(fig, f"accuracy-{deg}", f"accuracy of {deg} against its physical parameter")
            figs.append(f"<div>{h}</div>")
            md.append(m + "\n")
        parts.append(f"<h3>{esc(fam)}</h3><div class='grid3'>{''.join(figs)}</div>")
    cols = {"degradation": "degradation", "level": "level", "n": "images", "top1": "top-1", "top1_lo": "lo",
            "top1_hi": "hi", "top5": "top-5", "agreement": "agreement", "mean_p_clean_class": "mean p(clean class)"}
    t, tm = ctx.table(acc, cols)
    parts.append(f"<details><summary>Accuracy table (95% bootstrap intervals)</summary>{t}</details>")
    md.append(tm)
    ce = a.corruption_errors
    if (ce.reference != "").any():
        ref = a.mce["reference"]
        t, tm = ctx.table(ce[ce.reference != ""], {"degradation": "degradation", "mean_error": "mean error",
                                                      "ce": "CE", "relative_ce": "relative CE"})
        parts.append(f"<h3>Corruption error (normalised by {esc(ref)})</h3><p>mCE <b>{a.mce['mce']:.1%}</b>, "
                     f"relative mCE <b>{a.mce['relative_mce']:.1%}</b> over {a.mce['n_degradations']} "
                     f"degradation(s).</p>{t}")
        md.append(f"mCE {a.mce['mce']:.3f}, relative mCE {a.mce['relative_mce']:.3f} (reference: {ref})\n\n{tm}")
    else:
        parts.append('<p class="note">No corruption error: mCE needs an ImageNet model with ImageNet-C corruptions '
                     "(normalised by AlexNet) or a baseline run (<code>weakspot report RUN --baseline BASE</code>).</p>")
    keep = ["condition_id", "degradation", "family", "level", "x", "axis", "axis_unit", "severity", "n", "n_labelled",
            "top1", "top1_lo", "top1_hi", "top5", "top5_lo", "top5_hi", "agreement", "agreement_lo", "agreement_hi",
            "mean_p_clean_class"]
    return SectionOutput("".join(parts), {"conditions": acc[keep], "corruption_errors": ce, "mce": a.mce},
                         "\n".join(md))


# ---------------------------------------------------------------- heat map
def _heatmap(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.analysis import damage_matrix
    from weakspot.report.figures import heatmap_figure

    dmg = ctx.analysis.damage
    if dmg.empty:
        return None
    m = damage_matrix(dmg, "mean_drop")
    fig = heatmap_figure(m)
    h, md = ctx.figure(fig, "heatmap", "classes by degradations heat map of the mean probability drop")
    note = (f'<p class="note">Mean drop of the probability of each image\'s clean top-1 class, averaged over the '
            f"levels of each degradation; {min(30, len(m))} most damaged of {len(m)} classes shown.</p>")
    summ = {"metric": "mean_drop", "classes": list(m.index), "degradations": list(m.columns),
            "values": m.to_numpy().tolist()}
    return SectionOutput(note + h, summ, md)


# ---------------------------------------------------------------- classes
def _classes(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.analysis import rank_classes

    a = ctx.analysis
    dd = a.damage_by_degradation
    if dd.empty:
        return None
    # interval of the class at its worst level, for the table
    worst_ci = a.damage.sort_values("mean_drop").groupby(["degradation", "class"]).tail(1).set_index(
        ["degradation", "class"])
    per_class = int(np.median(a.run.rows[a.run.rows.condition_id == "clean"].groupby("ref_class").size()))
    parts = [f'<p class="note">{esc(NOISY_NOTE.format(n=per_class))}</p>']
    md = [NOISY_NOTE.format(n=per_class), ""]
    summ: dict = {"note": NOISY_NOTE.format(n=per_class), "ranked_by": "mean_z", "degradations": {}}
    cols = {"class_name": "class", "mean_z": "mean z", "mean_drop": "mean drop", "acc_drop": "accuracy drop",
            "worst": "worst level: drop [95% CI]"}
    for n_deg, (deg, r) in enumerate(rank_classes(dd, by="mean_z", k=5).items()):
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
            h, m = ctx.table(t, cols, {"mean_z": lambda v: f"{v:+.2f}"}, cls=kind)
            blocks.append(f"<div><h3>{'5 most affected' if kind == 'worst' else '5 least affected'}</h3>{h}</div>")
            md.append(f"**{deg} — {kind}**\n\n{m}\n")
            summ["degradations"][deg][kind] = t[["class", "class_name", "mean_z", "mean_drop", "acc_drop",
                                                 "worst_level", "worst_level_drop"]]
        top = ", ".join(r["worst"].class_name.head(3))
        opened = " open" if n_deg < 3 else ""
        parts.append(f"<details{opened}><summary><b>{esc(deg)}</b> — most affected: {esc(top)}</summary>"
                     f"<div class='two'>{''.join(blocks)}</div></details>")
    return SectionOutput("".join(parts), summ, "\n".join(md))


# ---------------------------------------------------------------- examples
def _examples(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.analysis import image_damage
    from weakspot.report.examples import ImageSource, pick_examples, render_pair

    run = ctx.run
    k = int(ctx.options.get("max_examples", 8))
    picks = pick_examples(image_damage(run), k=k, per_degradation=max(2, -(-k // max(1, len(run.degradations)))))
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
        md.append(f"| ![clean](figures/example-{i}-clean.png) | ![degraded](figures/example-{i}-degraded.png) | "
                  f"{p.degradation} at {p.level}: {c_name} p {_p(p.p_clean)} → {n_name} p {_p(float(r.top1_prob))} "
                  f"({c_name} {_p(p.p_degraded)}) |")
        summ.append({"image_id": str(img_id), "degradation": p.degradation, "condition_id": p.condition_id,
                     "level": p.level, "clean_class": c_name, "p_clean": float(p.p_clean), "degraded_class": n_name,
                     "p_degraded_top1": float(r.top1_prob), "p_degraded_clean_class": float(p.p_degraded)})
    note = ""
    if missing:
        note = (f'<p class="note">{missing} example(s) could not be shown: the original image was not found '
                f"(data moved?). {esc(src.note)}</p>")
    if not cards:
        return SectionOutput(note, {"examples": [], "note": src.note or "images not found"}, "")
    html = ('<p class="note">Chosen automatically: the images whose clean-class probability fell most, each at the '
            "mildest level reaching 90% of its largest drop; regenerated with the run's seed.</p>"
            f'<div class="examples">{"".join(cards)}</div>{note}')
    md_t = "| clean | degraded | what changed |\n|---|---|---|\n" + "\n".join(md)
    return SectionOutput(html, {"examples": summ}, md_t)


# ---------------------------------------------------------------- confusion
def _confusion(ctx: ReportContext) -> SectionOutput | None:
    from weakspot.report.figures import auc_figure, axis_label

    a = ctx.analysis
    pairs = a.confused_pairs
    if pairs.empty:
        return SectionOutput('<p class="note">No prediction changed under any degradation.</p>',
                             {"pairs": [], "auc": [], "reason": "no flips"}, "")
    cols = {"degradation": "degradation", "from_name": "clean top-1", "to_name": "became", "count": "flips",
            "first_level": "first at", "worst_level": "most at", "worst_share": "share there"}
    fmt = {"worst_share": lambda v: f"{v:.0%}"}
    top = pairs.sort_values(["count", "degradation", "rank"], ascending=[False, True, True], kind="stable").head(12)
    t, _ = ctx.table(top, cols, fmt)
    t_all, tm = ctx.table(pairs, cols, fmt)
    parts = ["<h3>Most frequent confusions (clean prediction → degraded prediction, summed over levels)</h3>", t]
    if len(pairs) > len(top):
        parts.append(f"<details><summary>Top confused pairs of every degradation ({len(pairs)})</summary>"
                     f"{t_all}</details>")
    md = [tm]
    # flip matrices at the strongest level, restricted to the classes involved in the most flips
    from weakspot.analysis import flip_matrix
    from weakspot.report.figures import flip_matrix_figure

    fm_figs = []
    for deg in list(dict.fromkeys(pairs.degradation))[:6]:
        strongest = ctx.run.degraded[ctx.run.degraded.degradation == deg].sort_values("order").iloc[-1]
        m = flip_matrix(ctx.run, strongest.condition_id, names=False)
        off = m.to_numpy().copy()
        np.fill_diagonal(off, 0)
        if off.sum() == 0:
            continue
        involvement = pd.Series(off.sum(0) + off.sum(1), index=m.index)
        keep = involvement[involvement > 0].sort_values(ascending=False).index[:12]
        keep = sorted(keep)
        sub = m.loc[keep, keep]
        sub.index = [ctx.run.class_name(k) for k in keep]
        sub.columns = sub.index
        h, mm = ctx.figure(flip_matrix_figure(sub, f"{deg} at {strongest.level}"), f"flips-{deg}",
                           f"flip matrix of {deg} at {strongest.level}")
        fm_figs.append(f"<div>{h}</div>")
        md.append(mm)
    if fm_figs:
        parts.append("<h3>Flip matrices at the strongest level (clean top-1 → degraded top-1; grey = unchanged)"
                     f"</h3><div class='grid3'>{''.join(fm_figs)}</div>")
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
            h, m = ctx.figure(auc_figure(g, deg, cx.get(deg), xl), f"auc-{deg}", f"AUC against level, {deg}")
            figs.append(f"<div>{h}</div>")
            md.append(m)
        if not figs:
            reason = reason or ("the confused classes have no images of their own in this data set (AUC needs "
                                "images of both classes)")
    if figs:
        parts.append("<h3>Separability of the confused pairs: AUC of p(new class) over images of both classes</h3>"
                     '<p class="note">1 = the model still tells them apart; 0.5 = chance; below 0.5 the original '
                     "class looks more like the new one than the new one does. Clean is the first point.</p>"
                     f"<div class='two'>{''.join(figs)}</div>")
    if reason:
        parts.append(f'<p class="note">AUC curves: {esc(reason)}.</p>')
        md.append(f"AUC curves: {reason}.")
    return SectionOutput("".join(parts), {"pairs": pairs, "auc": auc, "reason": reason}, "\n\n".join(md))


# ---------------------------------------------------------------- breaking points
def _breaking(ctx: ReportContext) -> SectionOutput | None:
    a = ctx.analysis
    b = a.breaking_p
    if b.empty:
        return None
    pooled = b[b["class"] == -1]
    per = b[b["class"] != -1].copy()
    # most fragile classes first: earliest crossing in mild-to-severe order of the axis
    per["_rank"] = per.groupby("degradation").breaking_x.rank(method="first")
    reached = per[per.status.isin(["interpolated", "before_first_level"])]
    show = pd.concat([pooled, reached[reached._rank <= 5]]).sort_values(["degradation", "class"])
    cols = {"degradation": "degradation", "class_name": "class", "clean_value": "clean p", "label": "breaks at",
            "final_value": "p at strongest", "final_level": "strongest level"}
    t, tm = ctx.table(show, cols, {"clean_value": _p, "final_value": _p})
    acc_b = a.breaking[a.breaking["class"] == -1]
    t2, tm2 = ctx.table(acc_b, {"degradation": "degradation", "clean_value": "clean accuracy", "label": "breaks at",
                                 "final_value": "at strongest", "final_level": "strongest level"},
                        {"clean_value": _f, "final_value": _f})
    html = ('<p class="note">Where the mean probability of the clean class (per class) or the accuracy (all '
            "images) falls to half its clean value, linearly interpolated between levels; ≤ x: already at the "
            "first level.</p><h3>Accuracy, all images</h3>" + t2 +
            "<h3>Mean p(clean class): all classes and the 5 most fragile per degradation</h3>" + t)
    n_not = int((per.status == "not_reached").sum())
    html += f'<p class="note">{n_not} class × degradation combination(s) never fell to half.</p>'
    return SectionOutput(html, {"accuracy": acc_b.drop(columns=["_rank"], errors="ignore"),
                                "p_clean": b.drop(columns=["_rank"], errors="ignore")}, tm2 + "\n\n" + tm)


# ---------------------------------------------------------------- adaptive breaking points
def _adaptive(ctx: ReportContext) -> SectionOutput | None:
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
        h, m = ctx.table(df, {"class_name": "class", "n_images": "images", "clean_value": "clean",
                              "breaks at": "breaks at", "status": "status", "n_evals": "evaluations"},
                         {"clean_value": _p})
        saved = meta.get("saved", 0)
        total = meta.get("grid_image_evaluations", 0) or 1
        parts.append(f"<h3>{esc(deg)}: {esc(meta.get('axis', ''))} in [{esc(meta.get('mild'))}, "
                     f"{esc(meta.get('severe'))}]{esc(unit)}, resolution {esc(meta.get('tol'))}</h3>"
                     f"<p>{esc(meta.get('adaptive_image_evaluations'))} image evaluations instead of "
                     f"{esc(meta.get('grid_image_evaluations'))} for a {esc(meta.get('grid_points'))}-point grid "
                     f"(<b>{saved / total:.0%} saved</b>).</p>{h}")
        md.append(f"**{deg}** — {saved} of {total} image evaluations saved\n\n{m}")
        summ[deg] = {"meta": meta, "classes": df.drop(columns=["breaks at"])}
    return SectionOutput("".join(parts), summ, "\n\n".join(md))


def builtin_sections() -> list[Section]:
    return [
        Section("overview", "Overview and findings", _overview, 10),
        Section("accuracy", "Accuracy against the physical parameter", _accuracy, 20),
        Section("heatmap", "Classes × degradations", _heatmap, 30),
        Section("classes", "Most and least affected classes", _classes, 40),
        Section("examples", "Examples: clean vs degraded", _examples, 50),
        Section("confusion", "Confusions", _confusion, 60),
        Section("breaking", "Breaking points", _breaking, 70),
        Section("adaptive", "Adaptive breaking points (bisection)", _adaptive, 75),
        Section("perception", "Perception: image quality and saliency", _perception, 78),
    ]


def _perception(ctx: ReportContext) -> SectionOutput | None:
    """Rendered by weakspot.quality (only when 'weakspot perceive RUN_DIR' has run)."""
    from weakspot.quality.report_section import render_perception

    return render_perception(ctx)
