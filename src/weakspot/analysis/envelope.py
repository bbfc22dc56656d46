"""The camera's operating envelope: where over a 2-D camera grid the model keeps a share of its accuracy.

A run with a two-parameter camera grid (e.g. ``degradation: camera`` with ``grid:
{pixel_size_um: [...], exposure_s: [...]}``) stores one condition per grid point. This module
reads those results (it never calls the model) and gives, for every grid point, the top-1
accuracy (or, for unlabelled images, the agreement with the clean prediction), the reference
accuracy of the default camera (the ``camera_reference`` condition; the clean images when the
run has none), and the **envelope**: the points where the model keeps ``share`` (default 90 %)
of the reference accuracy. Its boundary is located between neighbouring grid points by linear
interpolation of accuracy along each grid line, or — after :func:`refine_envelope` has run the
model on extra points by bisection (:func:`weakspot.evaluate.adaptive.bisect_breaking_point`) —
by those refined crossings. A plain sentence states the largest block of tested grid points (an
interval of each parameter) that keeps the share, e.g. "keeps 90% of its accuracy for exposures
≥ 1/1000 s at pixel sizes ≤ 8 µm" (an interval that reaches the end of the grid reads ≥ / ≤,
so over- and under-exposure both show).

>>> format_value("exposure_s", 0.001), format_value("pixel_size_um", 8.0)
('1/1000 s', '8 µm')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from weakspot.analysis._data import StoreLike, load_run
from weakspot.errors import InvalidParameterError

__all__ = [
    "Envelope",
    "camera_grids",
    "operating_envelope",
    "envelope_sentence",
    "refine_envelope",
    "format_value",
    "REFINED_FILE",
    "CAMERA_REFERENCE",
]

#: Id of the default-camera condition that :func:`weakspot.evaluate.config.expand_conditions` adds.
CAMERA_REFERENCE = "camera_reference"
#: Where :func:`refine_envelope` stores its crossings, relative to the run directory.
REFINED_FILE = "envelope/refined.json"

_NOUNS = {
    "exposure_s": "exposures",
    "pixel_size_um": "pixel sizes",
    "defocus_diopters": "defocus",
    "f_number": "f-numbers",
    "focal_length_mm": "focal lengths",
    "mean_luminance_cd_m2": "scene luminances",
    "fill_factor": "fill factors",
    "read_noise_e": "read noise",
    "iso_gain": "ISO gains",
    "full_well_e": "full wells",
    "dark_current_e_per_s": "dark currents",
}
_UNITS = {
    "exposure_s": "s",
    "pixel_size_um": "µm",
    "defocus_diopters": "D",
    "focal_length_mm": "mm",
    "mean_luminance_cd_m2": "cd/m²",
    "read_noise_e": "e⁻",
    "full_well_e": "e⁻",
    "dark_current_e_per_s": "e⁻/s",
}


def format_value(param: str, value: float) -> str:
    """A grid value in words: exposures below 1 s as ``1/N s``, others as ``value unit``."""
    v = float(value)
    if param == "exposure_s" and 0 < v < 1:
        n = 1.0 / v
        return f"1/{n:.0f} s" if abs(n - round(n)) < 0.05 * n else f"{v:.3g} s"
    if param == "f_number":
        return f"f/{v:g}"
    unit = _UNITS.get(param, "")
    return f"{v:g} {unit}".strip()


@dataclass
class Envelope:
    """Accuracy over a 2-D camera grid and the region keeping ``share`` of the reference.

    ``accuracy[i, j]`` is at ``y = ys[i]``, ``x = xs[j]`` (NaN where the grid has no point).
    ``contour`` lists the boundary crossings: one dict per grid line where ``keep`` changes
    between neighbours, with the fixed parameter and value, the crossing value and whether it
    was ``refined`` by bisection. ``better_high`` says, per parameter, whether larger values
    keep more accuracy.
    """

    degradation: str
    x: str
    y: str
    xs: list[float]
    ys: list[float]
    accuracy: np.ndarray
    n_images: int
    metric: str
    reference: str
    reference_accuracy: float
    share: float
    contour: list[dict] = field(default_factory=list)
    better_high: dict = field(default_factory=dict)
    corner: dict | None = None
    sentence: str = ""

    @property
    def threshold(self) -> float:
        return self.share * self.reference_accuracy

    @property
    def keep(self) -> np.ndarray:
        """Boolean grid: accuracy ≥ ``share`` × reference accuracy."""
        return np.nan_to_num(self.accuracy, nan=-1.0) >= self.threshold - 1e-12

    def table(self) -> pd.DataFrame:
        """Long table ``y, x, accuracy, keep``."""
        rows = [
            {self.y: yv, self.x: xv, "accuracy": self.accuracy[i, j], "keep": bool(self.keep[i, j])}
            for i, yv in enumerate(self.ys)
            for j, xv in enumerate(self.xs)
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "degradation": self.degradation,
            "x": self.x,
            "y": self.y,
            "xs": self.xs,
            "ys": self.ys,
            "accuracy": [[None if math.isnan(v) else float(v) for v in row] for row in self.accuracy],
            "n_images": self.n_images,
            "metric": self.metric,
            "reference": self.reference,
            "reference_accuracy": self.reference_accuracy,
            "share": self.share,
            "threshold": self.threshold,
            "keep": self.keep.tolist(),
            "contour": self.contour,
            "better_high": self.better_high,
            "corner": self.corner,
            "sentence": self.sentence,
        }


def _grid_conditions(run) -> dict[str, tuple[str, str, pd.DataFrame]]:
    """Camera-family single-step degradations whose conditions vary exactly two numeric parameters."""
    conds = run.conditions
    conds = conds[
        (conds.family == "camera")
        & (conds.condition_id != CAMERA_REFERENCE)
        & ~conds.degradation.astype(str).str.contains(r"\+", regex=True)
    ]
    out = {}
    for deg, g in conds.groupby("degradation", sort=False):
        params = [json.loads(p) for p in g.params_json]
        keys = sorted({k for p in params for k in p})
        varying = []
        for k in keys:
            vals = {json.dumps(p.get(k)) for p in params}
            if len(vals) > 1:
                varying.append(k)
        if len(varying) != 2:
            continue
        if not all(
            isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)
            for p in params
            for k in varying
        ):
            continue
        df = pd.DataFrame(
            {
                "condition_id": list(g.condition_id),
                varying[0]: [float(p[varying[0]]) for p in params],
                varying[1]: [float(p[varying[1]]) for p in params],
                "params": params,
            }
        )
        # x: the parameter with more distinct values (ties: the registry's x-axis order)
        a, b = varying
        x, y = (a, b) if df[a].nunique() >= df[b].nunique() else (b, a)
        out[str(deg)] = (x, y, df)
    return out


def camera_grids(run_dir: StoreLike) -> list[str]:
    """Names of the camera degradations with a 2-D grid in a run."""
    return list(_grid_conditions(load_run(run_dir)))


def _hit_rate(run, cid: str) -> tuple[float, int]:
    r = run.rows[run.rows.condition_id == cid]
    return (float(r.hit.mean()), int(len(r))) if len(r) else (math.nan, 0)


def _better_high(acc: np.ndarray, axis: int) -> bool:
    """Whether accuracy grows with the parameter along ``axis`` (mean last minus mean first)."""
    first = np.nanmean(np.take(acc, 0, axis=axis))
    last = np.nanmean(np.take(acc, -1, axis=axis))
    return bool(last >= first)


def _crossings(env: Envelope, refined: dict) -> list[dict]:
    out = []
    thr = env.threshold
    for along, fixed_name, values, fixed_values, get in (
        (env.x, env.y, env.xs, env.ys, lambda i, j: env.accuracy[i, j]),
        (env.y, env.x, env.ys, env.xs, lambda i, j: env.accuracy[j, i]),
    ):
        for i, fv in enumerate(fixed_values):
            for j in range(len(values) - 1):
                a, b = get(i, j), get(i, j + 1)
                if np.isnan(a) or np.isnan(b) or ((a >= thr) == (b >= thr)):
                    continue
                key = _refine_key(along, fixed_name, fv, values[j], values[j + 1])
                if key in refined and not math.isnan(refined[key]["crossing"]):
                    cx, ref = refined[key]["crossing"], True
                else:
                    cx = values[j] + (thr - a) * (values[j + 1] - values[j]) / (b - a)
                    ref = False
                out.append(
                    {
                        "param": along,
                        "fixed_param": fixed_name,
                        "fixed": float(fv),
                        "between": [float(values[j]), float(values[j + 1])],
                        "crossing": float(cx),
                        "refined": ref,
                    }
                )
    return out


def _refine_key(param: str, fixed_param: str, fixed: float, lo: float, hi: float) -> str:
    return f"{param}|{fixed_param}={float(fixed)!r}|{float(lo)!r}..{float(hi)!r}"


def _load_refined(root: Path, degradation: str) -> dict:
    p = Path(root) / REFINED_FILE
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return dict(data.get(degradation, {}))


def _corner(env: Envelope) -> dict | None:
    """The largest block of neighbouring grid points (an interval of each parameter) that all keep.

    Ties go to the block found first scanning from the smallest values. Returns the index
    ranges and values, or ``None`` when no point keeps.
    """
    keep, valid = env.keep, ~np.isnan(env.accuracy)
    bad = np.pad(np.cumsum(np.cumsum(valid & ~keep, 0), 1), ((1, 0), (1, 0)))
    cnt = np.pad(np.cumsum(np.cumsum(valid, 0), 1), ((1, 0), (1, 0)))

    def block(a, i0, i1, j0, j1):
        return int(a[i1 + 1, j1 + 1] - a[i0, j1 + 1] - a[i1 + 1, j0] + a[i0, j0])

    ny, nx = keep.shape
    best = None
    for i0 in range(ny):
        for i1 in range(i0, ny):
            for j0 in range(nx):
                for j1 in range(j0, nx):
                    n = block(cnt, i0, i1, j0, j1)
                    if n and not block(bad, i0, i1, j0, j1) and (best is None or n > best[0]):
                        best = (n, i0, i1, j0, j1)
    if best is None:
        return None
    n, i0, i1, j0, j1 = best
    return {
        "x_range": [env.xs[j0], env.xs[j1]],
        "y_range": [env.ys[i0], env.ys[i1]],
        "x_index": [j0, j1],
        "y_index": [i0, i1],
        "n_points": n,
    }


def _clause(param: str, values: list[float], lo: int, hi: int) -> str:
    noun = _NOUNS.get(param, param)
    first, last = format_value(param, values[lo]), format_value(param, values[hi])
    if lo == 0 and hi == len(values) - 1:
        return f"all tested {noun} ({format_value(param, values[0])} to {format_value(param, values[-1])})"
    if lo == 0:
        return f"{noun} ≤ {last}"
    if hi == len(values) - 1:
        return f"{noun} ≥ {first}"
    return f"{noun} {first}" if lo == hi else f"{noun} from {first} to {last}"


def envelope_sentence(env: Envelope) -> str:
    """The envelope in one plain sentence: the largest tested block of grid points that keeps."""
    pct = f"{100 * env.share:.0f}%"
    what = "accuracy" if env.metric == "accuracy" else "agreement with its clean predictions"
    ref = "the default camera's" if env.reference == CAMERA_REFERENCE else "its clean"
    c = env.corner
    if c is None:
        return (
            f"The model keeps {pct} of {ref} {what} nowhere on the tested grid of "
            f"{_NOUNS.get(env.x, env.x)} and {_NOUNS.get(env.y, env.y)}."
        )
    return (
        f"The model keeps {pct} of {ref} {what} for {_clause(env.x, env.xs, *c['x_index'])} "
        f"at {_clause(env.y, env.ys, *c['y_index'])}."
    )


def operating_envelope(
    run_dir: StoreLike, *, share: float = 0.9, degradation: str | None = None
) -> Envelope | None:
    """The operating envelope of the first (or the named) 2-D camera grid of a run; ``None`` if it has none.

    Args:
        run_dir: a run directory (or anything :func:`~weakspot.analysis.load_run` accepts).
        share: the share of the reference accuracy to keep, in (0, 1].
        degradation: which camera degradation's grid (default: the first with two varying parameters).
    """
    if not (isinstance(share, (int, float)) and 0 < float(share) <= 1):
        raise InvalidParameterError("share", share, "a fraction in (0, 1], e.g. 0.9")
    run = load_run(run_dir)
    grids = _grid_conditions(run)
    if not grids:
        return None
    if degradation is None:
        degradation = next(iter(grids))
    if degradation not in grids:
        raise InvalidParameterError(
            "degradation", degradation, "one of " + ", ".join(grids) + " (2-D camera grids)"
        )
    x, y, df = grids[degradation]
    xs, ys = sorted(df[x].unique().tolist()), sorted(df[y].unique().tolist())
    acc = np.full((len(ys), len(xs)), np.nan)
    n = 0
    for cid, xv, yv in zip(df.condition_id, df[x], df[y], strict=True):
        a, k = _hit_rate(run, cid)
        acc[ys.index(yv), xs.index(xv)] = a
        n = max(n, k)
    if CAMERA_REFERENCE in set(run.conditions.condition_id):
        ref_name, ref_acc = CAMERA_REFERENCE, _hit_rate(run, CAMERA_REFERENCE)[0]
    else:
        ref_name, ref_acc = "clean", float(run.rows[run.rows.condition_id == "clean"].hit.mean())
    env = Envelope(
        degradation=degradation,
        x=x,
        y=y,
        xs=[float(v) for v in xs],
        ys=[float(v) for v in ys],
        accuracy=acc,
        n_images=n,
        metric="accuracy" if run.labelled else "agreement",
        reference=ref_name,
        reference_accuracy=float(ref_acc),
        share=float(share),
    )
    env.better_high = {x: _better_high(acc, 1), y: _better_high(acc, 0)}
    env.contour = _crossings(env, _load_refined(run.root, degradation))
    env.corner = _corner(env)
    env.sentence = envelope_sentence(env)
    return env


def refine_envelope(
    run_dir: StoreLike,
    model=None,
    dataset=None,
    *,
    share: float = 0.9,
    degradation: str | None = None,
    tol_fraction: float = 0.125,
    batch_size: int = 32,
    seed: int | None = None,
) -> Envelope | None:
    """Locate every boundary crossing of the envelope by bisection, running the model on extra points.

    For each grid line on which the envelope's ``keep`` flips between neighbouring points, the
    accuracy along that line is bisected between them (:func:`~weakspot.evaluate.adaptive.
    bisect_breaking_point`, to ``tol_fraction`` of the gap) at the other parameters of the
    keeping point; the crossings are stored in ``RUN_DIR/envelope/refined.json`` and the
    refined :class:`Envelope` is returned (the report then reads them; it runs nothing).

    Args:
        model: the run's model (a :class:`~weakspot.models.LoadedModel`); default: rebuilt from the
            run (:meth:`weakspot.evaluate.Run.load_model`, on the CPU).
        dataset: the run's images in store order; default: :meth:`weakspot.evaluate.Run.open_data`.
        seed: noise seed (default: the run's).
    """
    from weakspot.degrade import get_spec
    from weakspot.evaluate.adaptive import _probs, bisect_breaking_point
    from weakspot.evaluate.conditions import Condition, Step, degrade_images, make_condition_id

    run = load_run(run_dir)
    env = operating_envelope(run, share=share, degradation=degradation)
    if env is None:
        return None
    if not 0 < float(tol_fraction) < 1:
        raise InvalidParameterError("tol_fraction", tol_fraction, "a fraction of the grid step in (0, 1)")
    if model is None or dataset is None or seed is None:
        from weakspot.evaluate import Run

        handle = Run.open(run.root)
        model = handle.load_model("cpu") if model is None else model
        dataset = handle.open_data() if dataset is None else dataset
        seed = handle.seed if seed is None else seed
    _, _, df = _grid_conditions(run)[env.degradation]
    spec = get_spec(env.degradation)
    images = [dataset.load(i) for i in range(len(dataset))]
    ids = [str(i) for i in dataset.image_ids]
    labels = np.asarray(dataset.labels)
    clean_top1 = _probs(model, images, batch_size).argmax(1)

    def accuracy(params: dict) -> float:
        cond = Condition(
            condition_id=make_condition_id(env.degradation, params),
            steps=(Step(name=env.degradation, params=spec.resolve(None, **params)),),
            family="camera",
        )
        top1 = _probs(model, degrade_images(cond, images, ids, seed), batch_size).argmax(1)
        return float(np.where(labels >= 0, top1 == labels, top1 == clean_top1).mean())

    refined = {}
    for c in env.contour:
        lo, hi = c["between"]
        p, fp = c["param"], c["fixed_param"]
        row = df[(df[fp] == c["fixed"]) & (df[p].isin([lo, hi]))]
        acc_at = {
            float(v): env.accuracy[env.ys.index(c["fixed"]), env.xs.index(v)]
            if p == env.x
            else env.accuracy[env.ys.index(v), env.xs.index(c["fixed"])]
            for v in (lo, hi)
        }
        mild, severe = (lo, hi) if acc_at[lo] >= acc_at[hi] else (hi, lo)
        base = dict(row[row[p] == mild].params.iloc[0])

        def acc_along(v: float, base: dict = base, p: str = p) -> float:
            return accuracy({**base, p: float(v)})

        res = bisect_breaking_point(
            acc_along,
            mild,
            severe,
            env.reference_accuracy,
            fraction=env.share,
            tol=abs(hi - lo) * float(tol_fraction),
        )
        refined[_refine_key(p, fp, c["fixed"], lo, hi)] = {
            "crossing": res.x,
            "status": res.status,
            "evaluations": res.evaluations,
        }
    path = Path(run.root) / REFINED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[env.degradation] = refined
    path.write_text(json.dumps(data, indent=2, default=float))
    return operating_envelope(run, share=share, degradation=env.degradation)
