"""The per-class damage method: probability drops, z-scores and rankings.

Per image and condition, ``drop = p_clean(c) − p_degraded(c)`` where ``c`` is the
clean image's top-1 class. Within one condition every image's drop is turned into
a z-score against all images of that condition (``z = (drop − mean) / std``,
population std as :func:`scipy.stats.zscore`), so a class mean z-score above 0
means "hurt more than the average image under the same degradation". Classes are
the images' labels, or for unlabelled images their clean top-1 class.

With ~10 images per class these z-scores are noisy: read the bootstrap intervals
(``mean_drop_lo``/``mean_drop_hi``, ``mean_z_lo``/``mean_z_hi``) before trusting a rank.
A class with fewer than ``min_images`` images (default
:data:`~weakspot.analysis.paired.MIN_IMAGES_FOR_CLAIM`) gets no interval, no z-score rank and
``claim = False``: the data cannot support a claim about it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run
from weakspot.analysis.paired import MIN_IMAGES_FOR_CLAIM, wilson_interval
from weakspot.analysis.stats import bootstrap_mean_ci
from weakspot.evaluate.store import CLEAN

__all__ = ["image_damage", "class_damage", "degradation_damage", "damage_matrix", "rank_classes"]


def image_damage(store: StoreLike) -> pd.DataFrame:
    """One row per (degraded condition, image): ``drop`` and its z-score ``z``.

    Columns: ``condition_id, degradation, level, x, order, image_index, ref_class,
    p_clean, p_degraded, drop, z, hit, clean_hit, top1, clean_top1``.
    """
    run = load_run(store)
    r = run.degraded_rows.copy()
    g = r.groupby("condition_id")["drop"]
    mu = g.transform("mean")
    sd = g.transform("std", ddof=0)
    r["z"] = np.where(sd > 0, (r["drop"] - mu) / sd.where(sd > 0, 1.0), 0.0)
    clean = run.rows[run.rows.condition_id == CLEAN].set_index("image_index")["hit"]
    r["clean_hit"] = clean.reindex(r.image_index).to_numpy().astype(bool)
    r = r.rename(columns={"p_clean_top1": "p_degraded"})
    cols = [
        "condition_id",
        "degradation",
        "family",
        "level",
        "x",
        "order",
        "image_index",
        "ref_class",
        "p_clean",
        "p_degraded",
        "drop",
        "z",
        "hit",
        "clean_hit",
        "top1",
        "clean_top1",
    ]
    return r[cols].reset_index(drop=True)


def class_damage(
    store: StoreLike,
    *,
    n_boot: int = 500,
    ci: float = 0.95,
    seed: int = 0,
    min_images: int = MIN_IMAGES_FOR_CLAIM,
) -> pd.DataFrame:
    """Damage per (degraded condition, class), ranked within each condition.

    Columns: ``condition_id, degradation, family, level, x, order, class, class_name, n, claim,
    p_clean, p_degraded, mean_drop, std_drop, mean_drop_lo, mean_drop_hi, mean_z, mean_z_lo,
    mean_z_hi, acc_clean, acc, acc_lo, acc_hi, acc_drop, rank_z, rank_drop, rank_acc_drop``.

    ``std_drop`` is the sample standard deviation (ddof=1; NaN for one image);
    ``acc`` is top-1 accuracy for labelled images and agreement with the clean top-1
    for unlabelled ones, ``acc_lo``/``acc_hi`` its Wilson interval; ranks are 1 = most
    affected within the condition. ``claim`` is ``n >= min_images``; classes without it have
    NaN class z-score, intervals and ranks (they are listed with their n, never ranked).
    """
    run = load_run(store)
    im = image_damage(run)
    if im.empty:
        return pd.DataFrame()
    key = ["condition_id", "ref_class"]
    g = im.groupby(key, sort=False)
    out = g.agg(
        n=("drop", "size"),
        p_clean=("p_clean", "mean"),
        p_degraded=("p_degraded", "mean"),
        mean_drop=("drop", "mean"),
        std_drop=("drop", "std"),  # ddof=1, NaN for a single image
        mean_z=("z", "mean"),
        acc_clean=("clean_hit", "mean"),
        acc=("hit", "mean"),
    ).reset_index()
    out["acc_drop"] = out["acc_clean"] - out["acc"]
    out["claim"] = out["n"] >= int(min_images)
    k_hit = g["hit"].sum().reindex(pd.MultiIndex.from_frame(out[key])).to_numpy(dtype=float)
    out["acc_lo"], out["acc_hi"] = wilson_interval(k_hit, out["n"].to_numpy(float), ci)
    # bootstrap of the class mean drop within each condition; z is an affine map of drop
    gid = pd.MultiIndex.from_frame(im[key])
    codes, uniques = pd.factorize(gid)
    keys, _, lo, hi = bootstrap_mean_ci(im["drop"].to_numpy(), codes, n_boot=n_boot, ci=ci, seed=seed)
    ci_frame = pd.DataFrame(
        {
            "condition_id": uniques.get_level_values(0)[keys],
            "ref_class": uniques.get_level_values(1)[keys],
            "mean_drop_lo": lo,
            "mean_drop_hi": hi,
        }
    )
    out = out.merge(ci_frame, on=key, how="left")
    gd = im.groupby("condition_id")["drop"]
    stats = pd.DataFrame({"mu": gd.mean(), "sd": gd.std(ddof=0)})
    mu = stats["mu"].reindex(out.condition_id).to_numpy()
    sd = stats["sd"].reindex(out.condition_id).to_numpy()
    safe = np.where(sd > 0, sd, np.nan)
    out["mean_z_lo"] = np.where(sd > 0, (out["mean_drop_lo"] - mu) / safe, 0.0)
    out["mean_z_hi"] = np.where(sd > 0, (out["mean_drop_hi"] - mu) / safe, 0.0)
    no = ~out["claim"]
    out.loc[no, ["mean_z", "mean_drop_lo", "mean_drop_hi", "mean_z_lo", "mean_z_hi", "acc_lo", "acc_hi"]] = (
        np.nan
    )
    _rank(out, "condition_id")
    meta = run.conditions.set_index("condition_id")
    for c in ("degradation", "family", "level", "x", "order"):
        out[c] = meta[c].reindex(out.condition_id).to_numpy()
    out = out.rename(columns={"ref_class": "class"})
    out["class_name"] = [run.class_name(k) for k in out["class"]]
    cols = [
        "condition_id",
        "degradation",
        "family",
        "level",
        "x",
        "order",
        "class",
        "class_name",
        "n",
        "claim",
        "p_clean",
        "p_degraded",
        "mean_drop",
        "std_drop",
        "mean_drop_lo",
        "mean_drop_hi",
        "mean_z",
        "mean_z_lo",
        "mean_z_hi",
        "acc_clean",
        "acc",
        "acc_lo",
        "acc_hi",
        "acc_drop",
        "rank_z",
        "rank_drop",
        "rank_acc_drop",
    ]
    return (
        out[cols]
        .sort_values(["degradation", "order", "rank_z", "class"], kind="stable")
        .reset_index(drop=True)
    )


def _rank(out: pd.DataFrame, group: str) -> None:
    """Rank columns (1 = most affected) among the rows with ``claim``; NaN for the others."""
    ok = out["claim"].to_numpy(bool) if "claim" in out else np.ones(len(out), bool)
    for col, src in (("rank_z", "mean_z"), ("rank_drop", "mean_drop"), ("rank_acc_drop", "acc_drop")):
        r = out[ok].groupby(group)[src].rank(ascending=False, method="min")
        out[col] = r.reindex(out.index)


def degradation_damage(damage: pd.DataFrame) -> pd.DataFrame:
    """:func:`class_damage` averaged over the levels of each degradation, re-ranked.

    Columns: ``degradation, family, class, class_name, n, claim, mean_drop, mean_z, acc_drop,
    worst_level, worst_level_drop, rank_z, rank_drop, rank_acc_drop`` (rank 1 = most affected,
    among the classes with ``claim``; NaN for the others).
    """
    if damage.empty:
        return pd.DataFrame()
    g = damage.groupby(["degradation", "class"], sort=False)
    out = g.agg(
        family=("family", "first"),
        class_name=("class_name", "first"),
        n=("n", "max"),
        claim=("claim", "all") if "claim" in damage else ("n", lambda s: True),
        mean_drop=("mean_drop", "mean"),
        mean_z=("mean_z", "mean"),
        acc_drop=("acc_drop", "mean"),
    ).reset_index()
    worst = damage.loc[
        damage.groupby(["degradation", "class"])["mean_drop"].idxmax(),
        ["degradation", "class", "level", "mean_drop"],
    ]
    worst = worst.rename(columns={"level": "worst_level", "mean_drop": "worst_level_drop"})
    out = out.merge(worst, on=["degradation", "class"], how="left")
    out["claim"] = out["claim"].astype(bool)
    _rank(out, "degradation")
    return out.sort_values(["degradation", "rank_z", "class"], kind="stable").reset_index(drop=True)


def damage_matrix(damage: pd.DataFrame, metric: str = "mean_drop") -> pd.DataFrame:
    """Classes × degradations matrix of ``metric`` averaged over levels (rows: class names,
    sorted by their mean over degradations, most damaged first)."""
    if damage.empty:
        return pd.DataFrame()
    agg = degradation_damage(damage)
    m = agg.pivot_table(index="class_name", columns="degradation", values=metric, aggfunc="mean")
    return m.loc[m.mean(axis=1).sort_values(ascending=False).index]


def rank_classes(table: pd.DataFrame, *, by: str = "mean_z", k: int = 5, group: str = "degradation") -> dict:
    """The ``k`` most and least affected classes per ``group`` (``degradation`` or
    ``condition_id``) of :func:`class_damage` / :func:`degradation_damage` output.

    Returns ``{group_value: {"worst": DataFrame, "best": DataFrame}}``; with fewer than ``2k``
    classes ``best`` holds only the classes not already in ``worst``. Only classes with
    ``claim`` (enough images) are ranked; a group without any is left out.
    """
    out = {}
    if "claim" in table:
        table = table[table["claim"].astype(bool)]
    for key, g in table.groupby(group, sort=False):
        s = g.sort_values([by, "class"], ascending=[False, True], kind="stable")
        worst = s.head(k)
        best = s.iloc[len(worst) :].tail(k).iloc[::-1]  # never repeats a class listed as worst
        out[key] = {"worst": worst, "best": best}
    return out
