"""Findings in plain words, generated from the numbers of an :class:`Analysis`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["findings"]


def _p(v: float) -> str:
    """A probability with enough digits to show a collapse (0.78, 0.003)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.2f}" if v >= 0.095 else f"{v:.2g}" if v > 0 else "0"


def _names(names: list[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def findings(analysis) -> pd.DataFrame:
    """Plain-language findings. Accepts an :class:`~weakspot.analysis.Analysis` or anything
    :func:`~weakspot.analysis.analyze` accepts.

    Columns: ``kind`` (``overview``, ``collapse``, ``holds``, ``confusion``, ``caveat``),
    ``degradation``, ``class_name``, ``score`` (how strong the finding is; higher first within
    a kind), ``text``. Text is plain (not escaped): renderers must escape it.
    """
    from weakspot.analysis import Analysis, analyze

    a = analysis if isinstance(analysis, Analysis) else analyze(analysis)
    run = a.run
    rows = []
    acc = a.accuracy
    metric = "top1" if run.labelled else "agreement"
    mname = "top-1 accuracy" if run.labelled else "agreement with the clean prediction"
    clean_v = float(acc.loc[acc.condition_id == "clean", metric].iloc[0])
    overall = a.breaking[a.breaking["class"] == -1].set_index("degradation")
    deg_summary = []
    for deg, g in acc[acc.condition_id != "clean"].groupby("degradation", sort=False):
        g = g.sort_values("order")
        worst = g.loc[g[metric].idxmin()]
        deg_summary.append((deg, float(g[metric].mean()), worst))
        status = overall.loc[deg, "status"] if deg in overall.index else ""
        last = g.iloc[-1]
        if status == "interpolated":
            half = f"; half of it is lost at {overall.loc[deg, 'label']}"
        elif status == "before_first_level":
            half = f"; half of it is already lost at {g.iloc[0].level}"
        else:
            half = f"; it stays above half up to {last.level}"
        wv = float(worst[metric])
        change = f"{mname} {clean_v:.2f} → {wv:.2f} at {worst.level}"
        if abs(clean_v - wv) < 0.005:
            change, half = f"{mname} unchanged ({clean_v:.2f}) up to {last.level}", ""
        rows.append({"kind": "overview", "degradation": deg, "class_name": "", "score": clean_v - wv,
                     "text": f"{deg}: {change}{half}."})
    if len(deg_summary) >= 2:
        deg_summary.sort(key=lambda t: t[1])
        w, b = deg_summary[0], deg_summary[-1]
        rows.append({"kind": "overview", "degradation": "", "class_name": "", "score": 1.0 + clean_v - w[1],
                     "text": f"Most damaging: {w[0]} (mean {mname} over its levels {w[1]:.2f}); "
                             f"least: {b[0]} ({b[1]:.2f}); clean {clean_v:.2f}."})

    dd, dmg = a.damage_by_degradation, a.damage
    fl = a.flips
    bpp = a.breaking_p
    if not dd.empty:
        for deg, g in dd.groupby("degradation", sort=False):
            top = g.sort_values("rank_drop").iloc[0]
            if top.mean_drop <= 0.02:
                continue
            k = int(top["class"])
            d = dmg[(dmg.degradation == deg) & (dmg["class"] == k)].sort_values("order")
            last = d.iloc[-1]
            bprow = bpp[(bpp.degradation == deg) & (bpp["class"] == k)]
            into = fl[(fl.degradation == deg) & (fl.from_class == k) & (fl.to_class != k)]
            targets = into.groupby("to_name")["count"].sum().sort_values(ascending=False).head(2).index.tolist()
            verb = "collapses" if last.p_degraded < 0.5 * last.p_clean else "weakens"
            where = ""
            if len(bprow) and bprow.status.iloc[0] == "interpolated":
                where = f" at {bprow.label.iloc[0]}"
            elif len(bprow) and bprow.status.iloc[0] == "before_first_level":
                where = f" already at {d.iloc[0].level}"
            text = (f"{deg}: {top.class_name} {verb}{where} (p {_p(last.p_clean)} → {_p(last.p_degraded)} at "
                    f"{last.level})")
            if targets:
                text += f", mostly into {_names(targets)}"
            holds = g[(g.mean_drop < max(0.05, 0.2 * top.mean_drop)) & (g["class"] != k)]
            holds = holds.sort_values("mean_drop").head(3)
            if len(holds) and len(g) >= 4:
                text += f"; {_names(holds.class_name.tolist())} hold" + ("s" if len(holds) == 1 else "")
            rows.append({"kind": "collapse", "degradation": deg, "class_name": top.class_name,
                         "score": float(top.mean_drop), "text": text + "."})

    auc = a.auc
    if auc is not None and not auc.empty:
        best_per_deg: dict = {}
        for (deg, fa, fb), g in auc.groupby(["degradation", "from_class", "to_class"], sort=False):
            g = g.sort_values("order")
            if g.auc.isna().all():
                continue
            c0 = g[g.order == 0].auc
            if c0.isna().all():
                continue
            low = g.loc[g.auc.idxmin()]
            if float(c0.iloc[0]) - float(low.auc) < 0.1:
                continue
            score = float(c0.iloc[0]) - float(low.auc)
            if deg in best_per_deg and best_per_deg[deg]["score"] >= score:
                continue
            best_per_deg[deg] = {"kind": "confusion", "degradation": deg, "class_name": low.from_name,
                         "score": score,
                         "text": f"{deg}: {low.from_name} vs {low.to_name} separability (AUC of p({low.to_name})) "
                                 f"falls from {float(c0.iloc[0]):.2f} clean to {float(low.auc):.2f} at {low.level}."}
        rows.extend(best_per_deg.values())

    if not dmg.empty:
        per_class = run.rows[run.rows.condition_id == "clean"].groupby("ref_class").size()
        med = float(np.median(per_class))
        if med < 30:
            rows.append({"kind": "caveat", "degradation": "", "class_name": "", "score": 0.0,
                         "text": f"Per-class results rest on a median of {med:.0f} image(s) per class: class z-scores "
                                 "and ranks are noisy; read them with their bootstrap intervals."})
    out = pd.DataFrame(rows, columns=["kind", "degradation", "class_name", "score", "text"])
    kind_order = {"overview": 0, "collapse": 1, "confusion": 2, "holds": 3, "caveat": 4}
    out["_k"] = out.kind.map(kind_order)
    out = out.sort_values(["_k", "score"], ascending=[True, False], kind="stable").drop(columns="_k")
    return out.reset_index(drop=True)
