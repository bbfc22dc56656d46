"""The local engine: a scheduler over a :class:`~weakspot.evaluate.run.Run`.

:func:`run_sweep` opens (or creates) the run, repairs damaged units, then walks the
pending shards in order: it loads each shard's images once in worker processes,
evaluates the clean unit first and then every pending condition on the same decoded
images (:func:`~weakspot.evaluate.unit.evaluate_unit`), and writes each finished unit
atomically. A run killed at any moment resumes from the finished units; nothing is
duplicated.

The pieces live in their own modules: :mod:`~weakspot.evaluate.unit` (the pure unit
evaluation), :mod:`~weakspot.evaluate.run` (the run directory and its life cycle),
:mod:`~weakspot.evaluate.loading` (model, data, image decoding) and
:mod:`~weakspot.evaluate.progress` (the progress bar). Their names are re-exported here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakspot.evaluate.conditions import CLEAN_CONDITION
from weakspot.evaluate.loading import LoadItems, has_files, image_loader, load_run_model, open_run_data
from weakspot.evaluate.progress import UnitProgress
from weakspot.evaluate.run import (
    Run,
    _label_map,  # noqa: F401 - re-exported (the run's pieces used to live here)
    _write_conditions,  # noqa: F401 - re-exported
    config_hash,
    finish_manifest,
    lock_run_dir,
    plan_pending,
    prepare_run_dir,
    remove_stale_temporaries,
    setup_run,
    stored_clean_top1,
)
from weakspot.evaluate.store import CLEAN, ResultsStore
from weakspot.evaluate.unit import (
    ShardImages,
    Unit,
    UnitResult,
    evaluate_unit,
    plan_units,
    rows_from_probs,  # noqa: F401 - re-exported
    top1_for,
    write_unit,
)

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

# the former private names (kept for callers of the single-module engine)
_loader = image_loader
_has_files = has_files
_open_data = open_run_data
_load_model = load_run_model


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
    repaired: list[str] = field(default_factory=list)  # damaged units found and recomputed

    def accuracy(self):
        """Top-1 accuracy (labelled images) and agreement with the clean top-1, per condition."""
        store = ResultsStore(self.out_dir)
        return store.sql(
            "select condition_id, count(*) as n, avg(case when label >= 0 then correct1::int end) as top1_acc, "
            "avg((top1 = clean_top1)::int) as agree_clean from predictions group by 1 order by 1"
        )


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
    store = ResultsStore(prepare_run_dir(out_dir))
    lock = lock_run_dir(store.root)  # released when this process ends, however it ends
    try:
        return _run_locked(cfg, store, conditions, unknown, t_start, workers, progress, console, max_units)
    finally:
        lock.close()


def _run_locked(
    cfg, store, conditions, unknown, t_start, workers, progress, console, max_units
) -> RunSummary:
    out_dir = store.root
    resumed = store.exists()
    remove_stale_temporaries(store.root)
    if resumed:
        Run.open(out_dir).check_identity(cfg)  # before the model is loaded
    model = load_run_model(cfg)
    ds = open_run_data(cfg)
    repaired: list[str] = []
    if resumed:
        run = Run.resume(cfg, out_dir, conditions, len(ds))
        repaired = run.repair(console)
    else:
        if progress and console is not None:
            console.print(f"[dim]checking {len(ds)} images…[/]")
        run = Run.create(cfg, out_dir, ds, model, conditions, workers, console)
    ds_index = run.manifest.data.dataset_index
    labels_all, ids_all, units = plan_pending(
        cfg, store, conditions, len(ds_index), model.num_classes, max_units
    )
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
    batches = [
        [ds_index[i] for i in range(s * cfg.shard_size, min(n, (s + 1) * cfg.shard_size))] for s in shards
    ]
    loader_workers = workers if has_files(ds) else 0
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
            loader = image_loader(LoadItems(ds, range(len(ds))), batches, loader_workers) if units else []
            for shard, items in zip(shards, loader, strict=True):
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
                    res = evaluate_unit(
                        model,
                        sh,
                        cond,
                        u,
                        seed=cfg.seed,
                        batch_size=batch_size,
                        clean_top1=clean_top1,
                        store_probs=cfg.store_probs,
                        degradation=built.get(u.condition_id),
                        amp=cfg.model.amp,
                        channels_last=cfg.model.channels_last,
                    )
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
        run.finish(conditions, unknown, seconds, t_fwd, t_deg, images_done, setup_s, threads_used)
    total = len(plan_units(n, [c.condition_id for c in conditions], cfg.shard_size))
    return RunSummary(
        Path(out_dir),
        n,
        len(conditions),
        total,
        len(units),
        seconds,
        images_done,
        t_fwd,
        t_deg,
        run.manifest.skipped,
        resumed,
        unknown,
        setup_s,
        loop_cpu,
        c_fwd,
        c_deg,
        c_mod,
        repaired,
    )
