""" "What broke": one ranked row per degradation — the first thing the report shows.

For each degradation, its worst level (lowest metric; the mildest of ties), the paired effect
against clean there (difference with Newcombe's interval, exact McNemar p-value Holm-adjusted
across the run), the mildest level whose drop is significant, and the classes that carry the
drop: the classes that lost the most images at the worst level (counts of images, not rates,
so they are observations even for small classes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run

__all__ = ["what_broke"]

COLUMNS = [
    "rank",
    "degradation",
    "family",
    "metric",
    "condition_id",
    "level",
    "clean_value",
    "value",
    "effect",
    "effect_lo",
    "effect_hi",
    "p_holm",
    "significant",
    "first_significant_level",
    "n",
    "n_lost",
    "carriers",
    "effect_vs_reference",
    "effect_vs_reference_lo",
    "effect_vs_reference_hi",
    "p_vs_reference_holm",
]


def what_broke(store: StoreLike, accuracy: pd.DataFrame | None = None, *, k_classes: int = 3) -> pd.DataFrame:
    """Ranked table of the damage of every degradation, largest significant drop first.

    Columns: ``rank, degradation, family, metric, condition_id, level, clean_value, value,
    effect, effect_lo, effect_hi, p_holm, significant, first_significant_level, n, n_lost,
    carriers, effect_vs_reference(_lo/_hi), p_vs_reference_holm``.

    ``metric`` is ``top1`` (labelled images) or ``agreement`` (with the clean prediction);
    ``effect = value − clean_value`` at the worst level (negative = damage) with its paired
    (Newcombe) interval at simultaneous 95% coverage over the run's degraded conditions (Bonferroni:
    each at 1 − 0.05/m), so that it agrees with the Holm-adjusted verdict; ``p_holm``/``significant`` come from :func:`~weakspot.analysis.accuracy_table`;
    ``first_significant_level`` is the mildest level with a significant drop ('' if none);
    ``carriers`` lists up to ``k_classes`` dicts ``{class, class_name, lost, n}``: the classes
    with the most images right on clean and wrong at the worst level (``n``: images of the
    class). The ``*_vs_reference`` columns are filled for camera degradations when the run has a
    ``camera_reference`` condition. Rows are sorted significant first, then by effect.
    """
    from weakspot.analysis.accuracy import accuracy_table

    run = load_run(store)
    acc = accuracy if accuracy is not None else accuracy_table(run)
    metric = "top1" if run.labelled else "agreement"
    col = "correct1" if run.labelled else "agree"
    clean = acc[acc.condition_id == "clean"].iloc[0]
    r = run.rows[run.rows.labelled] if run.labelled else run.rows
    clean_hit = r[r.condition_id == "clean"].set_index("image_index")[col].astype(bool)
    n_class = r[r.condition_id == "clean"].groupby("ref_class").size()
    rows = []
    degraded = acc[acc.condition_id.isin(set(run.degraded.condition_id))]
    for deg, g in degraded.groupby("degradation", sort=False):
        g = g.sort_values("order", kind="stable")
        worst = g.loc[g[metric].idxmin()]  # idxmin: the first (mildest) of ties
        sig = g[g.significant & (g.diff_vs_clean < 0)]
        rr = r[r.condition_id == worst.condition_id]
        lost = clean_hit.reindex(rr.image_index).to_numpy(bool) & ~rr[col].to_numpy(bool)
        per = pd.Series(lost.astype(int), index=rr.ref_class.to_numpy()).groupby(level=0).sum()
        per = per[per > 0].sort_values(ascending=False, kind="stable").head(k_classes)
        carriers = [
            {"class": int(k), "class_name": run.class_name(k), "lost": int(v), "n": int(n_class.get(k, 0))}
            for k, v in per.items()
        ]
        row = {
            "degradation": deg,
            "family": worst.family,
            "metric": metric,
            "condition_id": worst.condition_id,
            "level": worst.level,
            "clean_value": float(clean[metric]),
            "value": float(worst[metric]),
            "effect": float(worst.diff_vs_clean),
            "effect_lo": float(worst.diff_vs_clean_adj_lo),
            "effect_hi": float(worst.diff_vs_clean_adj_hi),
            "p_holm": float(worst.p_vs_clean_holm),
            "significant": bool(worst.significant and worst.diff_vs_clean < 0),
            "first_significant_level": str(sig.level.iloc[0]) if len(sig) else "",
            "n": int(worst.n_tested),
            "n_lost": int(worst.n_lost),
            "carriers": carriers,
        }
        for c_out, c_in in (
            ("effect_vs_reference", "diff_vs_reference"),
            ("effect_vs_reference_lo", "diff_vs_reference_lo"),
            ("effect_vs_reference_hi", "diff_vs_reference_hi"),
            ("p_vs_reference_holm", "p_vs_reference_holm"),
        ):
            row[c_out] = float(worst[c_in]) if c_in in worst.index else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    if out.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = out.sort_values(
        ["significant", "effect", "degradation"], ascending=[False, True, True], kind="stable"
    )
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)
