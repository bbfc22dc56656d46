"""The report section "Fix: before / after": renders ``RUN_DIR/fix/fix.json`` (no new computation).

Importing this module registers the section with :func:`weakspot.report.register_section`.
"""

from __future__ import annotations

import pandas as pd

from weakspot.report import Section, SectionOutput, esc, register_section
from weakspot.robustify.fix import load_fix

__all__ = ["render_fix"]


def _pct(v) -> str:
    return "—" if pd.isna(v) else f"{100 * v:.1f}%"


def _gain(v) -> str:
    return "—" if pd.isna(v) else f"{100 * v:+.1f} pts"


def render_fix(ctx) -> SectionOutput | None:
    fx = load_fix(ctx.run.root)
    if fx is None:
        return None
    ba = pd.DataFrame(fx["before_after"])
    overall = ba[ba.cls == "all"]
    worst = {w["worst_condition"] for w in fx["weaknesses"]}
    per = ba[(ba.cls != "all") & ba.condition_id.isin(worst)]
    per = per.sort_values("gain", ascending=False).head(15)
    t1, m1 = ctx.table(overall, {"condition_id": "condition", "before": "before", "after": "after", "gain": "gain"},
                       {"before": _pct, "after": _pct, "gain": _gain})
    t2, m2 = ctx.table(per, {"condition_id": "condition", "cls": "class", "before": "before", "after": "after",
                             "gain": "gain"}, {"before": _pct, "after": _pct, "gain": _gain})
    ws = ", ".join(f"{esc(w['degradation'])} (−{100 * w['drop']:.0f} pts)" for w in fx["weaknesses"])
    method = "robust training (fine-tuned on degraded images)" if fx["method"] == "robust" else \
        "the enhancement front-end (frozen model)"
    intro = (f"<p>Weaknesses fixed: {ws}. Fix: {esc(method)}, trained on {esc(fx['training_data']['name'])} "
             f"({fx['training_data']['train']} images, levels {esc(fx['train_range'])}, "
             f"{100 * fx['p_clean']:.0f}% kept clean), then the same sweep was re-run "
             f"(<code>{esc(fx['after_run'])}</code>).</p>")
    html = intro + "<h3>Top-1 accuracy per condition</h3>" + t1 + "<h3>Largest per-class gains at the worst condition of each weakness</h3>" + t2
    md = f"Fix: {method}.\n\n{m1}\n\n{m2}"
    return SectionOutput(html, {"method": fx["method"], "before_after": overall}, md)


register_section(Section("fix", "Fix: before / after", render_fix, 95))
