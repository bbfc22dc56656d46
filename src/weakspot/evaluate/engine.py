"""Sweep execution in three separable steps: plan units, evaluate a unit, write a unit.

A *unit* is one ``(condition_id, shard)``: the images with ``image_index`` in
``[shard·shard_size, (shard+1)·shard_size)`` under one condition. :func:`evaluate_unit`
is pure (model + images + condition → rows), so any engine can call it; the local
engine (:func:`run_sweep`) walks the shards in order, loads each shard's images once in
worker processes, evaluates the clean unit first and then every pending condition on
the same decoded images, and writes each finished unit atomically. A run killed at any
moment resumes from the finished units; nothing is duplicated.

Per image the order is: decode (native resolution) → degradation (keyed generator,
:func:`~weakspot.evaluate.conditions.apply_condition`) → model preprocessing (resize,
crop, normalise) → forward → softmax.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakspot.errors import ConfigError, DataError, WeakspotError
from weakspot.evaluate.conditions import CLEAN_CONDITION, Condition, degrade_images
from weakspot.evaluate.store import CLEAN, ResultsStore, atomic_write_json

__all__ = [
    "Unit",
    "ShardImages",
    "UnitResult",
    "RunSummary",
    "plan_units",
    "evaluate_unit",
    "write_unit",
    "run_sweep",
    "auto_batch_size",
    "open_run_data",
    "load_run_model",
    "resolve_threads",
    # the engine toolkit: what another engine (evaluate/ray_engine.py) shares with this one
    "LoadItems",
    "UnitProgress",
    "setup_run",
    "finish_manifest",
    "lock_run_dir",
    "remove_stale_temporaries",
    "stored_clean_top1",
    "top1_for",
    "config_hash",
    "plan_pending",
]


# ----------------------------------------------------------------------------- planning
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


def _forward(model, batch: list[torch.Tensor], amp: bool, channels_last: bool,
             timing: list[float] | None = None) -> torch.Tensor:
    x = model.preprocess(batch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    c0 = time.process_time()
    if amp and x.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
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
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc).lower() or "can't allocate" in str(exc).lower())
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
        seed: the run seed (keys every image's generator).
        batch_size: images per forward pass (halved automatically on out-of-memory).
        clean_top1: clean top-1 class per shard row (``-1`` where unknown); required
            unless ``condition`` is clean.
        store_probs: also return the full probability matrix (float16).

    Returns:
        :class:`UnitResult` with rows in ``PREDICTIONS_SCHEMA`` order, ordered by
        ``image_index``; images that fail (undecodable, degradation error, no clean
        prediction) are left out and listed in ``skipped``.
    """
    is_clean = condition.is_clean
    if not is_clean and clean_top1 is None:
        raise ValueError("clean_top1 is required for a degraded unit")
    skipped: list[dict[str, Any]] = []
    keep = []
    for i, im in enumerate(shard.images):
        reason = None
        if im is None:
            reason = shard.errors[i] if shard.errors and shard.errors[i] else "could not be decoded"
        elif not is_clean and clean_top1[i] < 0:
            reason = "no clean prediction"
        if reason:
            if is_clean or im is not None:  # undecodable images are listed once, by the clean unit
                skipped.append({"image_id": shard.image_ids[i], "condition_id": unit.condition_id, "reason": reason})
        else:
            keep.append(i)
    deg = degradation if degradation is not None or is_clean else condition.build()
    probs_parts: list[torch.Tensor] = []
    rows_kept: list[int] = []
    t_deg = t_fwd = c_deg = c_fwd = 0.0
    c_model = [0.0]
    pos, bs = 0, max(1, int(batch_size))
    with torch.inference_mode():
        while pos < len(keep):
            chunk = keep[pos : pos + bs]
            imgs = [shard.images[i] for i in chunk]
            ids = [shard.image_ids[i] for i in chunk]
            t0, c0 = time.perf_counter(), time.process_time()
            ok_rows, batch = list(chunk), imgs
            if not is_clean:
                try:
                    batch = degrade_images(condition, imgs, ids, seed, deg)
                except WeakspotError:
                    ok_rows, batch = [], []  # isolate the image(s) that fail
                    for i, im, iid in zip(chunk, imgs, ids):
                        try:
                            batch += degrade_images(condition, [im], [iid], seed, deg)
                            ok_rows.append(i)
                        except WeakspotError as exc:
                            skipped.append({"image_id": iid, "condition_id": unit.condition_id,
                                            "reason": f"degradation failed: {exc}"})
            t1, c1 = time.perf_counter(), time.process_time()
            t_deg += t1 - t0
            c_deg += c1 - c0
            if batch:
                try:
                    p = _forward(model, batch, amp, channels_last, c_model)
                except Exception as exc:  # noqa: BLE001
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
    return UnitResult(unit, rows, probs.astype(np.float16) if store_probs else None, skipped, t_deg, t_fwd,
                      c_deg, c_fwd, c_model[0])


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


