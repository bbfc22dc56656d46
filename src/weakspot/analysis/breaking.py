"""Breaking points: where a class loses half of what it had on clean images.

For each degradation and class, the curve ``value(level)`` (top-1 accuracy, or
the mean probability of the clean top-1 class) is walked from mild to severe;
the breaking point is the first x-axis value where it falls to half its clean
value, linearly interpolated between the two levels around the crossing.

The clean image sits at x = 0 when the axis is a severity or a strength whose
zero means "no degradation" (its registry parameter starts at 0 and grows with
severity: blur σ, noise variance, defocus in D, defect counts); then a crossing
before the first level is interpolated from 0. Otherwise (pixel size, exposure:
there is no neutral value) a crossing before the first level is reported as
``before_first_level`` at that level's x. ``not_reached`` when the curve never
falls to half.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run
from weakspot.errors import InvalidParameterError
from weakspot.evaluate.store import CLEAN

__all__ = ["breaking_point", "breaking_points", "ALL_CLASSES"]

#: ``class`` value of the rows that pool all images.
ALL_CLASSES = -1

_METRICS = {"accuracy": "hit", "p_clean": "p_clean_top1"}


def breaking_point(xs, values, clean_value: float, clean_x: float | None = None, fraction: float = 0.5):
    """First x where ``values`` (ordered mild → severe) reach ``fraction × clean_value``.

    Returns ``(x, status)`` with status ``interpolated``, ``before_first_level``,
    ``not_reached`` or ``no_clean_signal`` (clean value ≤ 0); x is NaN when not reached.
    """
    xs = [float(x) for x in xs]
    vs = [float(v) for v in values]
    if len(vs) != len(xs):
        raise InvalidParameterError("values", f"{len(vs)} values", f"one value per level x ({len(xs)})")
    if not (clean_value > 0) or not xs:
        return math.nan, "no_clean_signal"
    thr = fraction * clean_value
    px, pv = (clean_x, clean_value) if clean_x is not None else (None, None)
    for x, v in zip(xs, vs, strict=True):
        if math.isnan(v):
            continue
        if v <= thr:
            if px is None or pv is None:  # pv is None only together with px
                return x, "before_first_level"
            if pv == v:
                return x, "interpolated"
            return px + (thr - pv) * (x - px) / (v - pv), "interpolated"
        px, pv = x, v
    return math.nan, "not_reached"


def _neutral_x(degradation: str, axis, uses_severity: bool, xs: np.ndarray) -> float | None:
    if uses_severity:
        return 0.0
    if axis is None or (isinstance(axis, float) and math.isnan(axis)):
        return None
    try:
        from weakspot.degrade import get_spec

        spec = get_spec(degradation)
        p = spec.param(axis)
        levels = sorted(spec.severities)
        a, b = spec.severities[levels[0]].get(axis), spec.severities[levels[-1]].get(axis)
        if p.low == 0 and a is not None and b is not None and float(b) > float(a) and (xs >= 0).all():
            return 0.0
    except Exception:
        return None
    return None


def _label(
    x: float, status: str, last: float, uses_sev: bool, axis: str, unit: str, direction: int = 1
) -> str:
    """``'2.5 D'``; before the first level ``'≤ 5 µm'`` (``'≥ 0.005 s'`` when smaller is worse);
    not reached ``'not reached (> 4 D)'`` (``'(< 0.0002 s)'``): signs follow the damage direction."""

    def one(v: float) -> str:
        if uses_sev:
            return f"sev {v:.2g}"
        return f"{v:.3g} {unit}" if unit else f"{axis}={v:.3g}"

    milder, worse = ("≤", ">") if direction >= 0 else ("≥", "<")
    if status == "interpolated":
        return one(x)
    if status == "before_first_level":
        return f"{milder} {one(x)}"
    if status == "not_reached":
        return f"not reached ({worse} {one(last)})"
    return "—"


def breaking_points(store: StoreLike, *, metric: str = "accuracy", fraction: float = 0.5) -> pd.DataFrame:
    """Breaking point per (degradation, class), plus one pooled row per degradation
    (``class == ALL_CLASSES``, ``class_name == 'all classes'``).

    ``metric``: ``'accuracy'`` (top-1 accuracy; agreement with the clean top-1 for
    unlabelled images) or ``'p_clean'`` (mean probability of the clean top-1 class).

    Columns: ``degradation, family, axis, axis_unit, direction, class, class_name, n, metric,
    clean_value, threshold, breaking_x, status, label, final_value, final_level, clean_x``.
    ``label`` reads e.g. ``'2.5 D'``, ``'≤ 5 µm'`` (before the first level) or
    ``'not reached (> 4 D)'``; when smaller values are more damage (``direction == -1``:
    exposure, JPEG quality) the signs flip (``'≥ 0.005 s'``, ``'not reached (< 0.0002 s)'``).
    ``n`` is the number of images of the class (of the run for the pooled row).
    """
    if metric not in _METRICS:
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError("metric", metric, "'accuracy' or 'p_clean'")
    col = _METRICS[metric]
    run = load_run(store)
    r = run.rows
    per = r.groupby(["condition_id", "ref_class"])[col].mean()
    n_per = r[r.condition_id == CLEAN].groupby("ref_class").size()
    pooled = r.groupby("condition_id")[col].mean()
    classes = sorted(r.ref_class.unique())
    out = []
    for deg, conds in run.degraded.groupby("degradation", sort=False):
        conds = conds.sort_values("order")
        uses_sev = conds["axis_value"].isna().all()
        axis = conds["axis"].iloc[0] if not uses_sev else "severity"
        unit = conds["axis_unit"].iloc[0] if not uses_sev else ""
        unit = "" if unit is None or (isinstance(unit, float) and math.isnan(unit)) else str(unit)
        xs = conds["x"].to_numpy(dtype=float)
        cx = _neutral_x(deg, None if uses_sev else axis, uses_sev, xs)
        direction = int(conds["direction"].iloc[0]) if "direction" in conds else 1
        for k in [ALL_CLASSES, *classes]:
            if k == ALL_CLASSES:
                v0 = float(pooled.get(CLEAN, np.nan))
                vs = [float(pooled.get(c, np.nan)) for c in conds.condition_id]
            else:
                v0 = float(per.get((CLEAN, k), np.nan))
                vs = [float(per.get((c, k), np.nan)) for c in conds.condition_id]
            x, status = breaking_point(xs, vs, v0, cx, fraction)
            label = _label(x, status, xs[-1], uses_sev, axis, unit, direction)
            out.append(
                {
                    "degradation": deg,
                    "family": conds["family"].iloc[0],
                    "axis": axis,
                    "axis_unit": unit,
                    "direction": direction,
                    "class": int(k),
                    "class_name": "all classes" if k == ALL_CLASSES else run.class_name(k),
                    "n": int(n_per.sum()) if k == ALL_CLASSES else int(n_per.get(k, 0)),
                    "metric": metric,
                    "clean_value": v0,
                    "threshold": fraction * v0 if v0 == v0 else np.nan,
                    "breaking_x": x,
                    "status": status,
                    "label": label,
                    "final_value": vs[-1] if vs else np.nan,
                    "final_level": conds["level"].iloc[-1],
                    "clean_x": cx,
                }
            )
    return pd.DataFrame(
        out,
        columns=[
            "degradation",
            "family",
            "axis",
            "axis_unit",
            "direction",
            "class",
            "class_name",
            "n",
            "metric",
            "clean_value",
            "threshold",
            "breaking_x",
            "status",
            "label",
            "final_value",
            "final_level",
            "clean_x",
        ],
    )
