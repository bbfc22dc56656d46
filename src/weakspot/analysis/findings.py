"""Findings in plain words, generated from the numbers of an :class:`Analysis`.

Every sentence names one metric — *top-1 accuracy* (labelled images) or *agreement with the clean
prediction* (unlabelled images) — and it is the same metric as the breaking points and the
accuracy table use, so a finding never contradicts a table. Each finding row carries where its
numbers come from (``condition_id``, ``class``), and every number in its text is one of those
rows' values rounded for print (tests check this). Per-class findings are made only for classes
with at least ``analysis.min_per_class`` images.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["findings", "fmt_p", "fmt_value", "metric_name"]

FINDING_COLUMNS = ["kind", "degradation", "class_name", "class", "condition_id", "metric", "score", "text"]


def fmt_value(v: float) -> str:
    """A proportion as printed in findings and tables (two decimals)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.2f}"


def fmt_p(p: float) -> str:
    """A p-value as printed: ``'p < 0.001'`` or ``'p = 0.034'``."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def metric_name(labelled: bool) -> str:
    return "top-1 accuracy" if labelled else "agreement with the clean prediction"


def _names(names: list[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _row(kind, text, score, degradation="", class_name="", cls=None, condition_id="", metric=""):
    return {
        "kind": kind,
        "degradation": degradation,
        "class_name": class_name,
        "class": -1 if cls is None else int(cls),
        "condition_id": condition_id,
        "metric": metric,
        "score": float(score),
        "text": text,
    }


def findings(analysis) -> pd.DataFrame:
    """Plain-language findings. Accepts an :class:`~weakspot.analysis.Analysis` or anything
    :func:`~weakspot.analysis.analyze` accepts.

    Columns: ``kind`` (``overview``, ``collapse``, ``confusion``, ``caveat``), ``degradation``,
    ``class_name``, ``class`` (−1 when not about one class), ``condition_id`` (the level the
    numbers are read at), ``metric`` (``top1``, ``agreement``, ``auc`` or ``''``), ``score`` (how
    strong the finding is; higher first within a kind), ``text``. Text is plain (not escaped):
    renderers must escape it.
    """
    from weakspot.analysis import Analysis, analyze

    a = analysis if isinstance(analysis, Analysis) else analyze(analysis)
    run = a.run
    rows = []
    acc = a.accuracy
    metric = "top1" if run.labelled else "agreement"
    mname = metric_name(run.labelled)
    clean_v = float(acc.loc[acc.condition_id == "clean", metric].iloc[0])
    overall = a.breaking[a.breaking["class"] == -1].set_index("degradation")
    deg_summary = []
    degraded = acc[acc.condition_id.isin(set(run.degraded.condition_id))]
    for deg, g in degraded.groupby("degradation", sort=False):
        g = g.sort_values("order")
        worst = g.loc[g[metric].idxmin()]
        deg_summary.append((deg, float(g[metric].mean())))
        status = overall.loc[deg, "status"] if deg in overall.index else ""
        last = g.iloc[-1]
        if status == "interpolated":
            half = f"; half of it is lost at {overall.loc[deg, 'label']}"
        elif status == "before_first_level":
            half = f"; half of it is already lost at {g.iloc[0].level}"
        else:
            half = f"; it stays above half up to {last.level}"
        wv = float(worst[metric])
        if worst.significant:
            sig = f"a real drop ({fmt_p(worst.p_vs_clean_holm)}, Holm-adjusted)"
        else:
            sig = f"not significant ({fmt_p(worst.p_vs_clean_holm)}, Holm-adjusted)"
        change = (
            f"{mname} {fmt_value(clean_v)} on clean → {fmt_value(wv)} at {worst.level} "
            f"(n = {int(worst.n_tested)}), {sig}"
        )
        if fmt_value(clean_v) == fmt_value(wv):
            change, half = f"{mname} unchanged ({fmt_value(clean_v)}) up to {last.level}", ""
        rows.append(
            _row(
                "overview",
                f"{deg}: {change}{half}.",
                clean_v - wv,
                deg,
                condition_id=worst.condition_id,
                metric=metric,
            )
        )
    if len(deg_summary) >= 2:
        deg_summary.sort(key=lambda t: t[1])
        w, b = deg_summary[0], deg_summary[-1]
        rows.append(
            _row(
                "overview",
                f"Most damaging: {w[0]} (mean {mname} over its levels {fmt_value(w[1])}); "
                f"least: {b[0]} ({fmt_value(b[1])}); clean {fmt_value(clean_v)}.",
                1.0 + clean_v - w[1],
                metric=metric,
            )
        )

    dmg = a.damage
    min_n = int(getattr(a, "min_per_class", 5))
    pairs = a.confused_pairs
    bp = a.breaking
    if not dmg.empty:
        ok = dmg[dmg["claim"]] if "claim" in dmg else dmg
        dd = a.damage_by_degradation
        dd = dd[dd["claim"]] if "claim" in dd else dd
        for deg, g in ok.groupby("degradation", sort=False):
            # the class that loses most of the metric averaged over the levels (it breaks earliest),
            # read at the mildest level where it is lowest
            cand = dd[dd.degradation == deg].sort_values(
                ["acc_drop", "class"], ascending=[False, True], kind="stable"
            )
            if cand.empty:
                continue
            k = int(cand["class"].iloc[0])
            top = g[g["class"] == k].sort_values(["acc", "order"], kind="stable").iloc[0]
            if not top.acc_drop >= 0.2:
                continue
            bprow = bp[(bp.degradation == deg) & (bp["class"] == k)]
            verb = "collapses" if top.acc <= 0.5 * top.acc_clean else "weakens"
            where = ""
            if len(bprow) and bprow.status.iloc[0] == "interpolated":
                where = f" (half lost at {bprow.label.iloc[0]})"
            elif len(bprow) and bprow.status.iloc[0] == "before_first_level":
                first = run.degraded[run.degraded.degradation == deg].sort_values("order").level.iloc[0]
                where = f" (half already lost at {first})"
            text = (
                f"{deg}: {top.class_name} {verb}{where}: {mname} {fmt_value(top.acc_clean)} on clean → "
                f"{fmt_value(top.acc)} at {top.level} (n = {int(top.n)})"
            )
            into = pairs[(pairs.degradation == deg) & (pairs.from_class == k)] if not pairs.empty else pairs
            if len(into):
                text += f", mostly into {_names(into.sort_values('rank').to_name.head(2).tolist())}"
            same = g[(g.condition_id == top.condition_id) & (g["class"] != k)]
            holds = same[same.acc_drop <= 0.0].sort_values(["acc", "class"], ascending=[False, True]).head(3)
            if len(holds) and len(same) >= 3:
                keep = "keeps its clean value" if len(holds) == 1 else "keep their clean values"
                text += f"; {_names(holds.class_name.tolist())} {keep} there"
            rows.append(
                _row(
                    "collapse",
                    text + ".",
                    float(top.acc_drop),
                    deg,
                    top.class_name,
                    k,
                    top.condition_id,
                    metric,
                )
            )

    auc = a.auc
    if auc is not None and not auc.empty:
        best_per_deg: dict = {}
        for (deg, fa, _fb), g in auc.groupby(["degradation", "from_class", "to_class"], sort=False):
            g = g.sort_values("order")
            if g.auc.isna().all():
                continue
            c0 = g[g.order == 0].auc
            if c0.isna().all():
                continue
            if min(int(g.n_pos.min()), int(g.n_neg.min())) < min_n:
                continue
            low = g.loc[g.auc.idxmin()]
            if float(c0.iloc[0]) - float(low.auc) < 0.1:
                continue
            score = float(c0.iloc[0]) - float(low.auc)
            if deg in best_per_deg and best_per_deg[deg]["score"] >= score:
                continue
            best_per_deg[deg] = _row(
                "confusion",
                f"{deg}: {low.from_name} vs {low.to_name} separability (AUC of p({low.to_name})) "
                f"falls from {float(c0.iloc[0]):.2f} clean to {float(low.auc):.2f} at {low.level}.",
                score,
                deg,
                low.from_name,
                fa,
                low.condition_id,
                "auc",
            )
        rows.extend(best_per_deg.values())

    if not dmg.empty:
        per_class = run.rows[run.rows.condition_id == "clean"].groupby("ref_class").size()
        med = float(np.median(per_class))
        n_small = int((per_class < min_n).sum())
        if n_small == len(per_class):
            rows.append(
                _row(
                    "caveat",
                    f"Every class has fewer than {min_n} images (median {med:.0f}): the data "
                    "cannot support per-class claims, so none is made; the report shows "
                    "per-image observations instead.",
                    0.0,
                )
            )
        elif n_small:
            rows.append(
                _row(
                    "caveat",
                    f"{n_small} of {len(per_class)} classes have fewer than {min_n} images: "
                    "they are listed but never ranked or named in findings.",
                    0.0,
                )
            )
        if n_small < len(per_class) and med < 30:
            rows.append(
                _row(
                    "caveat",
                    f"Per-class results rest on a median of {med:.0f} image(s) per class: "
                    "class rankings are noisy; read them with their intervals.",
                    0.0,
                )
            )
    out = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    kind_order = {"overview": 0, "collapse": 1, "confusion": 2, "caveat": 4}
    out["_k"] = out.kind.map(kind_order)
    out = out.sort_values(["_k", "score"], ascending=[True, False], kind="stable").drop(columns="_k")
    return out.reset_index(drop=True)