# ----------------------------------------------------------------------------- local engine
class LoadItems(torch.utils.data.Dataset):
    """Dataset wrapper used by worker processes: never raises for a bad file."""

    def __init__(self, ds, ds_index: Sequence[int], probe: bool = False):
        self.ds, self.ds_index, self.probe = ds, list(ds_index), probe

    def __len__(self) -> int:
        return len(self.ds_index)

    def __getitem__(self, i: int):
        j = self.ds_index[i]
        try:
            img = self.ds.load(j)
            err = None
        except WeakspotError as exc:
            img, err = None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not kill the run
            img, err = None, f"{type(exc).__name__}: {exc}"
        if self.probe:
            digest = hashlib.sha1(self.ds.raw_bytes(j)).hexdigest()
            shape = tuple(img.shape) if img is not None else None
            return i, shape, digest, err
        return i, img, err


def _collate_list(items):
    return items


def _loader(dataset, batches: list[list[int]], workers: int):
    workers = min(workers, len(batches))
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate_list,
        prefetch_factor=2 if workers else None, persistent_workers=False,
    )


def auto_batch_size(model, cap: int = 128) -> int:
    """Images per forward pass that fit in a quarter of the free memory (CPU: MemAvailable,
    CUDA: free device memory), estimating activations as 64× the input size."""
    c = model.preprocess_config.channels
    h, w = model.input_size
    per_image = c * h * w * 4 * 64
    free = None
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
    else:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
        except OSError:
            pass
    if free is None:
        return 32
    return int(max(1, min(cap, free // 4 // per_image)))


def _versions(model_source: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("weakspot", "torch", "torchvision", "numpy", "pyarrow", "pillow", "scikit-image",
                "efficientnet-lite-pytorch", "timm", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class RunSummary:
    out_dir: Path
    n_images: int
    n_conditions: int
    units_total: int
    units_run: int
    seconds: float
    images_evaluated: int
    forward_s: float
    degrade_s: float
    skipped: list[dict[str, Any]]
    resumed: bool
    unknown_degradations: list[str]
    setup_s: float = 0.0
    loop_cpu_s: float = 0.0  # process CPU time of the evaluation loop (this process only)
    forward_cpu_s: float = 0.0
    degrade_cpu_s: float = 0.0
    model_cpu_s: float = 0.0

    def accuracy(self):
        """Top-1 accuracy (labelled images) and agreement with the clean top-1, per condition."""
        store = ResultsStore(self.out_dir)
        return store.sql(
            "select condition_id, count(*) as n, avg(case when label >= 0 then correct1::int end) as top1_acc, "
            "avg((top1 = clean_top1)::int) as agree_clean from predictions group by 1 order by 1"
        )


def _open_data(cfg):
    from weakspot.data import ConcatImageDataset, open_dataset

    parts = [open_dataset(d.root, d.kind, split=d.split, subset=d.subset, names=d.names,
                          per_class=d.per_class, limit=d.limit, seed=cfg.seed, labels=d.labels,
                          class_map=d.class_map) for d in cfg.data_list]
    return parts[0] if len(parts) == 1 else ConcatImageDataset(parts)


def _load_model(cfg):
    from weakspot.models import load_model

    m = cfg.model
    device = m.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(m.name, source=m.source, weights=m.weights, num_classes=m.num_classes,
                       class_names=m.class_names, preprocess=m.preprocess, device=device)
    if m.channels_last:
        model.module.to(memory_format=torch.channels_last)
    return model


def _has_files(ds) -> bool:
    """Whether any part of ``ds`` decodes files (worth worker processes; arrays are not)."""
    from weakspot.data import FileDataset

    if isinstance(ds, FileDataset):
        return True
    return any(_has_files(p) for p in getattr(ds, "parts", [])) or (
        hasattr(ds, "base") and _has_files(ds.base))


def resolve_threads(threads: int | str | None) -> int | None:
    """torch intra-op threads for a run: an int as given; ``"auto"``: 1 when the 1-minute load
    average is at least 75 % of the cores (other processes are busy and extra threads would
    only spin), else ``None`` (torch's default)."""
    if threads in (None, "auto"):
        if threads is None:
            return None
        try:
            busy = os.getloadavg()[0] >= 0.75 * (os.cpu_count() or 1)
        except OSError:
            busy = False
        return 1 if busy else None
    return int(threads)


def open_run_data(cfg):
    """The (concatenated) data set a :class:`RunConfig` names, subsets applied."""
    return _open_data(cfg)


def load_run_model(cfg):
    """The :class:`~weakspot.models.LoadedModel` a :class:`RunConfig` names, on its device."""
    return _load_model(cfg)


def _label_map(ds, model) -> tuple[list[int], dict | None]:
    """Per-item model class indices and the manifest's ``data.label_map`` (folder → index →
    class name; ``None`` without folder data), by :func:`weakspot.data.labels.dataset_labels`."""
    from weakspot.data.labels import dataset_labels, manifest_label_map

    labels, maps = dataset_labels(ds, model.class_names, model.name)
    return labels, manifest_label_map(maps)


def setup_run(cfg, store: ResultsStore, ds, model, conditions: list[Condition], workers: int, console) -> dict:
    """Probe every image (decode, shape, content hash), write classes, images, conditions and
    the manifest. Returns the manifest."""
    n = len(ds)
    batches = [list(range(i, min(n, i + 32))) for i in range(0, n, 32)]
    shapes: list[tuple | None] = [None] * n
    digests = [""] * n
    errors: list[str | None] = [None] * n
    use_workers = workers if _has_files(ds) else 0
    for items in _loader(LoadItems(ds, range(n), probe=True), batches, use_workers):
        for i, shape, digest, err in items:
            shapes[i], digests[i], errors[i] = shape, digest, err
    mapped, label_map = _label_map(ds, model)
    k = model.num_classes
    skipped, valid = [], []
    out_of_range = 0
    for i in range(n):
        lab = mapped[i]
        if errors[i] is not None:
            skipped.append({"image_id": ds.image_ids[i], "path": ds.paths[i], "reason": errors[i]})
        elif lab >= k or lab < -1:
            out_of_range += 1
            skipped.append({"image_id": ds.image_ids[i], "path": ds.paths[i],
                            "reason": f"label {lab} out of range for a model with {k} classes"})
        else:
            valid.append((i, lab))
    labelled = sum(1 for x in ds.labels if x >= 0)
    if labelled and out_of_range > labelled // 2:
        raise DataError(
            f"{out_of_range} of {labelled} labels are out of range for {model.name} ({k} classes): "
            "the data set does not belong to this model; check 'data' and 'model' in the config"
        )
    if not valid:
        raise DataError(f"none of the {n} images could be used; first problem: {skipped[0]['reason'] if skipped else '?'}")
    from weakspot.evaluate.check import data_warnings, print_warnings

    warns = data_warnings([lab for _, lab in valid], model.class_names, [digests[i] for i, _ in valid],
                          [ds.image_ids[i] for i, _ in valid], label_map)
    print_warnings(warns, console)
    store.write_classes(model.class_names)
    store.write_images({
        "image_index": list(range(len(valid))),
        "image_id": [ds.image_ids[i] for i, _ in valid],
        "path": [ds.paths[i] for i, _ in valid],
        "label": [lab for _, lab in valid],
        "height": [shapes[i][1] for i, _ in valid],
        "width": [shapes[i][2] for i, _ in valid],
    })
    _write_conditions(store, conditions)
    from weakspot.data import fingerprint

    manifest = {
        "name": cfg.name,
        "status": "running",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "identity": cfg.identity(),
        "seed": cfg.seed,
        "shard_size": cfg.shard_size,
        "store_probs": cfg.store_probs,
        "versions": _versions(model.source),
        "model": model.describe(),
        "data": {**ds.describe(), "sha256": fingerprint(ds, digests), "n_valid": len(valid),
                 "dataset_index": [i for i, _ in valid], "label_map": label_map, "warnings": warns},
        "order": "decode (native resolution) -> degradation (keyed generator per image) -> model "
                 "preprocessing (resize, crop, normalise) -> forward -> softmax",
        "skipped_inputs": skipped,
    }
    store.write_manifest(manifest)
    return store.manifest()


def _write_conditions(store: ResultsStore, conditions: list[Condition]) -> None:
    rows = [CLEAN_CONDITION.store_row()] + [c.store_row() for c in conditions]
    store.write_conditions({k: [r[k] for r in rows] for k in rows[0]})


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_sweep(
    config,
    out_dir: str | Path,
    *,
    progress: bool = True,
    console=None,
    workers: int | None = None,
    max_units: int | None = None,
) -> RunSummary:
    """Run (or resume) a sweep into ``out_dir`` with the local engine.

    Args:
        config: a :class:`~weakspot.evaluate.config.RunConfig`, a mapping or a config path.
        out_dir: the run directory (created; resumed if it holds the same run).
        progress: show a rich progress bar with ETA (on stderr).
        workers: override ``config.workers`` (data-loading processes).
        max_units: stop after this many units (for tests and benchmarks).
    """
    from weakspot.evaluate.config import as_run_config, expand_conditions

    t_start = time.perf_counter()
    cfg = as_run_config(config)
    workers = cfg.workers if workers is None else workers
    conditions, unknown = expand_conditions(cfg.conditions, skip_unknown=cfg.skip_unknown)
    store = ResultsStore(out_dir)
    lock = lock_run_dir(store.root)  # released when this process ends, however it ends
    try:
        return _run_locked(cfg, store, conditions, unknown, t_start, workers, progress, console, max_units)
    finally:
        lock.close()


def plan_pending(
    cfg, store: ResultsStore, conditions: list[Condition], n_images: int, num_classes: int,
    max_units: int | None = None,
) -> tuple[np.ndarray, list[str], list[Unit]]:
    """Labels, image ids and the units still to do for a set-up run (any engine).

    Refuses (:class:`ConfigError`) a ``store_probs`` run that would write more than 8 GiB.
    """
    if cfg.store_probs:
        n_bytes = n_images * (len(conditions) + 1) * num_classes * 2
        if n_bytes > 8 * 2**30:
            raise ConfigError(
                f"store_probs would write {n_bytes / 2**30:.1f} GiB of probabilities; set store_probs: false "
                "or use fewer images/conditions"
            )
    images_df = store.images()
    ids_all = images_df.image_id.tolist()
    units = plan_units(len(ids_all), [c.condition_id for c in conditions], cfg.shard_size, store.done_units())
    if max_units is not None:
        units = units[:max_units]
    return images_df.label.to_numpy(), ids_all, units


def lock_run_dir(root: Path):
    """An exclusive ``flock`` on ``root/.lock``: a second run on the same directory is refused
    (the kernel drops the lock when the process dies, so a killed run never blocks a resume)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    f = open(root / ".lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise ConfigError(
            f"{root} is being written by another weakspot run ({who}); wait for it to finish or "
            "choose another --out directory"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {platform.node()}")
    f.flush()
    return f


def _run_locked(cfg, store, conditions, unknown, t_start, workers, progress, console, max_units) -> RunSummary:
    out_dir = store.root
    resumed = store.exists()
    remove_stale_temporaries(store.root)
    if resumed:
        old = store.manifest()
        if config_hash(old.get("identity")) != config_hash(cfg.identity()):
            raise ConfigError(
                f"{out_dir} holds a different run (model, data, seed, shard_size or store_probs changed); "
                "choose a new --out directory, or delete the old one to start over"
            )
    model = _load_model(cfg)
    if resumed:
        manifest = old
        cond_ids = set()
        try:
            prior = store.conditions()
            cond_ids = set(prior.condition_id)
        except DataError:
            prior = None
        known = {c.condition_id for c in conditions}
        if prior is not None:
            # keep conditions of the earlier config that are no longer listed (their rows stay valid)
            extra = [r for _, r in prior.iterrows() if r.condition_id not in known and r.condition_id != CLEAN]
        else:
            extra = []
        if not cond_ids >= known | {CLEAN} or extra:
            rows = [CLEAN_CONDITION.store_row()] + [c.store_row() for c in conditions]
            rows += [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.to_dict().items()}
                     for r in extra]
            store.write_conditions({k: [r[k] for r in rows] for k in rows[0]})
        ds = _open_data(cfg)
        ds_index = manifest["data"]["dataset_index"]
        if max(ds_index, default=-1) >= len(ds):
            raise ConfigError(f"the data of {out_dir} changed since the run started; use a new --out directory")
    else:
        ds = _open_data(cfg)
        if progress and console is not None:
            console.print(f"[dim]checking {len(ds)} images…[/]")
        manifest = setup_run(cfg, store, ds, model, conditions, workers, console)
        ds_index = manifest["data"]["dataset_index"]
    labels_all, ids_all, units = plan_pending(cfg, store, conditions, len(ds_index), model.num_classes, max_units)
    from weakspot.evaluate.check import ChanceWatch

    chance_watch = ChanceWatch(labels_all, console)  # warns once if clean top-1 is near chance
    n = len(ids_all)
    by_id = {c.condition_id: c for c in conditions}
    built = {c.condition_id: c.build() for c in conditions}
    batch_size = auto_batch_size(model) if cfg.batch_size == "auto" else int(cfg.batch_size)
    shards = sorted({u.shard for u in units})
    pending: dict[int, list[Unit]] = {s: [] for s in shards}
    for u in units:
        pending[u.shard].append(u)
    batches = [[ds_index[i] for i in range(s * cfg.shard_size, min(n, (s + 1) * cfg.shard_size))] for s in shards]
    loader_workers = workers if _has_files(ds) else 0
    # positions in the loader are dataset indices; map back to image_index
    pos_of = {d: i for i, d in enumerate(ds_index)}
    t_fwd = t_deg = c_fwd = c_deg = c_mod = 0.0
    setup_s = time.perf_counter() - t_start
    cpu_loop0 = time.process_time()
    images_done = 0
    bar = UnitProgress(progress, console, total=sum(u.n for u in units))
    threads_before = torch.get_num_threads()
    threads = resolve_threads(cfg.threads)
    if threads:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()
    try:
        with bar:
            loader = _loader(LoadItems(ds, range(len(ds))), batches, loader_workers) if units else []
            for shard, items in zip(shards, loader):
                idx = np.array([pos_of[i] for i, _, _ in items], dtype=np.int64)
                order = np.argsort(idx, kind="stable")
                idx = idx[order]
                imgs = [items[j][1] for j in order]
                errs = [items[j][2] for j in order]
                sh = ShardImages(idx, [ids_all[i] for i in idx], labels_all[idx], imgs, errs)
                clean_top1 = None
                for u in pending[shard]:
                    cond = CLEAN_CONDITION if u.condition_id == CLEAN else by_id[u.condition_id]
                    if not cond.is_clean and clean_top1 is None:
                        clean_top1 = stored_clean_top1(store, shard, idx)
                    bar.describe(u.condition_id)
                    res = evaluate_unit(model, sh, cond, u, seed=cfg.seed, batch_size=batch_size,
                                        clean_top1=clean_top1, store_probs=cfg.store_probs,
                                        degradation=built.get(u.condition_id), amp=cfg.model.amp,
                                        channels_last=cfg.model.channels_last)
                    write_unit(store, res)
                    if cond.is_clean:
                        clean_top1 = top1_for(res, idx)
                        chance_watch.add(res.rows)
                    t_fwd += res.forward_s
                    t_deg += res.degrade_s
                    c_fwd += res.forward_cpu_s
                    c_deg += res.degrade_cpu_s
                    c_mod += res.model_cpu_s
                    images_done += u.n
                    bar.advance(u.n)
    finally:
        torch.set_num_threads(threads_before)
        seconds = time.perf_counter() - t_start
        loop_cpu = time.process_time() - cpu_loop0
        finish_manifest(store, conditions, unknown, seconds, t_fwd, t_deg, images_done, setup_s, threads_used)
    total = len(plan_units(n, [c.condition_id for c in conditions], cfg.shard_size))
    skipped = store.manifest().get("skipped", [])
    return RunSummary(Path(out_dir), n, len(conditions), total, len(units), seconds, images_done, t_fwd, t_deg,
                      skipped, resumed, unknown, setup_s, loop_cpu, c_fwd, c_deg, c_mod)


def remove_stale_temporaries(root: Path) -> None:
    """Temporary files of a killed earlier session (never renamed, so never part of the store)."""
    for sub in ("predictions", "probs", "skipped"):
        d = Path(root) / sub
        if d.is_dir():
            for f in d.glob("*/.*.tmp"):
                f.unlink(missing_ok=True)


def top1_for(res: UnitResult, idx: np.ndarray) -> np.ndarray:
    out = np.full(len(idx), -1, dtype=np.int64)
    pos = {int(i): j for j, i in enumerate(idx)}
    for ii, t in zip(res.rows["image_index"], res.rows["top1"]):
        out[pos[int(ii)]] = t
    return out


def stored_clean_top1(store: ResultsStore, shard: int, idx: np.ndarray) -> np.ndarray:
    import pyarrow.parquet as pq

    path = store.unit_path(CLEAN, shard)
    out = np.full(len(idx), -1, dtype=np.int64)
    if not path.is_file():
        return out
    t = pq.read_table(path, columns=["image_index", "top1"])
    pos = {int(i): j for j, i in enumerate(idx)}
    for ii, t1 in zip(t.column(0).to_pylist(), t.column(1).to_pylist()):
        if int(ii) in pos:
            out[pos[int(ii)]] = t1
    return out


def finish_manifest(store, conditions, unknown, seconds, t_fwd, t_deg, images_done, setup_s, threads) -> None:
    if not store.exists():
        return
    m = store.manifest()
    unit_skips = []
    base = store.root / "skipped"
    if base.is_dir():
        for f in sorted(base.glob("*/shard-*.json")):
            try:
                unit_skips += json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                pass
    total = len(plan_units(len(store.images()), [c.condition_id for c in conditions], m.get("shard_size", 64)))
    done = len(store.done_units())
    m.pop("schema_version", None)
    sessions = m.get("sessions", [])
    sessions.append({
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3), "images_evaluated": images_done,
        "setup_s": round(setup_s, 3), "forward_s": round(t_fwd, 3), "degrade_s": round(t_deg, 3),
        "images_per_s": round(images_done / seconds, 2) if seconds > 0 else None,
        "device": str(torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"),
        "torch_threads": threads, "pid": os.getpid(),
    })
    m.update({
        "status": "complete" if done >= total else "partial",
        "units_done": done,
        "units_total": total,
        "conditions": [c.condition_id for c in conditions],
        "unknown_degradations_skipped": unknown,
        "skipped": m.get("skipped_inputs", []) + unit_skips,
        "sessions": sessions[-50:],
    })
    store.write_manifest(m)


class UnitProgress:
    """A rich progress bar with ETA over images × conditions (no-op when disabled)."""

    def __init__(self, enabled: bool, console, total: int):
        self.enabled = enabled and total > 0
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.p = Progress(TextColumn("[bold]{task.description:<28}"), BarColumn(bar_width=None),
                              MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                              console=console or Console(stderr=True), transient=False, expand=True)
            self.task = self.p.add_task("evaluating", total=total)

    def __enter__(self):
        if self.enabled:
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self.enabled:
            self.p.update(self.task, description=text[:28])

    def advance(self, n: int) -> None:
        if self.enabled:
            self.p.advance(self.task, n)
