"""The report section "Fix: before / after": renders ``RUN_DIR/fix/fix.json`` (no new computation).

Importing this module registers the section with :func:`weakspot.report.register_section`.
Every number and verdict shown comes from ``fix.json`` (written by
:func:`weakspot.robustify.fix.fix_run`): the paired before/after comparison per condition and
per class, with its interval, exact McNemar p, Holm-adjusted p and verdict.
"""

from __future__ import annotations

import pandas as pd

from weakspot.report import Section, SectionOutput, esc, register_section
from weakspot.robustify.fix import load_fix

__all__ = ["render_fix"]


def _pct(v) -> str:
    return "—" if pd.isna(v) else f"{100 * v:.1f}%"


def _pts(v) -> str:
    return "—" if pd.isna(v) else f"{100 * v:+.1f}"


def _p(v) -> str:
    return "—" if pd.isna(v) else f"{v:.2g}"


_COLUMNS = {
    "n": "n",
    "before": "before",
    "after": "after",
    "gain": "gain (pts)",
    "ci": "95% CI (pts)",
    "p": "McNemar p",
    "p_holm": "Holm p",
    "verdict": "verdict",
}
_FORMATS = {"before": _pct, "after": _pct, "gain": _pts, "p": _p, "p_holm": _p, "n": lambda v: str(int(v))}


def render_fix(ctx) -> SectionOutput | None:
    fx = load_fix(ctx.run.root)
    if fx is None:
        return None
    ba = pd.DataFrame(fx["before_after"])
    if "verdict" not in ba.columns:  # written before fixes were tested: no claim can be shown
        html = (
            "<p>This fix was recorded by an older weakspot without a paired test; run "
            "<code>weakspot fix</code> again to get before/after verdicts.</p>"
        )
        return SectionOutput(
            html, {"method": fx.get("method")}, "Fix recorded without a paired test; re-run it."
        )
    ba["ci"] = [f"{_pts(lo)} … {_pts(hi)}" for lo, hi in zip(ba.gain_lo, ba.gain_hi, strict=True)]
    overall = ba[ba.cls == "all"]
    worst = {w["worst_condition"] for w in fx["weaknesses"]}
    per = ba[(ba.cls != "all") & ba.condition_id.isin(worst)].sort_values(["condition_id", "cls"])
    t1, m1 = ctx.table(overall, {"condition_id": "condition", **_COLUMNS}, _FORMATS)
    t2, m2 = ctx.table(per, {"condition_id": "condition", "cls": "class", **_COLUMNS}, _FORMATS)
    ws = ", ".join(
        f"{esc(w['degradation'])} (−{100 * w['drop']:.0f} pts at {esc(w['worst_condition'])})"
        for w in fx["weaknesses"]
    )
    method = (
        "robust training (fine-tuned on degraded images)"
        if fx["method"] == "robust"
        else "the enhancement front-end (frozen model)"
    )
    td = fx["training_data"]
    overlap = ""
    if td.get("n_overlap"):
        overlap = f" {td['n_overlap']} candidate training images were also evaluated images and were " + (
            "<b>kept (--allow-overlap): the after-fix accuracy is optimistic</b>."
            if td.get("allow_overlap")
            else "left out, so no evaluated image was trained on."
        )
    lines = fx.get("summary", [])
    intro = (
        f"<p><b>{esc(lines[0]) if lines else ''}</b></p>"
        + ("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in lines[1:]) + "</ul>" if len(lines) > 1 else "")
        + f"<p>Weaknesses targeted: {ws}. Fix: {esc(method)}, trained on {esc(td['name'])} "
        f"({td['train']} images, levels {esc(fx['train_range'])}, {100 * fx['p_clean']:.0f}% kept clean), "
        f"then the same sweep was re-run (<code>{esc(fx['after_run'])}</code>).{overlap}</p>"
        "<p>Each row compares the same images before and after the fix: the gain's 95% interval is "
        "Newcombe's paired score interval, p is the exact McNemar test, Holm p corrects it across the rows "
        "of the table. A gain is called <i>better</i> only when the Holm p is below 0.05 and the interval "
        f"excludes 0; with fewer than {fx.get('min_images', 30)} images a row says <i>too few images</i>.</p>"
    )
    html = (
        intro
        + "<h3>Top-1 accuracy per condition</h3>"
        + t1
        + "<h3>Per class at the worst condition of each weakness</h3>"
        + t2
    )
    md = "Fix: " + method + ".\n\n" + "\n".join(f"- {x}" for x in lines) + f"\n\n{m1}\n\n{m2}"
    return SectionOutput(html, {"method": fx["method"], "summary": lines, "before_after": overall}, md)


register_section(Section("fix", "Fix: before / after", render_fix, 95))
