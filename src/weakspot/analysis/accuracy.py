"""Accuracy per condition with Wilson intervals and paired tests against clean, corruption error and mCE."""

from __future__ import annotations

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run
from weakspot.analysis.paired import holm, mcnemar_exact, paired_difference_ci, wilson_interval
from weakspot.evaluate.store import CLEAN

__all__ = [
    "accuracy_table",
    "CAMERA_REFERENCE",
    "corruption_errors",
    "mean_corruption_error",
    "ALEXNET_ERR",
    "ALEXNET_CLEAN_ERR",
]

#: AlexNet's top-1 error on ImageNet-C per corruption, averaged over severities 1–5
#: (Hendrycks & Dietterich, ICLR 2019; the values their evaluation code and
#: later work normalise by). mCE = mean over these 15 corruptions of CE_c.
ALEXNET_ERR: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
#: AlexNet's clean ImageNet top-1 error (same source), for relative CE.
ALEXNET_CLEAN_ERR = 0.4345


#: the condition id of the camera's own reference rendering (the camera pipeline with every
#: degradation at its neutral setting); camera damage is also measured against it
from weakspot.analysis._data import CAMERA_REFERENCE  # noqa: E402


def _paired_vs(
    r: pd.DataFrame, ref_hit: pd.Series, col: str, mask: np.ndarray, cond_ids: list[str], ci: float
) -> dict[str, np.ndarray]:
    """Exact McNemar and Newcombe interval of ``col`` (0/1) per condition against the same images'
    ``ref_hit`` (indexed by image_index)."""
    m = len(cond_ids)
    out = {k: np.full(m, np.nan) for k in ("diff", "diff_lo", "diff_hi", "p", "n_pairs", "b", "c")}
    rr = r[mask]
    ref = ref_hit.reindex(rr.image_index).to_numpy()
    ok = ~pd.isna(ref)
    rr, ref = rr[ok], ref[ok].astype(bool)
    hit = rr[col].to_numpy(dtype=bool)
    idx = {c: i for i, c in enumerate(cond_ids)}
    gid = rr.condition_id.map(idx).to_numpy()
    n11 = np.bincount(gid[ref & hit], minlength=m)
    n10 = np.bincount(gid[ref & ~hit], minlength=m)  # right under the reference only: lost
    n01 = np.bincount(gid[~ref & hit], minlength=m)  # right under the condition only: gained
    n00 = np.bincount(gid[~ref & ~hit], minlength=m)
    n = n11 + n10 + n01 + n00
    diff, lo, hi = paired_difference_ci(n11, n10, n01, n00, ci)
    has = n > 0
    out["diff"] = np.where(has, diff, np.nan)
    out["diff_lo"] = np.where(has, lo, np.nan)
    out["diff_hi"] = np.where(has, hi, np.nan)
    out["p"] = np.where(has, mcnemar_exact(n10, n01), np.nan)
    out["n_pairs"], out["b"], out["c"] = n, n10, n01
    return out


