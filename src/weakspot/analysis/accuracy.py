"""Accuracy per condition with bootstrap intervals, corruption error and mCE."""

from __future__ import annotations

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run
from weakspot.analysis.stats import bootstrap_mean_ci
from weakspot.evaluate.store import CLEAN

__all__ = ["accuracy_table", "corruption_errors", "mean_corruption_error", "ALEXNET_ERR", "ALEXNET_CLEAN_ERR"]

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


def accuracy_table(store: StoreLike, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Top-1/top-5 accuracy of every condition with percentile-bootstrap intervals.

    One row per condition (``clean`` first, then each degradation mild → severe):
    ``condition_id, degradation, family, level, x, axis, axis_unit, severity, n,
    n_labelled, top1, top1_lo, top1_hi, top5, top5_lo, top5_hi, agreement,
    agreement_lo, agreement_hi, mean_p_clean_class``.

    ``top1``/``top5`` use labelled images only (NaN when none is labelled);
    ``agreement`` is the share of images whose top-1 equals the clean top-1 (all
    images, labels not needed); ``mean_p_clean_class`` the mean probability of the
    clean top-1 class.
    """
    run = load_run(store)
    r = run.rows
    cond_ids = [CLEAN] + list(run.degraded.condition_id)
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
        vals = r[col].to_numpy(dtype=float)[mask]
        keys, mean, lo, hi = bootstrap_mean_ci(vals, gid[mask], n_boot=n_boot, ci=ci, seed=seed)
        for suffix, arr in (("", mean), ("_lo", lo), ("_hi", hi)):
            col_vals = np.full(len(cond_ids), np.nan)
            col_vals[keys.astype(int)] = arr
            out[name + suffix] = col_vals
    out["mean_p_clean_class"] = (
        r.groupby("condition_id")["p_clean_top1"].mean().reindex(cond_ids).to_numpy()
    )
    meta = run.conditions.set_index("condition_id")
    for c in ("degradation", "family", "level", "x", "axis", "axis_unit", "severity", "order"):
        out[c] = meta[c].reindex(cond_ids).to_numpy()
    first = ["condition_id", "degradation", "family", "level", "x", "axis", "axis_unit", "severity", "order"]
    return out[first + [c for c in out.columns if c not in first]]


def _errors_by_condition(store: StoreLike) -> pd.DataFrame:
    acc = accuracy_table(store, n_boot=1)
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
    ``degradation, family, n_levels, mean_error, clean_error, ce, relative_ce, reference``
    (``reference`` is ``'alexnet'``, ``'baseline'`` or ``''`` when no reference applies).
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
            raise InvalidParameterError("baseline", str(baseline), "the directory of a finished 'weakspot run'")
        base = _errors_by_condition(baseline if isinstance(baseline, RunData) else load_run(baseline))
        base = base.set_index("condition_id")
        base_clean = float(base.loc[CLEAN, "err"]) if CLEAN in base.index else np.nan
    rows = []
    for deg, g in mine[mine.condition_id != CLEAN].groupby("degradation", sort=False):
        fam = str(g.family.iloc[0])
        row = {"degradation": deg, "family": fam, "n_levels": len(g), "mean_error": g.err.mean(),
               "clean_error": clean_err, "ce": np.nan, "relative_ce": np.nan, "reference": ""}
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
    return pd.DataFrame(rows, columns=["degradation", "family", "n_levels", "mean_error", "clean_error", "ce",
                                       "relative_ce", "reference"])


def mean_corruption_error(ce_table: pd.DataFrame) -> dict:
    """mCE and relative mCE (means over the degradations that have a reference)."""
    t = ce_table[ce_table.reference != ""]
    return {
        "mce": float(t.ce.mean()) if len(t) else None,
        "relative_mce": float(t.relative_ce.mean()) if len(t) else None,
        "n_degradations": int(len(t)),
        "reference": str(t.reference.iloc[0]) if len(t) else "",
    }
