"""One unit of work, evaluated as a pure function: plan units, evaluate a unit, write a unit.

A *unit* is one ``(condition_id, shard)``: the images with ``image_index`` in
``[shard·shard_size, (shard+1)·shard_size)`` under one condition. :func:`evaluate_unit`
is pure (model + images + condition → rows), so any engine (the local loop in
:mod:`weakspot.evaluate.engine`, the Ray actors in :mod:`weakspot.evaluate.ray_engine`)
calls it; :func:`write_unit` stores the result atomically.

Per image the order is: decode (native resolution) → degradation (per-image keys, whole batch,
:func:`~weakspot.evaluate.conditions.apply_condition`) → model preprocessing (resize,
crop, normalise) → forward → softmax.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from weakspot.errors import DataError, WeakspotError
from weakspot.evaluate.conditions import Condition, degrade_images
from weakspot.evaluate.store import CLEAN, ResultsStore, atomic_write_json

__all__ = [
    "Unit",
    "ShardImages",
    "UnitResult",
    "plan_units",
    "evaluate_unit",
    "rows_from_probs",
    "write_unit",
    "top1_for",
]


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``condition_id`` on images ``[start, stop)`` (shard ``shard``)."""

    condition_id: str
    shard: int
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start


def plan_units(
    n_images: int, condition_ids: Sequence[str], shard_size: int, done: Iterable[tuple[str, int]] = ()
) -> list[Unit]:
    """Every unit not in ``done``, shard-major, the clean condition first in each shard."""
    done = set(done)
    ids = [CLEAN] + [c for c in condition_ids if c != CLEAN]
    out = []
    for shard in range((n_images + shard_size - 1) // shard_size):
        start, stop = shard * shard_size, min(n_images, (shard + 1) * shard_size)
        for cid in ids:
            if (cid, shard) not in done:
                out.append(Unit(cid, shard, start, stop))
    return out


# ----------------------------------------------------------------------------- evaluation
@dataclass
class ShardImages:
    """The decoded images of one shard. ``images[i]`` is ``(C, H, W)`` float [0, 1] or
    ``None`` if it could not be decoded (``errors[i]`` says why)."""

    image_index: np.ndarray
    image_ids: list[str]
    labels: np.ndarray
    images: list[torch.Tensor | None]
    errors: list[str | None] = field(default_factory=list)


@dataclass
class UnitResult:
    unit: Unit
    rows: dict[str, list]
    probs: np.ndarray | None
    skipped: list[dict[str, Any]]
    degrade_s: float = 0.0
    forward_s: float = 0.0
    degrade_cpu_s: float = 0.0  # process CPU time: robust to other processes on the machine
    forward_cpu_s: float = 0.0  # preprocessing + network + softmax
    model_cpu_s: float = 0.0  # the network's forward alone

    @property
    def top1(self) -> np.ndarray:
        return np.asarray(self.rows["top1"], dtype=np.int64)


def _forward(
    model, batch: list[torch.Tensor], amp: bool, channels_last: bool, timing: list[float] | None = None
) -> torch.Tensor:
    x = model.preprocess(batch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    c0 = time.process_time()
    if amp and x.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float32):
            logits = model.module(x)
    else:
        logits = model.module(x)
    if timing is not None:
        if logits.device.type == "cuda":
            torch.cuda.synchronize()
        timing[0] += time.process_time() - c0
    return torch.softmax(logits.float(), dim=1).cpu()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError)
        and ("out of memory" in str(exc).lower() or "can't allocate" in str(exc).lower())
    )