def accuracy_table(
    store: StoreLike,
    *,
    ci: float = 0.95,
    alpha: float = 0.05,
    n_boot: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Top-1/top-5 accuracy of every condition with Wilson intervals and a paired test against clean.

    One row per condition (``clean`` first, then each degradation mild → severe):
    ``condition_id, degradation, family, level, x, axis, axis_unit, severity, order, n,
    n_labelled, top1, top1_lo, top1_hi, top5, top5_lo, top5_hi, agreement, agreement_lo,
    agreement_hi, mean_p_clean_class, metric, n_tested, n_lost, n_gained, diff_vs_clean,
    diff_vs_clean_lo, diff_vs_clean_hi, p_vs_clean, p_vs_clean_holm, significant``.

    ``top1``/``top5`` use labelled images only (NaN when none is labelled);
    ``agreement`` is the share of images whose top-1 equals the clean top-1 (all
    images, labels not needed); ``mean_p_clean_class`` the mean probability of the
    clean top-1 class. Every ``*_lo``/``*_hi`` is a Wilson score interval (binomial; a
    percentile bootstrap of 0/1 values covers far less than nominal at small n).

    ``metric`` names the proportion the paired test is about: ``top1`` when the run has labels
    (labelled images only), else ``agreement`` (with the clean prediction). On the same images,
    ``n_lost`` were right on clean and wrong here, ``n_gained`` the reverse; ``p_vs_clean`` is the
    exact McNemar p-value from these, ``p_vs_clean_holm`` its Holm adjustment across all
    degraded conditions of the run, ``significant`` is ``p_vs_clean_holm < alpha``;
    ``diff_vs_clean`` (condition − clean) has Newcombe's paired score interval. Clean itself has
    NaN there and ``significant`` False.

    When the run has a ``camera_reference`` condition, the camera conditions (family ``camera``)
    also get ``diff_vs_reference``, ``diff_vs_reference_lo/_hi``, ``p_vs_reference`` and
    ``p_vs_reference_holm`` (the same test against the reference rendering; NaN elsewhere).

    ``n_boot``/``seed`` are accepted for backward compatibility and ignored.
    """
    run = load_run(store)
    r = run.rows
    cond_ids = [CLEAN, *run.degraded.condition_id]
    if CAMERA_REFERENCE in set(run.conditions.condition_id) and CAMERA_REFERENCE not in cond_ids:
        cond_ids.insert(1, CAMERA_REFERENCE)
    cindex = {c: i for i, c in enumerate(cond_ids)}
    r = r[r.condition_id.isin(cindex)]
    gid = r.condition_id.map(cindex).to_numpy()
    out = pd.DataFrame({"condition_id": cond_ids})
    out["n"] = np.bincount(gid, minlength=len(cond_ids))
    lab = r.labelled.to_numpy()
    out["n_labelled"] = np.bincount(gid[lab], minlength=len(cond_ids))
    for name, col, mask in (
        ("top1", "correct1", lab),
        ("top5", "correct5", lab),
        ("agreement", "agree", np.ones(len(r), bool)),
    ):
        vals = r[col].to_numpy(dtype=bool)[mask]
        k = np.bincount(gid[mask][vals], minlength=len(cond_ids)).astype(float)
        n = np.bincount(gid[mask], minlength=len(cond_ids)).astype(float)
        lo, hi = wilson_interval(k, n, ci)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(n > 0, k / n, np.nan)
        out[name + "_lo"] = lo
        out[name + "_hi"] = hi
    out["mean_p_clean_class"] = r.groupby("condition_id")["p_clean_top1"].mean().reindex(cond_ids).to_numpy()
    metric = "top1" if run.labelled else "agreement"
    col = "correct1" if run.labelled else "agree"
    mask = lab if run.labelled else np.ones(len(r), bool)
    clean_rows = r[r.condition_id == CLEAN].set_index("image_index")
    t = _paired_vs(r, clean_rows[col], col, mask, cond_ids, ci)
    out["metric"] = metric
    out["n_tested"] = t["n_pairs"].astype(int)
    out["n_lost"] = t["b"].astype(int)
    out["n_gained"] = t["c"].astype(int)
    out["diff_vs_clean"], out["diff_vs_clean_lo"], out["diff_vs_clean_hi"] = (
        t["diff"],
        t["diff_lo"],
        t["diff_hi"],
    )
    is_clean = out.condition_id.to_numpy() == CLEAN
    p = np.where(is_clean, np.nan, t["p"])
    out.loc[is_clean, ["diff_vs_clean", "diff_vs_clean_lo", "diff_vs_clean_hi"]] = np.nan
    out["p_vs_clean"] = p
    # simultaneous intervals (Bonferroni over the run's m degraded conditions): the interval a
    # reader may hold next to the Holm-adjusted verdict without a contradiction
    m_tests = max(int(np.sum(~np.isnan(p))), 1)
    ts = _paired_vs(r, clean_rows[col], col, mask, cond_ids, 1.0 - (1.0 - ci) / m_tests)
    out["diff_vs_clean_adj_lo"] = np.where(is_clean, np.nan, ts["diff_lo"])
    out["diff_vs_clean_adj_hi"] = np.where(is_clean, np.nan, ts["diff_hi"])
    out["p_vs_clean_holm"] = holm(p)
    out["significant"] = np.where(np.isnan(out["p_vs_clean_holm"]), False, out["p_vs_clean_holm"] < alpha)
    out["significant"] = out["significant"].astype(bool)
    meta = run.conditions.set_index("condition_id")
    for c in ("degradation", "family", "level", "x", "axis", "axis_unit", "severity", "order"):
        out[c] = meta[c].reindex(cond_ids).to_numpy()
    if CAMERA_REFERENCE in cindex:
        ref_rows = r[r.condition_id == CAMERA_REFERENCE].set_index("image_index")
        tr = _paired_vs(r, ref_rows[col], col, mask, cond_ids, ci)
        cam = (out.family.to_numpy() == "camera") & (out.condition_id.to_numpy() != CAMERA_REFERENCE)
        out["diff_vs_reference"] = np.where(cam, tr["diff"], np.nan)
        out["diff_vs_reference_lo"] = np.where(cam, tr["diff_lo"], np.nan)
        out["diff_vs_reference_hi"] = np.where(cam, tr["diff_hi"], np.nan)
        pr = np.where(cam, tr["p"], np.nan)
        out["p_vs_reference"] = pr
        out["p_vs_reference_holm"] = holm(pr)
    first = ["condition_id", "degradation", "family", "level", "x", "axis", "axis_unit", "severity", "order"]
    return out[first + [c for c in out.columns if c not in first]]


def _errors_by_condition(store: StoreLike) -> pd.DataFrame:
    acc = accuracy_table(store)
    acc["err"] = 1.0 - acc["top1"]
    return acc


def _imagenet_c_name(degradation: str, family: str) -> str | None:
    base = degradation.split("/")[-1]
    if base in ALEXNET_ERR and (degradation.startswith("imagenet_c/") or family == "imagenet_c"):
        return base
    return None


def corruption_errors(store: StoreLike, baseline: StoreLike | None = None) -> pd.DataFrame:
    """Corruption error (CE) and relative CE per degradation.

    With ``baseline=None`` and an ImageNet model (1000 classes), ImageNet-C
    corruptions are normalised by AlexNet's published errors (:data:`ALEXNET_ERR`):
    ``CE_c = mean_s E_{s,c} / E^AlexNet_c`` and
    ``relCE_c = (mean_s E_{s,c} − E_clean) / (E^AlexNet_c − E^AlexNet_clean)``
    (Hendrycks & Dietterich 2019; exact when all five severities were run).
    With a ``baseline`` run, every degradation present in both runs is normalised
    by the baseline's errors on the same conditions:
    ``CE = Σ_l E_l / Σ_l E^base_l``, ``relCE = Σ_l (E_l − E_clean) / Σ_l (E^base_l − E^base_clean)``.

    Errors are top-1 errors on labelled images. Returns one row per degradation:
    ``degradation, family, n_levels, severities, n_images, mean_error, clean_error, ce, relative_ce,
    reference`` (``reference`` is ``'alexnet'``, ``'baseline'`` or ``''`` when no reference applies;
    ``severities`` lists the ImageNet-C severities run, empty for a physical grid; ``n_images`` the
    labelled images per level).
    """
    run = load_run(store)
    mine = _errors_by_condition(run)
    clean_err = float(mine.loc[mine.condition_id == CLEAN, "err"].iloc[0])
    base = None
    if baseline is not None:
        from pathlib import Path

        from weakspot.analysis._data import RunData
        from weakspot.errors import InvalidParameterError

        if isinstance(baseline, (str, Path)) and not (Path(baseline) / "manifest.json").is_file():
            raise InvalidParameterError(
                "baseline", str(baseline), "the directory of a finished 'weakspot run'"
            )
        base = _errors_by_condition(baseline if isinstance(baseline, RunData) else load_run(baseline))
        base = base.set_index("condition_id")
        base_clean = float(base.loc[CLEAN, "err"]) if CLEAN in base.index else np.nan
    rows = []
    for deg, g in mine[~mine.condition_id.isin([CLEAN, CAMERA_REFERENCE])].groupby("degradation", sort=False):
        fam = str(g.family.iloc[0])
        sevs = sorted(int(v) for v in g.severity.dropna().unique())
        row = {
            "degradation": deg,
            "family": fam,
            "n_levels": len(g),
            "severities": sevs,
            "n_images": int(g.n_labelled.min()),
            "mean_error": g.err.mean(),
            "clean_error": clean_err,
            "ce": np.nan,
            "relative_ce": np.nan,
            "reference": "",
        }
        if base is not None:
            common = [c for c in g.condition_id if c in base.index]
            if common:
                e = g.set_index("condition_id").loc[common, "err"]
                eb = base.loc[common, "err"]
                row["n_levels"] = len(common)
                row["mean_error"] = float(e.mean())
                row["ce"] = float(e.sum() / eb.sum()) if eb.sum() > 0 else np.nan
                den = float((eb - base_clean).sum())
                row["relative_ce"] = float((e - clean_err).sum() / den) if den != 0 else np.nan
                row["reference"] = "baseline"
        elif run.n_classes == 1000:
            name = _imagenet_c_name(deg, fam)
            if name is not None:
                row["ce"] = row["mean_error"] / ALEXNET_ERR[name]
                row["relative_ce"] = (row["mean_error"] - clean_err) / (ALEXNET_ERR[name] - ALEXNET_CLEAN_ERR)
                row["reference"] = "alexnet"
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "degradation",
            "family",
            "n_levels",
            "severities",
            "n_images",
            "mean_error",
            "clean_error",
            "ce",
            "relative_ce",
            "reference",
        ],
    )


def mean_corruption_error(ce_table: pd.DataFrame) -> dict:
    """mCE and relative mCE (means over the degradations that have a reference) and their coverage.

    Keys: ``mce``, ``relative_mce``, ``n_degradations``, ``reference``, and the coverage:
    ``corruptions`` (the ImageNet-C corruptions included), ``missing_corruptions`` (of the 15),
    ``severities`` (the severities every included corruption was run at), ``n_images`` (fewest
    labelled images per level) and ``comparable``: True only for the AlexNet normalisation with all
    15 corruptions at all 5 severities — the only mCE comparable with published values.
    """
    t = ce_table[ce_table.reference != ""]
    names = [d.split("/")[-1] for d in t.degradation]
    sev_sets = [set(s) for s in t.get("severities", pd.Series([[]] * len(t)))]
    common = sorted(set.intersection(*sev_sets)) if sev_sets else []
    ref = str(t.reference.iloc[0]) if len(t) else ""
    comparable = (
        ref == "alexnet"
        and set(names) == set(ALEXNET_ERR)
        and len(names) == len(ALEXNET_ERR)
        and all(s == {1, 2, 3, 4, 5} for s in sev_sets)
    )
    return {
        "mce": float(t.ce.mean()) if len(t) else None,
        "relative_mce": float(t.relative_ce.mean()) if len(t) else None,
        "n_degradations": int(len(t)),
        "reference": ref,
        "corruptions": names,
        "missing_corruptions": [c for c in ALEXNET_ERR if c not in names] if ref == "alexnet" else [],
        "severities": common,
        "n_images": int(t.n_images.min()) if len(t) and "n_images" in t else 0,
        "comparable": bool(comparable),
    }
