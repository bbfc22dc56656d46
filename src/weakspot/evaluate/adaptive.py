"""Adaptive breaking points: bisect a continuous physical parameter per class.

A fixed grid must evaluate every image at every grid point to locate where a
class loses half of its clean accuracy (or clean-class probability) to within
the grid step. Bisection needs only the two ends plus ``log2(range / tol)``
midpoints per class, evaluated on that class's images only. The breaking point
is defined exactly as in :func:`weakspot.analysis.breaking_points` (first
crossing of ``fraction × clean value``, linearly interpolated between the two
bracketing evaluations), so the two agree to within ``tol`` when the class curve
is monotone. This module evaluates the model (the analysis layer never does);
images are degraded with the engine's :func:`~weakspot.evaluate.conditions.degrade_images`
(per-image keyed generators), so each evaluated point is a reproducible condition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from weakspot.errors import InvalidParameterError

__all__ = ["BisectResult", "bisect_breaking_point", "adaptive_breaking_points", "adaptive_from_run"]


@dataclass
class BisectResult:
    """Outcome of one bisection: ``x`` (NaN unless reached), ``status`` as in
    :func:`weakspot.analysis.breaking_point`, and every ``(x, value)`` evaluated."""

    x: float
    status: str
    evaluations: list[tuple[float, float]] = field(default_factory=list)

    @property
    def n_evals(self) -> int:
        return len(self.evaluations)


def _bisect(mild: float, severe: float, clean_value: float, fraction: float, tol: float):
    """The bisection as a coroutine: yields the next x to evaluate, receives its value,
    and returns ``(x, status)`` (so one driver can advance many classes in lockstep)."""
    if not clean_value > 0:
        return math.nan, "no_clean_signal"
    thr = fraction * clean_value
    v_sev = yield severe
    if v_sev > thr:
        return math.nan, "not_reached"
    v_mild = yield mild
    if v_mild <= thr:
        return mild, "before_first_level"
    a, va, b, vb = mild, v_mild, severe, v_sev  # invariant: va > thr >= vb
    while abs(b - a) > tol:
        m = 0.5 * (a + b)
        vm = yield m
        if vm > thr:
            a, va = m, vm
        else:
            b, vb = m, vm
    return (b if va == vb else a + (thr - va) * (b - a) / (vb - va)), "interpolated"


def _check_tol(tol: float) -> None:
    if not tol > 0:
        raise InvalidParameterError("tol", tol, "a positive step in the parameter's unit")


def bisect_breaking_point(
    f: Callable[[float], float],
    mild: float,
    severe: float,
    clean_value: float,
    *,
    fraction: float = 0.5,
    tol: float,
) -> BisectResult:
    """Find where ``f`` (a class metric, non-increasing from ``mild`` to ``severe``) reaches
    ``fraction × clean_value``, to within ``tol`` in x. ``mild`` may be larger than ``severe``
    (e.g. exposure time: shorter is worse). Costs at most ``2 + ceil(log2(|severe − mild| / tol))``
    evaluations of ``f``."""
    _check_tol(tol)
    evals: list[tuple[float, float]] = []
    gen = _bisect(mild, severe, clean_value, fraction, tol)
    try:
        x = next(gen)
        while True:
            v = float(f(x))
            evals.append((x, v))
            x = gen.send(v)
    except StopIteration as stop:
        bx, status = stop.value
    return BisectResult(float(bx), status, evals)


def _probs(model, images: list[torch.Tensor], batch_size: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = model.preprocess(images[i : i + batch_size])
            out.append(torch.softmax(model.module(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def adaptive_breaking_points(
    model,
    dataset,
    degradation: str,
    *,
    axis: str | None = None,
    mild: float | None = None,
    severe: float | None = None,
    tol: float | None = None,
    metric: str = "p_clean",
    fraction: float = 0.5,
    params: dict | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Per-class breaking points of ``degradation`` along its physical ``axis`` by bisection.

    Args:
        model: a :class:`~weakspot.models.LoadedModel` (``.module``, ``.preprocess``, ``.class_names``).
        dataset: an :class:`~weakspot.data.ImageDataset` (e.g. from :func:`weakspot.data.open_dataset`);
            classes are the labels, or the clean top-1 for unlabelled images.
        degradation: a registered name; ``axis`` defaults to its registered x-axis parameter.
        mild, severe: the search interval in the axis unit (default: its severity 1 and 5 values).
        tol: resolution in the axis unit (default: 1/64 of the interval).
        metric: ``'p_clean'`` (mean probability of the clean top-1 class) or ``'accuracy'``.
        params: other fixed parameters of the degradation.

    Returns one row per class: ``class, class_name, n_images, clean_value, breaking_x, status,
    n_evals, image_evaluations``; ``df.attrs`` holds ``axis``, ``unit``, ``tol``, the totals
    ``adaptive_image_evaluations`` and ``grid_image_evaluations`` (a fixed grid of step ``tol``
    over all images) and ``saved`` (their difference).
    """
    from weakspot.degrade import get_spec
    from weakspot.evaluate.conditions import Condition, Step, degrade_images, make_condition_id

    spec = get_spec(degradation)
    axis = axis or spec.axis
    if axis is None:
        raise InvalidParameterError(
            "axis", axis, f"a parameter of '{degradation}' (it has no registered x-axis)"
        )
    p = spec.param(axis)
    lv = sorted(spec.severities)
    mild = float(spec.severities[lv[0]].get(axis, p.default)) if mild is None else float(mild)
    severe = float(spec.severities[lv[-1]].get(axis, p.default)) if severe is None else float(severe)
    if mild == severe:
        raise InvalidParameterError("severe", severe, f"a value different from mild={mild}")
    tol = abs(severe - mild) / 64 if tol is None else float(tol)
    if metric not in ("p_clean", "accuracy"):
        raise InvalidParameterError("metric", metric, "'p_clean' or 'accuracy'")
    params = dict(params or {})

    n = len(dataset)
    images = [dataset.load(i) for i in range(n)]
    ids = [str(i) for i in dataset.image_ids]
    labels = np.asarray(dataset.labels)
    clean_p = _probs(model, images, batch_size)
    clean_top1 = clean_p.argmax(1)
    ref = np.where(labels >= 0, labels, clean_top1)
    wanted = sorted(set(ref.tolist())) if classes is None else list(classes)

    def value(probs: np.ndarray, idx: np.ndarray) -> float:
        if metric == "p_clean":
            return float(probs[np.arange(len(idx)), clean_top1[idx]].mean())
        hit = np.where(labels[idx] >= 0, probs.argmax(1) == labels[idx], probs.argmax(1) == clean_top1[idx])
        return float(hit.mean())

    _check_tol(tol)
    groups = {}
    for k in wanted:
        idx = np.flatnonzero(ref == k)
        if len(idx):
            groups[int(k)] = idx
    # every class bisects on its own images; all classes advance in lockstep so that each step
    # is one batched forward pass over the images of the classes still searching
    state = {}
    for k, idx in groups.items():
        v0 = value(clean_p[idx], idx)
        gen = _bisect(mild, severe, v0, fraction, tol)
        state[k] = {"v0": v0, "gen": gen, "evals": [], "result": None}
        try:
            state[k]["x"] = next(gen)
        except StopIteration as stop:
            state[k]["result"] = stop.value
    while True:
        active = [k for k in state if state[k]["result"] is None]
        if not active:
            break
        batch, owner = [], []
        for k in active:
            x = state[k]["x"]
            cond = Condition(
                condition_id=make_condition_id(degradation, {axis: x}),
                steps=(Step(name=degradation, params={**params, axis: x}),),
                family=spec.family,
                axis=axis,
                axis_value=x,
                axis_unit=p.unit or None,
            )
            idx = groups[k]
            # images of equal size are degraded together, each with its own keyed generator
            batch += degrade_images(cond, [images[i] for i in idx], [ids[i] for i in idx], seed)
            owner.append((k, len(idx)))
        probs = _probs(model, batch, batch_size)
        at = 0
        for k, m in owner:
            idx = groups[k]
            v = value(probs[at : at + m], idx)
            at += m
            st = state[k]
            st["evals"].append((st["x"], v))
            try:
                st["x"] = st["gen"].send(v)
            except StopIteration as stop:
                st["result"] = stop.value
    rows, total = [], 0
    for k, st in state.items():
        bx, status = st["result"]
        n_img = len(groups[k])
        total += len(st["evals"]) * n_img
        rows.append(
            {
                "class": k,
                "class_name": model.class_names[k] if k < len(model.class_names) else str(k),
                "n_images": int(n_img),
                "clean_value": st["v0"],
                "breaking_x": float(bx),
                "status": status,
                "n_evals": len(st["evals"]),
                "image_evaluations": len(st["evals"]) * n_img,
            }
        )
    df = pd.DataFrame(rows)
    n_grid = int(math.floor(abs(severe - mild) / tol + 1e-9)) + 1
    grid_total = n_grid * int(sum(r["n_images"] for r in rows))
    df.attrs.update(
        axis=axis,
        unit=p.unit,
        tol=tol,
        mild=mild,
        severe=severe,
        grid_points=n_grid,
        adaptive_image_evaluations=int(total),
        grid_image_evaluations=grid_total,
        saved=grid_total - int(total),
    )
    return df