def evaluate_unit(
    model,
    shard: ShardImages,
    condition: Condition,
    unit: Unit,
    *,
    seed: int,
    batch_size: int = 32,
    clean_top1: np.ndarray | None = None,
    store_probs: bool = False,
    degradation: torch.nn.Module | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> UnitResult:
    """Evaluate one unit: degrade (keyed), preprocess, forward, and build the store rows.

    Args:
        model: a :class:`~weakspot.models.LoadedModel`.
        shard: the shard's decoded images.
        condition: the condition (:data:`CLEAN_CONDITION` for the clean unit).
        unit: the unit (its ``condition_id``/``shard`` name the output).
        seed: the run seed (keys every image: ``keyed_seed(seed, image_id, condition_id)``).
        batch_size: images per forward pass (halved automatically on out-of-memory).
        clean_top1: clean top-1 class per shard row (``-1`` where unknown); required
            unless ``condition`` is clean.
        store_probs: also return the full probability matrix (float32).

    Returns:
        :class:`UnitResult` with rows in ``PREDICTIONS_SCHEMA`` order, ordered by
        ``image_index``; images that fail (undecodable, degradation error, no clean
        prediction) are left out and listed in ``skipped``.
    """
    is_clean = condition.is_clean
    if not is_clean and clean_top1 is None:
        raise ValueError("clean_top1 is required for a degraded unit")
    skipped: list[dict[str, Any]] = []
    decoded: dict[int, torch.Tensor] = {}  # the images to evaluate, by shard position
    for i, im in enumerate(shard.images):
        if im is None:
            reason = shard.errors[i] if shard.errors and shard.errors[i] else "could not be decoded"
        elif clean_top1 is not None and not is_clean and clean_top1[i] < 0:
            reason = "no clean prediction"
        else:
            decoded[i] = im
            continue
        if is_clean or im is not None:  # undecodable images are listed once, by the clean unit
            skipped.append(
                {"image_id": shard.image_ids[i], "condition_id": unit.condition_id, "reason": reason}
            )
    keep = list(decoded)
    deg = degradation if degradation is not None or is_clean else condition.build()
    probs_parts: list[torch.Tensor] = []
    rows_kept: list[int] = []
    t_deg = t_fwd = c_deg = c_fwd = 0.0
    c_model = [0.0]
    pos, bs = 0, max(1, int(batch_size))
    with torch.inference_mode():
        while pos < len(keep):
            chunk = keep[pos : pos + bs]
            imgs = [decoded[i] for i in chunk]
            ids = [shard.image_ids[i] for i in chunk]
            t0, c0 = time.perf_counter(), time.process_time()
            ok_rows, batch = list(chunk), imgs
            if not is_clean:
                try:
                    batch = degrade_images(condition, imgs, ids, seed, deg)
                except WeakspotError:
                    ok_rows, batch = [], []  # isolate the image(s) that fail
                    for i, im, iid in zip(chunk, imgs, ids, strict=True):
                        try:
                            batch += degrade_images(condition, [im], [iid], seed, deg)
                            ok_rows.append(i)
                        except WeakspotError as exc:
                            skipped.append(
                                {
                                    "image_id": iid,
                                    "condition_id": unit.condition_id,
                                    "reason": f"degradation failed: {exc}",
                                }
                            )
            t1, c1 = time.perf_counter(), time.process_time()
            t_deg += t1 - t0
            c_deg += c1 - c0
            if batch:
                try:
                    p = _forward(model, batch, amp, channels_last, c_model)
                except Exception as exc:
                    if _is_oom(exc) and bs > 1:
                        bs = max(1, bs // 2)
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
                        continue  # retry the same images with a smaller batch
                    raise
                probs_parts.append(p)
                rows_kept += ok_rows
            t_fwd += time.perf_counter() - t1
            c_fwd += time.process_time() - c1
            pos += len(chunk)
    k = model.num_classes
    probs = torch.cat(probs_parts).numpy() if probs_parts else np.zeros((0, k), np.float32)
    if probs.shape[1] != k:
        raise DataError(
            f"the model returned {probs.shape[1]} outputs but has {k} class names; fix num_classes/class_names"
        )
    rows = rows_from_probs(
        probs,
        shard.image_index[rows_kept],
        shard.labels[rows_kept],
        None if is_clean else np.asarray(clean_top1)[rows_kept],
    )
    return UnitResult(
        unit,
        rows,
        probs.astype(np.float32) if store_probs else None,
        skipped,
        t_deg,
        t_fwd,
        c_deg,
        c_fwd,
        c_model[0],
    )


def rows_from_probs(
    probs: np.ndarray, image_index: np.ndarray, labels: np.ndarray, clean_top1: np.ndarray | None
) -> dict[str, list]:
    """Prediction rows (``PREDICTIONS_SCHEMA``) from probabilities ``(N, K)``.

    ``clean_top1=None`` means these are the clean predictions (clean top-1 = own top-1).
    """
    n, k = probs.shape
    kk = min(5, k)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :kk] if n else np.zeros((0, kk), np.int64)
    top5_p = np.take_along_axis(probs, order, axis=1)
    top1 = order[:, 0] if n else np.zeros(0, np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    has = labels >= 0
    p_label = np.full(n, np.nan, np.float32)
    p_label[has] = probs[np.nonzero(has)[0], labels[has]]
    ref = top1 if clean_top1 is None else np.asarray(clean_top1, dtype=np.int64)
    p_ref = probs[np.arange(n), ref] if n else np.zeros(0, np.float32)
    return {
        "image_index": np.asarray(image_index, dtype=np.int32).tolist(),
        "top1": top1.astype(np.int32).tolist(),
        "top1_prob": top5_p[:, 0].astype(np.float32).tolist() if n else [],
        "top5": order.astype(np.int32).tolist(),
        "top5_prob": top5_p.astype(np.float32).tolist(),
        "label": labels.astype(np.int32).tolist(),
        "p_label": p_label.tolist(),
        "clean_top1": ref.astype(np.int32).tolist(),
        "p_clean_top1": np.asarray(p_ref, np.float32).tolist(),
        "correct1": (has & (top1 == labels)).tolist(),
        "correct5": (has & (order == labels[:, None]).any(axis=1)).tolist() if n else [],
    }


def write_unit(store: ResultsStore, result: UnitResult) -> None:
    """Write a finished unit: its skip list (if any), probabilities, then the Parquet file
    last (its presence marks the unit done)."""
    u = result.unit
    skip_path = store.root / "skipped" / u.condition_id / f"shard-{u.shard:05d}.json"
    if result.skipped:
        atomic_write_json(skip_path, result.skipped)
    else:
        skip_path.unlink(missing_ok=True)
    store.write_unit(u.condition_id, u.shard, result.rows, result.probs)


def top1_for(res: UnitResult, idx: np.ndarray) -> np.ndarray:
    """The top-1 class of ``res`` for each ``image_index`` in ``idx`` (``-1`` where skipped)."""
    out = np.full(len(idx), -1, dtype=np.int64)
    pos = {int(i): j for j, i in enumerate(idx)}
    for ii, t in zip(res.rows["image_index"], res.rows["top1"], strict=True):
        out[pos[int(ii)]] = t
    return out
