"""Confusion under degradation: flip matrices, top confused pairs, AUC-vs-level curves.

A *flip* is an image whose top-1 under a condition differs from its clean top-1.
For a confused pair ``(a → b)`` (clean top-1 ``a`` became ``b``), the new class
``b`` is treated as the ground truth of a binary problem: over the images whose
class (label, or clean top-1 when unlabelled) is ``a`` (negatives) or ``b``
(positives), how well does the model's probability of ``b`` separate them? Its
ROC AUC (scikit-learn) at every level — clean included — gives the AUC-vs-level
curve: near 1 the classes stay apart, 0.5 means ``b``'s probability no longer
tells them apart, below 0.5 images of ``a`` look more like ``b`` than ``b`` does.
This needs the full probability vectors (``store_probs: true`` in the run config).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run
from weakspot.evaluate.store import CLEAN

__all__ = ["flips", "flip_matrix", "top_confused_pairs", "confusion_auc", "NO_PROBS_REASON"]

NO_PROBS_REASON = (
    "full probability vectors were not stored for this run, so ROC/AUC of class pairs cannot be "
    "computed; re-run with 'store_probs: true' in the run config (flip counts below still apply)"
)


def flips(store: StoreLike) -> pd.DataFrame:
    """Counts of clean top-1 → degraded top-1 changes, one row per (condition, from, to).

    Columns: ``condition_id, degradation, level, x, order, from_class, to_class, from_name,
    to_name, kind, count, n_from, share`` where ``n_from`` is the number of images whose clean
    top-1 is ``from_class`` (at this level; ``count <= n_from``) and ``share = count / n_from``.
    ``kind`` is ``'correction'`` when the new top-1 is the image's label (the degradation fixed a
    clean mistake) and ``'confusion'`` otherwise. Unchanged predictions are not listed.
    """
    run = load_run(store)
    r = run.degraded_rows.copy()
    r["kind"] = np.where(r.labelled & (r.top1 == r.label), "correction", "confusion")
    n_from = r.groupby(["condition_id", "clean_top1"]).size().rename("n_from")
    f = (
        r[~r.agree]
        .groupby(["condition_id", "clean_top1", "top1", "kind"])
        .size()
        .rename("count")
        .reset_index()
    )
    f = f.merge(n_from.reset_index(), on=["condition_id", "clean_top1"], how="left")
    f = f.rename(columns={"clean_top1": "from_class", "top1": "to_class"})
    f["share"] = f["count"] / f["n_from"]
    meta = run.conditions.set_index("condition_id")
    for c in ("degradation", "level", "x", "order"):
        f[c] = meta[c].reindex(f.condition_id).to_numpy()
    f["from_name"] = [run.class_name(k) for k in f.from_class]
    f["to_name"] = [run.class_name(k) for k in f.to_class]
    cols = [
        "condition_id",
        "degradation",
        "level",
        "x",
        "order",
        "from_class",
        "to_class",
        "from_name",
        "to_name",
        "kind",
        "count",
        "n_from",
        "share",
    ]
    return (
        f[cols]
        .sort_values(["degradation", "order", "count"], ascending=[True, True, False], kind="stable")
        .reset_index(drop=True)
    )


def flip_matrix(store: StoreLike, condition_id: str, *, names: bool = True) -> pd.DataFrame:
    """Square matrix of counts: rows = clean top-1, columns = top-1 under ``condition_id``
    (diagonal = unchanged), restricted to the classes that occur."""
    run = load_run(store)
    r = run.rows[run.rows.condition_id == condition_id]
    if r.empty:
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError(
            "condition_id", condition_id, "one of " + ", ".join(run.conditions.condition_id)
        )
    m = pd.crosstab(r.clean_top1, r.top1)
    ks = sorted(set(m.index) | set(m.columns))
    m = m.reindex(index=ks, columns=ks, fill_value=0)
    if names:
        m.index = [run.class_name(k) for k in ks]
        m.columns = [run.class_name(k) for k in ks]
    m.index.name, m.columns.name = "clean top-1", "degraded top-1"
    return m


_PAIR_COLS = [
    "degradation",
    "rank",
    "from_class",
    "to_class",
    "from_name",
    "to_name",
    "count",
    "n_from",
    "first_level",
    "first_x",
    "worst_level",
    "worst_share",
    "n_levels",
]


def top_confused_pairs(store: StoreLike, *, k: int = 5) -> pd.DataFrame:
    """The ``k`` most frequent confusions per degradation, counted per level.

    A pair's ``count`` is its number of flipped images at the level where it is largest
    (``worst_level``), never a sum over levels (the same image flips at several levels), so it
    never exceeds ``n_from``, the images whose clean top-1 is ``from_class``; ``worst_share =
    count / n_from``. Corrections (flips to the image's label) are not confusions and are left out.

    Columns: ``degradation, rank, from_class, to_class, from_name, to_name, count, n_from,
    first_level, first_x, worst_level, worst_share, n_levels`` (``n_levels``: levels where the
    pair occurs). Ranked by ``count``, ties by ``n_levels``.
    """
    f = flips(store)
    f = f[f.kind == "confusion"]
    if f.empty:
        return pd.DataFrame(columns=_PAIR_COLS)
    rows = []
    for deg, g in f.groupby("degradation", sort=False):
        g = g.sort_values("order", kind="stable")
        best = g.sort_values(["count", "share", "order"], ascending=[False, False, True], kind="stable")
        best = best.drop_duplicates(["from_class", "to_class"]).copy()
        best["n_levels"] = (
            g.groupby(["from_class", "to_class"])
            .size()
            .reindex(pd.MultiIndex.from_frame(best[["from_class", "to_class"]]))
            .to_numpy()
        )
        # most images at one level first; ties: the pair that occurs at more levels (it starts earlier)
        best = best.sort_values(
            ["count", "n_levels", "from_class", "to_class"],
            ascending=[False, False, True, True],
            kind="stable",
        ).head(k)
        for rank, w in enumerate(best.itertuples(index=False), 1):
            gg = g[(g.from_class == w.from_class) & (g.to_class == w.to_class)]
            rows.append(
                {
                    "degradation": deg,
                    "rank": rank,
                    "from_class": int(w.from_class),
                    "to_class": int(w.to_class),
                    "from_name": w.from_name,
                    "to_name": w.to_name,
                    "count": int(w.count),
                    "n_from": int(w.n_from),
                    "first_level": gg.level.iloc[0],
                    "first_x": gg.x.iloc[0],
                    "worst_level": w.level,
                    "worst_share": float(w.share),
                    "n_levels": int(w.n_levels),
                }
            )
    return pd.DataFrame(rows, columns=_PAIR_COLS)


def confusion_auc(store: StoreLike, *, pairs: pd.DataFrame | None = None, k: int = 5) -> pd.DataFrame:
    """AUC-vs-level curves for confused class pairs (see the module docstring).

    ``pairs``: a frame with ``degradation, from_class, to_class`` (default: the ``k``
    top confused pairs of every degradation). Returns one row per (pair, level),
    clean first (``order`` 0): ``degradation, from_class, to_class, from_name, to_name,
    condition_id, level, x, order, n_pos, n_neg, auc``. ``auc`` is NaN when either
    class has no images. Without stored probabilities the frame is empty and
    ``frame.attrs["reason"]`` explains why.
    """
    from sklearn.metrics import roc_auc_score

    run = load_run(store)
    cols = [
        "degradation",
        "from_class",
        "to_class",
        "from_name",
        "to_name",
        "condition_id",
        "level",
        "x",
        "order",
        "n_pos",
        "n_neg",
        "auc",
    ]
    if pairs is None:
        pairs = top_confused_pairs(run, k=k)
    if pairs.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["reason"] = "no prediction changed under any degradation: there is no confused pair"
        return out
    if not run.has_probs(CLEAN):
        out = pd.DataFrame(columns=cols)
        out.attrs["reason"] = NO_PROBS_REASON
        return out
    ref = run.images.set_index("image_index")
    clean_rows = run.rows[run.rows.condition_id == CLEAN].set_index("image_index")
    ref_class = clean_rows["ref_class"].reindex(ref.index).to_numpy()
    rows = []
    missing = []
    for deg, g in pairs.groupby("degradation", sort=False):
        conds = [(CLEAN, "clean", np.nan, 0)] + [
            (c.condition_id, c.level, c.x, c.order)
            for c in run.degraded[run.degraded.degradation == deg].itertuples()
        ]
        for t in g.itertuples(index=False):
            a, b = int(t.from_class), int(t.to_class)
            sel = np.flatnonzero((ref_class == a) | (ref_class == b))
            y = (ref_class[sel] == b).astype(int)
            for cid, level, x, order in conds:
                key = {
                    "degradation": deg,
                    "from_class": a,
                    "to_class": b,
                    "from_name": run.class_name(a),
                    "to_name": run.class_name(b),
                    "condition_id": cid,
                    "level": level,
                    "x": x,
                    "order": order,
                }
                if not (y.any() and (1 - y).any()):  # one class has no images: no ROC, no need to load
                    rows.append({**key, "n_pos": int(y.sum()), "n_neg": int((1 - y).sum()), "auc": np.nan})
                    continue
                if not run.has_probs(cid):
                    missing.append(cid)
                    continue
                scores = run.probs(cid)[ref.index.to_numpy()[sel], b]
                ok = ~np.isnan(scores)
                yy, ss = y[ok], scores[ok]
                n_pos, n_neg = int(yy.sum()), int((1 - yy).sum())
                auc = float(roc_auc_score(yy, ss)) if n_pos and n_neg else np.nan
                rows.append({**key, "n_pos": n_pos, "n_neg": n_neg, "auc": auc})
    out = pd.DataFrame(rows, columns=cols)
    if missing:
        out.attrs["reason"] = (
            f"probabilities missing for {len(set(missing))} condition(s); their levels are skipped"
        )
    return out