class _RunSubset:
    """Some images of a run's :class:`~weakspot.evaluate.run.RunImages` (duck-types ImageDataset)."""

    def __init__(self, data, positions: list[int]):
        self.data, self.positions = data, positions
        self.image_ids = [data.image_ids[i] for i in positions]
        self.labels = [data.labels[i] for i in positions]

    def __len__(self) -> int:
        return len(self.positions)

    def load(self, i: int) -> torch.Tensor:
        return self.data.load(self.positions[i])


def adaptive_from_run(run_dir, degradation: str, *, per_class: int | None = None, **kwargs) -> pd.DataFrame:
    """:func:`adaptive_breaking_points` with the model, images, labels and seed of a finished run
    (re-opened through :class:`~weakspot.evaluate.run.Run`). ``per_class`` caps the images per class. The result is also
    written to ``RUN_DIR/adaptive/<degradation>.parquet`` (attrs in the Parquet metadata)."""
    import json

    from weakspot.evaluate.run import Run
    from weakspot.evaluate.store import atomic_write_bytes

    run = Run.open(run_dir)
    data = run.open_data()  # the evaluated images, with the run's (model-mapped) labels
    positions: list[int] = []
    per_label: dict[int, int] = {}
    for i, label in enumerate(data.labels):  # the first ``per_class`` images of each class
        per_label[label] = per_label.get(label, 0) + 1
        if per_class is None or per_label[label] <= per_class:
            positions.append(i)
    kwargs.setdefault("seed", run.seed)
    df = adaptive_breaking_points(run.load_model(), _RunSubset(data, positions), degradation, **kwargs)
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"weakspot.adaptive": json.dumps(df.attrs).encode()}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    from pathlib import Path

    atomic_write_bytes(
        Path(run_dir) / "adaptive" / f"{degradation.replace('/', '.')}.parquet", buf.getvalue()
    )
    return df
