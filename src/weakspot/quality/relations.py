"""Relations between image quality, what the model gets right and where it looks.

:func:`perceive` runs on a finished run directory (a
:class:`~weakspot.evaluate.store.ResultsStore`). For a sample of images and every
condition it regenerates the degraded images exactly as the run did (the
evaluation engine's :func:`~weakspot.evaluate.apply_condition` with its keyed
generators), then measures

* image quality: NIQE and BRISQUE at the image's native resolution (where the
  degradation was applied), higher = worse;
* saliency on the model view, explained for the clean image's top-1 class so clean
  and degraded maps are comparable: Grad-CAM (raw strength) for a PyTorch module
  with a spatial layer, otherwise occlusion (gradient-free: ONNX, TorchScript), or
  none (``saliency="none"``); see :func:`choose_saliency`;
* spatial agreement: a BRISQUE patch map on the model view against the saliency
  pooled to the same cells (Pearson, Spearman, top-k% overlap);
* saliency movement under the degradation: centroid shift (fraction of the
  diagonal), ``1 − cosine`` and the strength ratio degraded / clean;

and relates them to the run's predictions: quality vs correct/incorrect (Spearman
and ROC AUC of quality as a predictor of an error), vs the drop of the clean
class's probability, and mean quality vs top-1/top-5 accuracy across conditions,
each with a percentile-bootstrap 95 % interval. Results go to
``RUN_DIR/perception/`` as Parquet tables plus figures (see :data:`TABLES`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from weakspot.errors import DataError, InvalidImageError, InvalidParameterError, WeakspotError

__all__ = [
    "perceive",
    "PerceptionResult",
    "load_perception",
    "spearman_ci",
    "quality_relations",
    "TABLES",
    "PERCEPTION_DIR",
    "SALIENCY_METHODS",
    "choose_saliency",
    "occlusion_window_px",
    "quality_order_flags",
    "plain_conclusions",
    "FULL_REFERENCE",
    "WORSE_SIGN",
    "MEASURE_NAMES",
]

PERCEPTION_DIR = "perception"
#: Tables written under ``RUN_DIR/perception/``.
TABLES = {
    "images": "one row per (condition, image): quality, prediction, saliency and spatial measures",
    "conditions": "one row per condition: mean quality, accuracy (whole run and sample), saliency movement",
    "correlations": "one row per relation: Spearman rho (or AUC / mean) with a bootstrap 95% interval",
    "flags": "one row per (degradation, measure): does the measure's worse-score grow with the damage level",
}
MEASURES = ("niqe", "brisque")
#: full-reference measures: the degraded image against its clean original (NaN on clean rows)
FULL_REFERENCE = ("psnr_db", "ssim", "lpips")
#: +1 when a higher score is worse quality, -1 when higher is better
WORSE_SIGN = {"niqe": 1, "brisque": 1, "psnr_db": -1, "ssim": -1, "lpips": 1}
MEASURE_NAMES = {
    "niqe": "NIQE",
    "brisque": "BRISQUE",
    "psnr_db": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "grad_cam": "Grad-CAM",
    "occlusion": "occlusion",
}
#: Values of ``perceive(saliency=...)`` / ``weakspot perceive --saliency``.
SALIENCY_METHODS = ("auto", "gradcam", "occlusion", "none")


@dataclass
class PerceptionResult:
    """The three tables (pandas) and where they were written."""

    images: pd.DataFrame
    conditions: pd.DataFrame
    correlations: pd.DataFrame
    out_dir: Path
    meta: dict = field(default_factory=dict)
    flags: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def conclusions(self) -> list[str]:
        """Plain sentences (:func:`plain_conclusions`) from the tables."""
        return plain_conclusions(self.correlations, self.flags)


# ------------------------------------------------------------------ statistics
def spearman_ci(x, y, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> tuple[float, float, float, int]:
    """Spearman ρ of paired ``x, y`` (NaN pairs dropped) with a percentile-bootstrap
    interval over pairs: ``(rho, lo, hi, n)``. ρ is NaN with fewer than 3 pairs or a
    constant side; resamples with a constant side are skipped (not counted as NaN)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, n
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(max(0, n_boot)):
        i = rng.integers(0, n, n)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(spearmanr(x[i], y[i]).statistic)
    if len(boots) < max(10, n_boot // 2):
        return rho, math.nan, math.nan, n
    a = (1 - ci) / 2 * 100
    lo, hi = np.percentile(boots, [a, 100 - a])
    return rho, float(lo), float(hi), n


def _auc_ci(score, wrong, n_boot: int, seed: int) -> tuple[float, float, float, int]:
    """ROC AUC of ``score`` (higher = worse quality) predicting ``wrong`` with a bootstrap interval."""
    from sklearn.metrics import roc_auc_score

    s, w = np.asarray(score, float), np.asarray(wrong, bool)
    keep = ~np.isnan(s)
    s, w = s[keep], w[keep]
    n = len(s)
    if n < 3 or w.all() or (~w).all():
        return math.nan, math.nan, math.nan, n
    auc = float(roc_auc_score(w, s))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if w[i].all() or (~w[i]).all():
            continue
        boots.append(roc_auc_score(w[i], s[i]))
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return auc, float(lo), float(hi), n


def _mean_ci(v, n_boot: int, seed: int) -> tuple[float, float, float, int]:
    from weakspot.analysis.stats import bootstrap_mean_ci

    v = np.asarray(v, float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    _, m, lo, hi = bootstrap_mean_ci(v, n_boot=max(n_boot, 1), seed=seed)
    return float(m[0]), float(lo[0]), float(hi[0]), len(v)


def _present(images: pd.DataFrame) -> list[str]:
    """The quality measures with at least one value in the per-image table."""
    return [m for m in (*MEASURES, *FULL_REFERENCE) if m in images and images[m].notna().any()]


def quality_relations(
    images: pd.DataFrame,
    conditions: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    saliency: str = "grad_cam",
) -> pd.DataFrame:
    """The correlation table from the per-image and per-condition tables.

    ``saliency`` names the saliency method of the map columns (``grad_cam``,
    ``occlusion`` or ``none``); it is the ``measure`` of the saliency rows.

    Rows: ``relation``, ``measure``, ``level`` (image/condition/cell/degradation),
    ``statistic`` (spearman/auc/mean), ``value``, ``lo``, ``hi``, ``n``, ``note``,
    ``degradation`` (the degradation a per-degradation row is about, else empty).
    The AUC is that of the *worse-oriented* score (:data:`WORSE_SIGN`: PSNR and SSIM
    negated), so AUC > 0.5 always means "worse quality goes with errors". Full-reference
    measures are undefined on clean images and use the degraded rows only.
    """
    rows: list[dict[str, Any]] = []

    def add(relation, measure, level, statistic, vals, note="", degradation=""):
        v, lo, hi, n = vals
        rows.append(
            dict(
                relation=relation,
                measure=measure,
                level=level,
                statistic=statistic,
                value=v,
                lo=lo,
                hi=hi,
                n=n,
                note=note,
                degradation=degradation,
            )
        )

    deg = images[images.condition_id != "clean"]
    for m in _present(images):
        src = deg if m in FULL_REFERENCE else images
        lab = src[src.label >= 0]
        sign = WORSE_SIGN[m]
        add(
            "quality_vs_correct1",
            m,
            "image",
            "spearman",
            spearman_ci(lab[m], lab.correct1.astype(float), n_boot, seed),
            "negative: worse quality (higher score) goes with errors"
            if sign > 0
            else "positive: worse quality (lower score) goes with errors",
        )
        add(
            "quality_predicts_error",
            m,
            "image",
            "auc",
            _auc_ci(sign * lab[m], ~lab.correct1.astype(bool), n_boot, seed),
            "ROC AUC of the score (oriented: worse = higher) as a predictor of a top-1 error; 0.5 = chance",
        )
        add(
            "quality_vs_prob_drop",
            m,
            "image",
            "spearman",
            spearman_ci(deg[m], deg.prob_drop, n_boot, seed),
            "drop of the clean top-1 class probability vs the clean image",
        )
        if m in MEASURES:
            add(
                "delta_quality_vs_prob_drop",
                m,
                "image",
                "spearman",
                spearman_ci(deg[f"{m}_delta"], deg.prob_drop, n_boot, seed),
                "quality change vs clean, against the probability drop",
            )
        cond = conditions if m in MEASURES else conditions[conditions.condition_id != "clean"]
        if f"mean_{m}" in cond:
            for acc in ("top1_acc", "top5_acc"):
                add(
                    f"mean_quality_vs_{acc}",
                    m,
                    "condition",
                    "spearman",
                    spearman_ci(cond[f"mean_{m}"], cond[acc], n_boot, seed),
                    "across conditions (the MOS-vs-accuracy view)",
                )
    add(
        "quality_map_vs_saliency",
        "brisque",
        "cell",
        "mean",
        _mean_ci(images.map_saliency_pearson, n_boot, seed),
        f"mean per-image Pearson r between the BRISQUE cell map and pooled {saliency}; 0 = unrelated",
    )
    add(
        "worst_quality_cells_in_salient_cells",
        "brisque",
        "cell",
        "mean",
        _mean_ci(images.map_saliency_topk, n_boot, seed),
        "share of the worst-quality 25% cells among the most salient 25%; chance = 0.25",
    )
    add(
        "saliency_shift_vs_prob_drop",
        saliency,
        "image",
        "spearman",
        spearman_ci(deg.saliency_shift, deg.prob_drop, n_boot, seed),
        "centroid shift vs probability drop",
    )
    if "saliency_shift_px" in deg and "degradation" in conditions and deg.saliency_shift_px.notna().any():
        d = deg.merge(conditions[["condition_id", "degradation"]], on="condition_id", how="left")
        d.loc[d.condition_id == "camera_reference", "degradation"] = "the camera reference"  # not a sweep
        for name, g in d.groupby("degradation", sort=False):
            add(
                "saliency_shift_px",
                saliency,
                "degradation",
                "mean",
                _mean_ci(g.saliency_shift_px, n_boot, seed),
                "mean centroid shift (px on the model view) over the degradation's levels and images",
                degradation=str(name),
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ conclusions
def _damage_order(conditions: pd.DataFrame) -> pd.Series:
    """Mild → severe key per condition: ``order`` if present, else severity, else
    ``direction × axis value`` (direction: +1 when larger is worse; default +1)."""
    if "order" in conditions and conditions["order"].notna().all():
        return conditions["order"].astype(float)
    sev = (
        conditions["severity"].astype(float)
        if "severity" in conditions
        else pd.Series(np.nan, conditions.index)
    )
    x = (
        conditions["axis_value"].astype(float)
        if "axis_value" in conditions
        else pd.Series(np.nan, conditions.index)
    )
    d = conditions["direction"].astype(float) if "direction" in conditions else 1.0
    return sev.where(sev.notna(), d * x)


def _level_name(r) -> str:
    if r.get("condition_id") == "clean":
        return "clean"
    lvl = r.get("level")
    if isinstance(lvl, str) and lvl:
        return lvl
    from weakspot.analysis._data import level_label

    x = r.get("axis_value")
    return level_label(
        r.get("severity") if x is None or pd.isna(x) else x,
        r.get("axis_unit"),
        r.get("severity"),
        r.get("axis"),
    )


def quality_order_flags(conditions: pd.DataFrame, measures=None, min_rho: float = 0.5) -> pd.DataFrame:
    """Does each quality measure rank a degradation's levels in its damage order?

    For every degradation with ≥ 2 levels and every measure, the Spearman ρ between
    the damage rank (mild → severe, see :func:`_damage_order`) and the measure's mean
    score oriented so that higher = worse
    (:data:`WORSE_SIGN`). A measure is ``flagged`` when ρ < ``min_rho``: its worse-score
    does not increase with damage. ``inversions`` names each level that the measure
    rates better than the milder level before it. The level before the mildest is the
    ``camera_reference`` condition for a camera-family degradation when the run has one
    (the camera pipeline at its neutral setting: the sweep's true start), else clean for
    the no-reference measures (full-reference ones are not defined on clean).

    Columns: ``degradation``, ``measure``, ``rho``, ``n_levels``, ``levels`` (mild →
    severe, with the oriented means), ``inversions``, ``flagged``, ``message``.
    """
    from scipy.stats import spearmanr

    cols = ["degradation", "measure", "rho", "n_levels", "levels", "inversions", "flagged", "message"]
    if measures is None:
        measures = [
            m
            for m in (*MEASURES, *FULL_REFERENCE)
            if f"mean_{m}" in conditions and conditions[f"mean_{m}"].notna().any()
        ]
    c = conditions.copy()
    c["_key"] = _damage_order(c)
    clean = c[c.condition_id == "clean"]
    ref = c[c.condition_id == "camera_reference"]
    out = []
    degs = c[(c.condition_id != "clean") & c.degradation.notna() & (c.condition_id != "camera_reference")]
    for name, g in degs.groupby("degradation", sort=False):
        g = g[g._key.notna()].sort_values("_key")
        if len(g) < 2:
            continue
        for m in measures:
            col = f"mean_{m}"
            fam = g["family"].iloc[0] if "family" in g else None
            if fam == "camera" and len(ref):
                seq = pd.concat([ref.assign(_key=-np.inf, level="camera reference"), g])
            elif m in FULL_REFERENCE or clean.empty:
                seq = g
            else:
                seq = pd.concat([clean.assign(_key=-np.inf), g])
            seq = seq[seq[col].notna()]
            if len(seq) < 2 or len(seq) < len(g) or seq[col].isna().any():
                continue
            worse = WORSE_SIGN[m] * seq[col].to_numpy(float)
            names = [_level_name(r) for _, r in seq.iterrows()]
            rank = np.arange(len(seq), dtype=float)
            rho = math.nan if np.ptp(worse) == 0 else float(spearmanr(rank, worse).statistic)
            inv = [
                f"{names[k]} better than {names[k - 1]}"
                for k in range(1, len(seq))
                if worse[k] < worse[k - 1]
            ]
            flagged = bool(math.isnan(rho) or rho < min_rho)
            label = MEASURE_NAMES.get(m, m)
            msg = ""
            if flagged:
                msg = (
                    f"{label} does not rate {name} worse as the damage grows "
                    f"({' → '.join(names)}: Spearman ρ {rho:+.2f}); it rates {'; '.join(inv) or 'the levels equal'}"
                    f" — do not use {label} as a proxy for this degradation"
                )
            out.append(
                dict(
                    degradation=str(name),
                    measure=m,
                    rho=rho,
                    n_levels=len(seq),
                    levels=", ".join(f"{n} {v:.3g}" for n, v in zip(names, seq[col], strict=True)),
                    inversions="; ".join(inv),
                    flagged=flagged,
                    message=msg,
                )
            )
    return pd.DataFrame(out, columns=cols)


def _ci(lo, hi, fmt="{:.2f}") -> str:
    return "[—]" if lo is None or pd.isna(lo) else f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def plain_conclusions(
    correlations: pd.DataFrame, flags: pd.DataFrame | None = None, min_shift_px: float = 1.0
) -> list[str]:
    """A few plain sentences from the correlation table, each with its number and 95 % interval.

    * ROC AUC of each measure as an error predictor: "predicts" when the interval lies
      above 0.5, "rates the images the model gets wrong as *better*" when below, else
      "no evidence" (the interval includes 0.5, or could not be estimated);
    * mean quality vs top-1 accuracy across conditions (null ρ = 0);
    * saliency movement per degradation: "moves" when the interval's lower end is at
      least ``min_shift_px`` (a sub-pixel shift is not movement), else "no evidence";
    * one warning per flagged measure from :func:`quality_order_flags`.
    """
    out: list[str] = []

    def rows(rel):
        return correlations[correlations.relation == rel] if len(correlations) else correlations

    for _, r in rows("quality_predicts_error").iterrows():
        name = MEASURE_NAMES.get(r.measure, r.measure)
        num = f"AUC {r.value:.2f} {_ci(r.lo, r.hi)} (n = {int(r.n)})"
        if pd.isna(r.value):
            out.append(
                f"No evidence either way whether {name} predicts errors: too few images or no errors "
                f"(n = {int(r.n)})."
            )
        elif pd.isna(r.lo) or r.lo <= 0.5 <= r.hi:
            out.append(
                f"No evidence that {name} predicts which images the model gets wrong: {num}; the interval "
                "includes chance (0.5)."
            )
        elif r.lo > 0.5:
            out.append(f"{name} predicts which images the model gets wrong: {num}.")
        else:
            out.append(
                f"{name} rates the images the model gets wrong as better quality: {num}, below chance (0.5)."
            )
    groups: dict[str, list[str]] = {"good": [], "none": [], "against": [], "few": []}
    for _, r in rows("mean_quality_vs_top1_acc").iterrows():
        name = MEASURE_NAMES.get(r.measure, r.measure)
        if pd.isna(r.value):  # a rank correlation needs 3 or more conditions with a score
            groups["few"].append(f"{name} ({int(r.n)} conditions)")
            continue
        num = f"{name} ρ {r.value:+.2f} {_ci(r.lo, r.hi, '{:+.2f}')} ({int(r.n)} conditions)"
        good = (r.lo > 0 and WORSE_SIGN.get(r.measure, 1) < 0) or (
            r.hi < 0 and WORSE_SIGN.get(r.measure, 1) > 0
        )
        if pd.isna(r.value) or pd.isna(r.lo) or r.lo <= 0 <= r.hi:
            groups["none"].append(num)
        else:
            groups["good" if good else "against"].append(num)
    if groups["good"]:
        out.append(
            "Across conditions, worse mean quality goes with lower top-1 accuracy (Spearman): "
            + "; ".join(groups["good"])
            + "."
        )
    if groups["none"]:
        out.append(
            "No evidence that mean quality tracks top-1 accuracy across conditions for: "
            + "; ".join(groups["none"])
            + " (the interval includes 0)."
        )
    if groups["against"]:
        out.append(
            "Across conditions, these measures run against accuracy (worse score, higher accuracy): "
            + "; ".join(groups["against"])
            + "."
        )
    if groups["few"]:
        out.append(
            "Too few conditions to relate mean quality to top-1 accuracy for: "
            + "; ".join(groups["few"])
            + " (a rank correlation needs at least 3)."
        )
    moves: list[tuple[str, str]] = []
    still: list[tuple[str, str]] = []
    for _, r in rows("saliency_shift_px").sort_values("value", ascending=False).iterrows():
        if pd.isna(r.value):
            continue
        item = (r.degradation, f"{r.value:.1f} px {_ci(r.lo, r.hi, '{:.1f}')} (n = {int(r.n)})")
        (moves if not pd.isna(r.lo) and r.lo >= min_shift_px else still).append(item)
    for items, head in ((moves, "Saliency moves under"), (still, "No evidence that saliency moves under")):
        if items:
            first, rest = items[0], items[1:]
            text = f"{head} {first[0]}: mean centroid shift {first[1]}"
            text += "".join(f"; under {d}: {v}" for d, v in rest)
            if items is still:
                text += f" — each interval reaches below {min_shift_px:g} px"
            out.append(text + ".")
    if flags is not None and len(flags):
        out += [f"Warning: {m}." for m in flags[flags.flagged].message]
    return out


# ------------------------------------------------------------------ computation
def _select(names: list[str], pattern: str | list[str] | None) -> list[str]:
    if pattern is None:
        return names
    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    out = [n for n in names if n == "clean" or any(fnmatch.fnmatch(n, p) for p in pats)]
    if len(out) <= 1:
        raise InvalidParameterError(
            "conditions", pattern, f"patterns matching some of {', '.join(names[:6])} …"
        )
    return out


def _quality_native(imgs: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """NIQE and BRISQUE of ``(C, H, W)`` images at their own size (NaN where too small)."""
    from weakspot.quality import brisque, niqe

    out = {m: np.full(len(imgs), np.nan) for m in MEASURES}
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(imgs):
        groups.setdefault(tuple(im.shape), []).append(i)
    for idx in groups.values():
        x = torch.stack([imgs[i] for i in idx]).clamp(0, 1)
        for name, fn in (("niqe", niqe), ("brisque", brisque)):
            with contextlib.suppress(InvalidImageError):  # too small for the measure: stays NaN
                out[name][idx] = fn(x).numpy()
    return out["niqe"], out["brisque"]


def _quality_reference(imgs: list[torch.Tensor], refs: list[torch.Tensor], lpips_weights=None) -> dict:
    """PSNR (dB), SSIM and LPIPS of each degraded ``(C, H, W)`` image against its clean
    original at native resolution. A degraded image whose size differs from the clean
    one (a resampling degradation) is resized to the clean size (bilinear, antialiased)."""
    from weakspot.quality.reference import lpips_distance, psnr_db, ssim

    out = {m: np.full(len(imgs), np.nan) for m in FULL_REFERENCE}
    groups: dict[tuple, list[int]] = {}
    for i, (im, ref) in enumerate(zip(imgs, refs, strict=True)):
        groups.setdefault((tuple(im.shape), tuple(ref.shape)), []).append(i)
    for (shape, rshape), idx in groups.items():
        x = torch.stack([imgs[i] for i in idx]).clamp(0, 1).double()
        y = torch.stack([refs[i] for i in idx]).clamp(0, 1).double()
        if shape != rshape:
            x = torch.nn.functional.interpolate(
                x, size=rshape[-2:], mode="bilinear", antialias=True, align_corners=False
            ).clamp(0, 1)
        if x.shape[1] != y.shape[1]:
            continue
        out["psnr_db"][idx] = psnr_db(x, y).numpy()
        with contextlib.suppress(InvalidImageError):  # smaller than the SSIM window: stays NaN
            out["ssim"][idx] = ssim(x, y).numpy()
        out["lpips"][idx] = lpips_distance(x, y, lpips_weights).numpy()
    return out


def _table_bytes(df: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _gradcam_layer_or_reason(model, views: torch.Tensor):
    """``(layer, None)`` when Grad-CAM can run on ``model``, else ``(None, why not)``."""
    from weakspot.explain import as_net
    from weakspot.explain._net import find_target_layer

    if not getattr(model, "differentiable", True):
        return None, f"the {getattr(model, 'source', '')} model is not differentiable (no gradients)".replace(
            "  ", " "
        )
    module = getattr(model, "module", model)
    if isinstance(module, torch.jit.ScriptModule):
        return None, "a TorchScript module cannot be hooked for its activations"
    net = as_net(model)
    if net.target_layer is not None:
        return net.target_layer, None
    try:
        return find_target_layer(net, views[:1]), None
    except WeakspotError:
        return None, "the model has no spatial (B, C, h, w) layer"


def choose_saliency(model, saliency: str = "auto", views: torch.Tensor | None = None) -> str:
    """The saliency method :func:`perceive` uses: ``grad_cam``, ``occlusion`` or ``none``.

    ``auto`` is Grad-CAM for a differentiable PyTorch module with a spatial (conv) layer
    and occlusion otherwise (ONNX, TorchScript, a model without a conv layer); asking for
    ``gradcam`` on a model that cannot do it raises :class:`InvalidParameterError`.
    ``views``: an example model view (needed to find a layer when the model names none).
    """
    key = str(saliency).lower().replace("-", "").replace("_", "")
    if key not in {m.replace("_", "") for m in SALIENCY_METHODS}:
        raise InvalidParameterError("saliency", saliency, " | ".join(SALIENCY_METHODS))
    if key == "none":
        return "none"
    if key == "occlusion":
        return "occlusion"
    if views is None:
        from weakspot.models import LoadedModel

        p = model.preprocess_config if isinstance(model, LoadedModel) else None
        views = torch.rand(1, p.channels if p else 3, *(p.size if p else (64, 64)))
    _, why = _gradcam_layer_or_reason(model, views)
    if why is None:
        return "grad_cam"
    if key == "gradcam":
        raise InvalidParameterError(
            "saliency",
            saliency,
            "occlusion or none for this model",
            f"Grad-CAM needs gradients and a conv layer: {why}; use --saliency occlusion",
        )
    return "occlusion"


def occlusion_window_px(h: int, w: int) -> int:
    """Side of the occluding window :func:`perceive` uses on an ``h × w`` model view: a
    seventh of the shorter side (32 px at 224², 4 px at 28²), stride = window."""
    return max(1, min(h, w) // 7)


def _saliency_of(
    method: str, model, views: torch.Tensor, targets: torch.Tensor, batch_size: int, window_px: int
):
    """``(maps (B, h, w) ≥ 0 or None, predicted top-1 (B,))`` on the model views.

    Occlusion maps keep only the positive part (hiding the window lowered the clean
    class's probability), the counterpart of Grad-CAM's ReLU."""
    from weakspot.explain import as_net, grad_cam, occlusion

    if method == "grad_cam":
        sal = grad_cam(model, views, targets, batch_size=batch_size, is_view=True)
        return sal.maps, sal.predicted
    if method == "occlusion":
        maps: list[torch.Tensor] = []
        top: list[torch.Tensor] = []
        for s in range(0, views.shape[0], batch_size):
            sal = occlusion(
                model,
                views[s : s + batch_size],
                targets[s : s + batch_size],
                window_px=window_px,
                stride_px=window_px,
                baseline=0.5,
                batch_size=max(64, batch_size),
                is_view=True,
            )
            assert sal.predicted is not None  # occlusion always reports the top-1 class
            maps.append(sal.maps.clamp_min(0))
            top.append(sal.predicted)
        return torch.cat(maps), torch.cat(top)
    net = as_net(model)
    with torch.inference_mode():
        top1 = [
            net.logits_of_view(views[s : s + batch_size]).argmax(1).cpu()
            for s in range(0, views.shape[0], batch_size)
        ]
    return None, torch.cat(top1)


def perceive(
    run_dir: str | Path,
    *,
    max_images: int = 32,
    conditions: str | list[str] | None = None,
    grid: int = 4,
    n_boot: int = 1000,
    overlays: int = 4,
    seed: int = 0,
    batch_size: int = 16,
    saliency: str = "auto",
    lpips_weights: str | Path | None = None,
    progress: bool = True,
    console=None,
) -> PerceptionResult:
    """Compute the perception tables and figures of a finished run (see the module doc).

    Args:
        run_dir: a run directory written by ``weakspot run``.
        max_images: images sampled (seeded, the same for every condition); ``0`` = all.
        conditions: glob pattern(s) on condition ids (``clean`` is always included).
        grid: cells per side of the patch quality map on the model view.
        n_boot: bootstrap resamples for the intervals (0 = no intervals).
        overlays: number of (image, condition) overlay figures (largest probability drops).
        seed: seed of the image sample and the bootstrap.
        batch_size: images per Grad-CAM pass (occlusion: per call, 64+ occluded views a pass).
        saliency: ``auto`` (Grad-CAM where possible, else occlusion), ``gradcam``,
            ``occlusion`` or ``none`` (quality only); see :func:`choose_saliency`.
        lpips_weights: torchvision's AlexNet weights file for LPIPS (default: look in
            ``$TORCH_HOME/hub/checkpoints``); without weights or the ``lpips`` package the
            ``lpips`` column is NaN and ``meta.json``'s ``lpips`` says why. Nothing downloads.

    Returns:
        :class:`PerceptionResult`; the tables are also written to ``RUN_DIR/perception/``.
    """
    from weakspot.evaluate import Run, degrade_images
    from weakspot.evaluate.store import atomic_write_bytes, atomic_write_json
    from weakspot.explain import as_net, centroid_shift, cosine_distance, pearson, spearman, topk_overlap
    from weakspot.quality.maps import brisque_map, grid_box, grid_pool
    from weakspot.quality.reference import lpips_status

    t0 = time.perf_counter()
    if str(saliency).lower().replace("-", "").replace("_", "") not in (
        "auto",
        "gradcam",
        "occlusion",
        "none",
    ):
        raise InvalidParameterError("saliency", saliency, " | ".join(SALIENCY_METHODS))
    run = Run.open(run_dir)
    store, run_seed = run.store, run.seed
    model = run.load_model("cpu")
    data = run.open_data()  # item i is image_index i
    all_conds = {c.condition_id: c for c in run.conditions()}
    net = as_net(model)

    done = sorted({c for c, _ in store.done_units()})
    if "clean" not in done:
        raise DataError(
            f"{run_dir} has no finished clean predictions; finish the run first ('weakspot run ... --resume')"
        )
    cids = _select(["clean"] + [c for c in done if c != "clean" and c in all_conds], conditions)

    imgs_df = store.images()
    pred = store.predictions(cids)
    clean_pred = pred[pred.condition_id == "clean"].set_index("image_index")
    have = imgs_df[imgs_df.image_index.isin(clean_pred.index)]
    rng = np.random.default_rng(seed)
    if max_images and len(have) > max_images:
        have = have.iloc[np.sort(rng.choice(len(have), max_images, replace=False))]
    ids = [str(i) for i in have.image_id]
    index = have.image_index.to_numpy()
    clean = [data.load(int(i)) for i in index]
    targets = torch.tensor(clean_pred.loc[index, "top1"].to_numpy(dtype=np.int64))
    clean_prob = clean_pred.loc[index, "top1_prob"].to_numpy(dtype=float)

    views0 = net.view(clean)
    h, w = views0.shape[-2:]
    method = choose_saliency(model, saliency, views0)
    window_px = occlusion_window_px(h, w)
    try:
        grid_box(h, w, grid)
        use_map = True
    except WeakspotError:
        use_map = False  # model view too small for a patch map (e.g. 28×28 digits)

    rows: list[pd.DataFrame] = []
    keep_maps: dict[str, dict[str, torch.Tensor]] = {}
    sal0 = None
    q0: dict[str, np.ndarray] = {}
    it = cids
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(console=console, transient=True)
        bar.start()
        task = bar.add_task("perceive", total=len(cids))
    try:
        for cid in it:
            if cid == "clean":
                deg = clean
            else:
                deg = degrade_images(all_conds[cid], clean, ids, run_seed)
            nq, bq = _quality_native(deg)
            fr = (
                {m: np.full(len(deg), np.nan) for m in FULL_REFERENCE}
                if cid == "clean"
                else _quality_reference(deg, clean, lpips_weights)
            )
            views = views0 if cid == "clean" else net.view(deg)
            sal, predicted = _saliency_of(method, model, views, targets, batch_size, window_px)
            if cid == "clean":
                sal0, q0 = sal, {"niqe": nq, "brisque": bq}
            r = pd.DataFrame(
                {
                    "condition_id": cid,
                    "image_index": index.astype(np.int32),
                    "image_id": ids,
                    "niqe": nq,
                    "brisque": bq,
                    "niqe_delta": nq - q0["niqe"],
                    "brisque_delta": bq - q0["brisque"],
                    **fr,
                    "top1_regenerated": predicted.numpy().astype(np.int32),
                }
            )
            if sal is not None:
                assert sal0 is not None  # the clean condition comes first and has a map when the others do
                strength, strength0 = sal.mean(dim=(-2, -1)), sal0.mean(dim=(-2, -1))
                r["saliency_strength"] = strength.numpy()
                r["saliency_strength_ratio"] = (strength / strength0).numpy()
                r["saliency_shift"] = centroid_shift(sal0, sal).numpy()
                r["saliency_shift_px"] = r["saliency_shift"] * math.hypot(h, w)
                r["saliency_cosine_distance"] = cosine_distance(sal0, sal).numpy()
            else:
                for col in (
                    "saliency_strength",
                    "saliency_strength_ratio",
                    "saliency_shift",
                    "saliency_shift_px",
                    "saliency_cosine_distance",
                ):
                    r[col] = np.nan
            if use_map and sal is not None:
                qmap = brisque_map(views, grid)
                smap = grid_pool(sal, grid)
                r["map_saliency_pearson"] = pearson(qmap, smap).numpy()
                r["map_saliency_spearman"] = spearman(qmap, smap).numpy()
                r["map_saliency_topk"] = topk_overlap(qmap, smap, 0.25).numpy()
                keep_maps[cid] = {"views": views, "qmap": qmap, "sal": sal}
            else:
                r["map_saliency_pearson"] = r["map_saliency_spearman"] = r["map_saliency_topk"] = np.nan
            rows.append(r)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()

    table = pd.concat(rows, ignore_index=True)
    p = pred[
        ["condition_id", "image_index", "label", "top1", "top1_prob", "p_clean_top1", "correct1", "correct5"]
    ]
    table = table.merge(p, on=["condition_id", "image_index"], how="left")
    cp = pd.Series(clean_prob, index=index)
    table["prob_drop"] = cp.loc[table.image_index].to_numpy() - table.p_clean_top1.to_numpy(dtype=float)
    table["label"] = table["label"].fillna(-1).astype(np.int32)
    mismatch = int((table.top1_regenerated != table.top1).sum())
    if mismatch:
        import warnings

        warnings.warn(
            f"{mismatch} of {len(table)} regenerated images get a different top-1 than the run recorded: "
            "the data, weights or code changed since the run",
            stacklevel=2,
        )

    conds = store.conditions().set_index("condition_id")
    acc = store.sql(
        "select condition_id, avg(case when label >= 0 then correct1::int end) as top1_acc, "
        "avg(case when label >= 0 then correct5::int end) as top5_acc, count(*) as n_run from predictions group by 1"
    ).set_index("condition_id")
    g = table.groupby("condition_id", sort=False)
    ctab = pd.DataFrame(
        {
            "n": g.size(),
            "mean_niqe": g.niqe.mean(),
            "mean_brisque": g.brisque.mean(),
            "mean_psnr_db": g.psnr_db.mean(),
            "mean_ssim": g.ssim.mean(),
            "mean_lpips": g.lpips.mean(),
            "top1_acc_sample": g.apply(lambda d: d.correct1[d.label >= 0].mean(), include_groups=False),
            "mean_prob_drop": g.prob_drop.mean(),
            "mean_saliency_shift": g.saliency_shift.mean(),
            "mean_saliency_shift_px": g.saliency_shift_px.mean(),
            "mean_saliency_cosine_distance": g.saliency_cosine_distance.mean(),
            "mean_saliency_strength_ratio": g.saliency_strength_ratio.mean(),
            "mean_map_saliency_pearson": g.map_saliency_pearson.mean(),
        }
    )
    ctab = ctab.join(acc[["top1_acc", "top5_acc", "n_run"]]).join(
        conds[["degradation", "family", "severity", "axis", "axis_value", "axis_unit"]]
    )
    from weakspot.analysis._data import load_run

    lv = load_run(store).conditions.set_index("condition_id")[["order", "direction", "level"]]
    ctab = ctab.join(lv)
    ctab = ctab.reset_index().rename(columns={"index": "condition_id"})
    corr = quality_relations(table, ctab, n_boot=n_boot, seed=seed, saliency=method)
    flags = quality_order_flags(ctab)

    out = store.root / PERCEPTION_DIR
    for name, df in (("images", table), ("conditions", ctab), ("correlations", corr), ("flags", flags)):
        atomic_write_bytes(out / f"{name}.parquet", _table_bytes(df))
    meta = {
        "max_images": int(max_images),
        "n_images": len(ids),
        "top1_mismatches": mismatch,
        "conditions": cids,
        "grid": int(grid),
        "model_view": [int(h), int(w)],
        "patch_map": use_map,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "saliency": method,
        "occlusion_window_px": int(window_px) if method == "occlusion" else None,
        "lpips": lpips_status(lpips_weights)[1],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    meta["conclusions"] = plain_conclusions(corr, flags)
    atomic_write_json(out / "meta.json", meta)
    _figures(out, table, ctab, keep_maps, overlays, method)
    return PerceptionResult(table, ctab, corr, out, meta, flags)


def load_perception(run_dir: str | Path) -> PerceptionResult | None:
    """The tables :func:`perceive` wrote, or ``None`` if it has not run."""
    out = Path(run_dir) / PERCEPTION_DIR
    if not (out / "correlations.parquet").is_file():
        return None
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    images, conditions, correlations = (
        pd.read_parquet(out / f"{n}.parquet") for n in ("images", "conditions", "correlations")
    )
    flags = (
        pd.read_parquet(out / "flags.parquet")
        if (out / "flags.parquet").is_file()
        else quality_order_flags(conditions)
    )  # written before flags existed
    return PerceptionResult(images, conditions, correlations, out, meta, flags)


# ------------------------------------------------------------------ figures
def quality_accuracy_figure(ctab: pd.DataFrame, measure: str = "brisque"):
    """Mean quality (x) vs top-1 accuracy (y) per condition, one line per degradation over severity."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    clean = ctab[ctab.condition_id == "clean"]
    ctab = ctab.copy()
    ctab.loc[ctab.condition_id == "camera_reference", "degradation"] = (
        "camera reference"  # a reference, not a sweep
    )
    for degname, d in ctab[ctab.condition_id != "clean"].groupby("degradation"):
        d = d.assign(_key=_damage_order(d)).sort_values("_key", na_position="first")  # mild → severe
        d = pd.concat([clean, d])
        ax.plot(d[f"mean_{measure}"], d.top1_acc, "o-", ms=4, label=str(degname).replace("$", r"\$"))
    if len(clean):
        ax.plot(clean[f"mean_{measure}"], clean.top1_acc, "k*", ms=12, label="clean")
    ax.set_xlabel(f"mean {measure.upper()} (higher = worse)")
    ax.set_ylabel("top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False
    )  # outside: never on a line
    return fig


def overlay_figure(
    view: torch.Tensor,
    qmap: torch.Tensor,
    sal_clean: torch.Tensor,
    sal: torch.Tensor,
    title: str = "",
    method: str = "grad_cam",
):
    """Image, patch quality map, clean and degraded saliency (same colour scale: raw strength)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    img = view.permute(1, 2, 0).numpy()
    img = img[..., 0] if img.shape[-1] == 1 else img
    vmax = max(float(sal_clean.max()), float(sal.max()), 1e-12)
    fig, axs = plt.subplots(1, 4, figsize=(11, 3))
    axs[0].imshow(img, cmap="gray" if img.ndim == 2 else None)
    axs[0].set_title("degraded (model view)", fontsize=8)
    im = axs[1].imshow(qmap.numpy(), cmap="magma")
    axs[1].set_title("BRISQUE per cell (higher = worse)", fontsize=8)
    fig.colorbar(im, ax=axs[1], fraction=0.046)
    label = {"grad_cam": "Grad-CAM", "occlusion": "occlusion"}.get(method, method)
    for ax, m, t in ((axs[2], sal_clean, f"{label} clean"), (axs[3], sal, f"{label} degraded")):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.imshow(m.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=vmax)
        ax.set_title(f"{t} (raw, shared scale)", fontsize=8)
    for ax in axs:
        ax.axis("off")
    if title:
        fig.suptitle(title.replace("$", r"\$"), fontsize=9)
    return fig


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from weakspot.evaluate.store import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _figures(
    out: Path, table: pd.DataFrame, ctab: pd.DataFrame, maps: dict, overlays: int, method: str = "grad_cam"
) -> None:
    figs = out / "figures"
    for old in figs.glob("*.png") if figs.is_dir() else []:
        old.unlink()
    for m in MEASURES:
        if ctab[f"mean_{m}"].notna().any():
            _save(quality_accuracy_figure(ctab, m), figs / f"{m}_vs_top1.png")
    if not maps or overlays <= 0 or "clean" not in maps:
        return
    deg = table[(table.condition_id != "clean") & table.condition_id.isin(maps)]
    top = deg.sort_values("prob_drop", ascending=False).head(overlays)
    order = {int(i): k for k, i in enumerate(table[table.condition_id == "clean"].image_index)}
    for _, r in top.iterrows():
        k = order[int(r.image_index)]
        mp = maps[r.condition_id]
        title = (
            f"{r.image_id} · {r.condition_id} · p(clean class) drop {r.prob_drop:.2f} · "
            f"BRISQUE {r.brisque:.1f}"
        )
        fig = overlay_figure(
            mp["views"][k], mp["qmap"][k], maps["clean"]["sal"][k], mp["sal"][k], title, method
        )
        safe = "".join(c if c.isalnum() or c in "._=-" else "-" for c in f"{r.image_index}_{r.condition_id}")
        _save(fig, figs / f"overlay_{safe}.png")


def print_summary(res: PerceptionResult, console=None) -> None:
    """A rich table of the relations and where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(
        title=f"perception: {res.meta.get('n_images', '?')} images × {len(res.conditions)} conditions",
        title_justify="left",
    )
    t.add_column("relation", overflow="fold", min_width=27)  # the longest name stays whole in 100 columns
    for name in ("measure", "level", "stat", "value", "95% interval", "n"):
        t.add_column(name, no_wrap=True, min_width=len(name))
    for _, r in res.correlations.iterrows():
        ci = "—" if math.isnan(r.lo) else f"[{r.lo:.2f}, {r.hi:.2f}]"
        val = "—" if math.isnan(r.value) else f"{r.value:.3f}"
        deg = r.get("degradation", "")
        t.add_row(
            r.relation + (f" ({deg})" if isinstance(deg, str) and deg else ""),
            r.measure,
            r.level,
            r.statistic,
            val,
            ci,
            str(int(r.n)),
        )
    console.print(t)
    for line in res.conclusions:
        console.print(line, markup=False, style="yellow" if line.startswith("Warning") else None)
    console.print(
        f"tables and figures: {res.out_dir}/ ({', '.join(f'{k}.parquet' for k in TABLES)}, figures/)"
    )
