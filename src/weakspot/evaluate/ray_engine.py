"""The Ray engine: the same sweep as :func:`~weakspot.evaluate.engine.run_sweep`, on a Ray cluster.

``weakspot run CONFIG --out DIR --engine ray [--address HOST:PORT]`` or::

    from weakspot.evaluate.ray_engine import run_sweep_ray

    summary = run_sweep_ray("sweep.yaml", "runs/big", address="head-node:6379")

How the work is split and who does what:

- The work is the same list of *units* as the local engine (:func:`plan_units`: one
  ``(condition_id, shard)`` each, the clean unit first in every shard). Units already in
  the store are not planned again, so a cluster run resumes exactly like a local one.
- Each Ray actor (:class:`_UnitWorker`) loads the model **once** (on its GPU where the
  actor has one), opens the data set itself, and per task decodes the shard's images,
  applies the keyed degradation and runs the forward pass (:func:`evaluate_unit`, the
  same function the local engine calls). It keeps the last decoded shards and their clean
  top-1 in memory, and the driver sends a shard's units to the actor that already holds
  it, so a shard is decoded about once however many conditions it has. A Ray task carries
  several units of one shard, as many as make about half a second of work (measured from
  the first results), so Ray's fixed cost per task (a few ms) stays around 1 %.
- The **driver only schedules and writes**: it never loads the model nor evaluates an
  image. Finished units come back as rows (+ float16 probabilities) and the driver writes
  each with :func:`write_unit` (temporary file, fsync, rename). We chose driver-side writes
  over actors writing their own files because then the run directory only has to exist on
  the driver's machine (no shared file system needed for results, only for the input
  images), there is a single writer, and a unit is either fully in the store or absent.
  A unit that is retried (actor killed mid-task, Ray retries it on the restarted actor) or
  recomputed on resume replaces its own file: never a duplicate row.
- Fault tolerance is Ray's: actors restart (``max_restarts``) and their in-flight tasks
  are retried (``max_task_retries``); the killed task's results never reached the driver,
  so nothing is written twice and nothing is lost. If the driver itself dies, its actors
  die with it; rerunning the same command resumes from the unit files.
- Results equal the local engine's: sampling is keyed per (seed, image_id, condition_id),
  the same batch size is used, and rows are built by the same code. Probabilities agree to
  float tolerance on the same hardware (thread counts may change the last bits).

The driver still does the one-off set-up a new run needs (listing and probing every input
image to write ``images.parquet``, as the local engine does); a resumed run skips it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from weakspot.errors import ConfigError, WeakspotError
from weakspot.evaluate.store import CLEAN, ResultsStore

__all__ = [
    "RayNotInstalledError",
    "RayConnectionError",
    "import_ray",
    "run_sweep_ray",
    "RayEngineInfo",
    "actor_pid",
]

INSTALL_HINT = "pip install 'weakspot[ray]'"
TASK_TARGET_S = 0.5  # seconds of work per Ray task once unit times are known


class RayNotInstalledError(WeakspotError):
    """``--engine ray`` was asked for but Ray cannot be imported."""


class RayConnectionError(WeakspotError):
    """The Ray cluster named by ``--address`` cannot be reached."""


def import_ray():
    """Import ray or raise :class:`RayNotInstalledError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            f"the Ray engine needs Ray, which is not installed ({exc}); install it with "
            f"{INSTALL_HINT}, or leave out --engine ray to use the local engine"
        ) from None
    return ray


# ----------------------------------------------------------------------------- connecting
_ADDRESS_HELP = (
    "start a cluster with 'ray start --head' and pass the address it prints (HOST:6379), "
    "pass 'auto' to join the cluster this machine is part of, or leave out --address to start a local one"
)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (Ray itself retries a wrong address for minutes) with a clear message."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RayConnectionError(
            f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379); {_ADDRESS_HELP}"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayConnectionError(
            f"cannot reach a Ray cluster at {address} ({exc}); {_ADDRESS_HELP}"
        ) from None


def _connect(ray, address: str | None) -> bool:
    """Connect to (or start) a cluster. Returns whether this call started the connection
    (and so should shut it down)."""
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    if ray.is_initialized():
        return False
    import logging

    kw: dict[str, Any] = {}
    if not (address or "").startswith("ray://"):  # Ray Client takes only the address
        kw["logging_level"] = logging.WARNING
        if address is None and not os.environ.get("RAY_ADDRESS"):
            kw["include_dashboard"] = False  # a local cluster just for this run
    try:
        ray.init(address=address, **kw)
    except ConnectionError as exc:
        raise RayConnectionError(
            f"cannot connect to a Ray cluster at {address or 'RAY_ADDRESS'}: {exc}; {_ADDRESS_HELP}"
        ) from None
    return True


def _cluster_address(ray, address: str | None) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # Ray Client sessions do not expose it
        return address or "local"


# ----------------------------------------------------------------------------- the actor
class _UnitWorker:
    """One Ray actor: the model loaded once, the data set opened once, units evaluated on demand.

    Wrapped with ``ray.remote`` in :func:`_actor_class` (so that importing this module
    does not need Ray)."""

    CACHE_SHARDS = 3

    def __init__(self, cfg_json: dict, device: str, threads: int | None):
        import torch

        from weakspot.runtime import keep_freed_memory

        self.error: str | None = None
        self.device = device
        keep_freed_memory()  # a long-lived worker process: reuse freed pages (as the CLI does)
        if threads:
            torch.set_num_threads(threads)
        try:
            from weakspot.evaluate.config import expand_conditions, parse_config
            from weakspot.evaluate.engine import auto_batch_size, load_run_model, open_run_data

            cfg = parse_config(cfg_json)
            cfg.model.device = device
            self.cfg = cfg
            self.model = load_run_model(cfg)
            self.ds = open_run_data(cfg)
            conditions, _ = expand_conditions(cfg.conditions, skip_unknown=cfg.skip_unknown)
            self.by_id = {c.condition_id: c for c in conditions}
            self.built = {c.condition_id: c.build() for c in conditions}
            self.batch_size = auto_batch_size(self.model) if cfg.batch_size == "auto" else int(cfg.batch_size)
        except WeakspotError as exc:  # reported by info(); the driver raises it as a user error
            self.error = f"{type(exc).__name__}: {exc}"
        self.cache: OrderedDict[int, list] = OrderedDict()  # shard -> [ShardImages, clean_top1 | None]

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict[str, Any]:
        import torch

        out = {
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
            "error": self.error,
        }
        if self.error is None:
            m = self.model
            out.update(
                model={
                    "name": m.name,
                    "source": m.source,
                    "class_names": list(m.class_names),
                    "describe": m.describe(),
                },
                batch_size=self.batch_size,
                n_data=len(self.ds),
            )
            if self.device.startswith("cuda"):
                out["device"] = f"{self.device} ({torch.cuda.get_device_name()})"
        return out

    def _shard(self, unit, ds_idx, ids, labels):
        from weakspot.evaluate.engine import LoadItems, ShardImages

        hit = self.cache.get(unit.shard)
        if hit is not None:
            self.cache.move_to_end(unit.shard)
            return hit
        loader = LoadItems(self.ds, ds_idx)
        imgs, errs = [], []
        for k in range(len(ds_idx)):
            _, img, err = loader[k]
            imgs.append(img)
            errs.append(err)
        sh = ShardImages(
            np.arange(unit.start, unit.stop, dtype=np.int64),
            list(ids),
            np.asarray(labels, dtype=np.int64),
            imgs,
            errs,
        )
        entry = [sh, None]
        self.cache[unit.shard] = entry
        while len(self.cache) > self.CACHE_SHARDS:
            self.cache.popitem(last=False)
        return entry

    def _evaluate(self, sh, cond, unit, clean_top1):
        from weakspot.evaluate.engine import evaluate_unit

        c = self.cfg
        return evaluate_unit(
            self.model,
            sh,
            cond,
            unit,
            seed=c.seed,
            batch_size=self.batch_size,
            clean_top1=clean_top1,
            store_probs=c.store_probs,
            degradation=self.built.get(unit.condition_id),
            amp=c.model.amp,
            channels_last=c.model.channels_last,
        )

    def run(self, units, ds_idx, ids, labels, clean_top1):
        """Evaluate units of one shard (in order). ``clean_top1`` (per shard row, ``-1``
        unknown) comes from the driver when the clean unit is already in the store;
        otherwise this actor uses (or computes) its own clean predictions of the shard: the
        same values. Returns ``([UnitResult…], pid, seconds busy)``."""
        from weakspot.evaluate.conditions import CLEAN_CONDITION
        from weakspot.evaluate.engine import Unit, top1_for

        if self.error is not None:
            raise ConfigError(self.error)
        t0 = time.perf_counter()
        out = []
        for unit in units:
            entry = self._shard(unit, ds_idx, ids, labels)
            sh = entry[0]
            if unit.condition_id == CLEAN:
                res = self._evaluate(sh, CLEAN_CONDITION, unit, None)
                entry[1] = top1_for(res, sh.image_index)
            else:
                ct = clean_top1
                if ct is None:
                    if entry[1] is None:
                        clean_unit = Unit(CLEAN, unit.shard, unit.start, unit.stop)
                        entry[1] = top1_for(
                            self._evaluate(sh, CLEAN_CONDITION, clean_unit, None), sh.image_index
                        )
                    ct = entry[1]
                res = self._evaluate(sh, self.by_id[unit.condition_id], unit, np.asarray(ct))
            out.append(res)
        return out, os.getpid(), time.perf_counter() - t0


def actor_pid(handle) -> int:
    """The OS process id of a running actor (answered even while it evaluates a unit)."""
    ray = import_ray()
    return ray.get(handle.pid.options(concurrency_group="ctl").remote())


_ACTOR_CLASS = None


def _actor_class(ray):
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        # 'ctl' answers pid()/info() while a unit is being evaluated (tests kill actors by pid)
        cls = ray.remote(concurrency_groups={"ctl": 1})(_UnitWorker)
        _ACTOR_CLASS = cls
    return _ACTOR_CLASS


# ----------------------------------------------------------------------------- the driver
@dataclass
class RayEngineInfo:
    """What the Ray engine did, recorded in the manifest's session entry."""

    address: str
    actors: list[dict[str, Any]]
    num_gpus_per_actor: float
    num_cpus_per_actor: float
    tasks: int = 0
    actor_pids_seen: int = 0
    worker_busy_s: float = 0.0


def _plan_resources(ray, rcfg, model_device: str) -> tuple[int, float, float]:
    """(actors, num_gpus per actor, num_cpus per actor) from the config and the cluster."""
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    cpus = float(res.get("CPU", 0))
    num_gpus = rcfg.num_gpus if rcfg.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    if num_gpus > 0 and gpus < num_gpus:
        raise ConfigError(
            f"ray.num_gpus is {num_gpus} per actor but the cluster has {gpus:g} GPUs; add GPU nodes "
            "or set 'ray: {num_gpus: 0}' to run on CPUs"
        )
    if num_gpus == 0 and model_device.startswith("cuda"):
        raise ConfigError(
            f"model.device is {model_device!r} but the Ray cluster has no GPU; set model.device: cpu "
            "or join GPU nodes to the cluster"
        )
    num_cpus = float(rcfg.num_cpus)
    if cpus < num_cpus:
        raise ConfigError(f"ray.num_cpus is {num_cpus:g} per actor but the cluster has {cpus:g} CPUs")
    if rcfg.actors is not None:
        n = rcfg.actors
    elif num_gpus > 0:
        n = max(1, int(gpus // num_gpus))
    else:
        n = max(1, int(cpus // num_cpus))
    return n, num_gpus, num_cpus


class _Scheduler:
    """Hands units to actors: a shard stays with the actor that decoded it (cache hits),
    an idle actor takes a new shard, and when none is left it helps another actor's shard."""

    def __init__(self, units, n_actors: int):
        self.by_shard: OrderedDict[int, deque] = OrderedDict()
        for u in units:
            self.by_shard.setdefault(u.shard, deque()).append(u)
        self.fresh = deque(self.by_shard)  # shards nobody holds yet
        self.owned: list[list[int]] = [[] for _ in range(n_actors)]

    def __bool__(self) -> bool:
        return any(self.by_shard.values())

    def next_for(self, actor: int, k: int = 1) -> list:
        """Up to ``k`` units of one shard for ``actor`` (empty when nothing is left)."""
        own = self.owned[actor]
        while own and not self.by_shard[own[0]]:
            own.pop(0)
        if not own:
            while self.fresh:
                s = self.fresh.popleft()
                if self.by_shard[s]:
                    own.append(s)
                    break
        if own:
            q = self.by_shard[own[0]]
            return [q.popleft() for _ in range(min(k, len(q)))]
        # help the shard with most units left, from its end (its clean unit is done by then)
        busiest = max(
            (s for s, q in self.by_shard.items() if q), key=lambda s: len(self.by_shard[s]), default=None
        )
        if busiest is None:
            return []
        q = self.by_shard[busiest]
        take = [q.pop() for _ in range(min(k, max(1, len(q) // 2)))]
        return take[::-1]


def run_sweep_ray(
    config,
    out_dir: str | Path,
    *,
    address: str | None = None,
    actors: int | None = None,
    progress: bool = True,
    console=None,
    max_units: int | None = None,
    on_actors: Callable[[list], None] | None = None,
):
    """Run (or resume) a sweep into ``out_dir`` on a Ray cluster; same store, same rows as
    :func:`~weakspot.evaluate.engine.run_sweep`.

    Args:
        config: a :class:`~weakspot.evaluate.config.RunConfig`, a mapping or a config path.
        out_dir: the run directory, on the driver's machine (created; resumed if it holds
            the same run).
        address: the cluster (``HOST:PORT`` of the head, ``ray://HOST:10001``, or ``auto``);
            ``None`` uses ``RAY_ADDRESS`` or starts a local cluster. An already connected
            session (``ray.init`` called before) is used as it is.
        actors: override ``ray.actors`` of the config (evaluation actors, each with the model).
        progress: a progress bar with ETA on stderr.
        max_units: stop after this many units (tests and benchmarks).
        on_actors: called with the actor handles once they are up (tests use it to kill one).

    Returns:
        :class:`~weakspot.evaluate.engine.RunSummary`; the manifest's last session has
        ``engine: ray`` with the actors (pid, node, device) and how many tasks ran.

    Raises:
        RayNotInstalledError: Ray is not installed (``pip install 'weakspot[ray]'``).
        RayConnectionError: ``address`` cannot be reached.
        ConfigError / DataError: as the local engine (bad config, a different run in ``out_dir``…).
    """
    import_ray()
    from weakspot.evaluate.config import as_run_config
    from weakspot.evaluate.run import lock_run_dir, prepare_run_dir

    t_start = time.perf_counter()
    cfg = as_run_config(config)
    if address not in (None, "auto", "local"):
        _check_reachable(address)  # before anything is written
    lock = lock_run_dir(prepare_run_dir(out_dir))  # one writer per run directory, local or Ray
    try:
        return _run_ray(
            cfg,
            Path(out_dir),
            t_start,
            address=address,
            actors=actors,
            progress=progress,
            console=console,
            max_units=max_units,
            on_actors=on_actors,
        )
    finally:
        lock.close()


def _run_ray(cfg, out_dir: Path, t_start: float, *, address, actors, progress, console, max_units, on_actors):
    ray = import_ray()
    from weakspot.evaluate.config import expand_conditions
    from weakspot.evaluate.engine import RunSummary
    from weakspot.evaluate.loading import open_run_data
    from weakspot.evaluate.progress import UnitProgress
    from weakspot.evaluate.run import Run, plan_pending, remove_stale_temporaries, stored_clean_top1
    from weakspot.evaluate.unit import plan_units, top1_for, write_unit

    rcfg = cfg.ray
    conditions, unknown = expand_conditions(cfg.conditions, skip_unknown=cfg.skip_unknown)
    store = ResultsStore(out_dir)
    resumed = store.exists()
    if resumed:
        Run.open(out_dir).check_identity(cfg)
    remove_stale_temporaries(store.root)

    own_connection = _connect(ray, address)
    handles: list = []
    info = None
    try:
        n_actors, num_gpus, num_cpus = _plan_resources(ray, rcfg, cfg.model.device)
        if actors is not None:
            n_actors = int(actors)
        device = "cuda" if num_gpus > 0 else "cpu"
        # torch threads per actor: the config's number, else one per CPU the actor holds
        threads = cfg.threads if isinstance(cfg.threads, int) else max(1, int(num_cpus))

        def start_actors() -> list[dict]:
            """Start the actors (each loads the model and opens the data) and wait until they are up."""
            cls = _actor_class(ray)
            opts = dict(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                max_restarts=rcfg.max_restarts,
                max_task_retries=rcfg.max_task_retries,
            )
            if progress and console is not None:
                console.print(
                    f"[dim]starting {n_actors} Ray actor(s) ({device}, {num_cpus:g} CPU"
                    f"{f', {num_gpus:g} GPU' if num_gpus else ''} each)…[/]"
                )
            cfg_json = cfg.model_dump(mode="json")
            handles.extend(cls.options(**opts).remote(cfg_json, device, threads) for _ in range(n_actors))
            infos = ray.get([h.info.options(concurrency_group="ctl").remote() for h in handles])
            bad = [i["error"] for i in infos if i["error"]]
            if bad:
                raise ConfigError(f"the Ray actors could not start: {bad[0]}")
            if on_actors is not None:
                on_actors(list(handles))
            return infos

        # ------------------------------------------------ set-up / resume (as the local engine)
        ds = open_run_data(cfg)
        infos: list[dict] = []
        repaired: list[str] = []
        if resumed:  # no model needed: actors start only if units are left
            run = Run.resume(cfg, out_dir, conditions, len(ds))
            repaired = run.repair(console)
            num_classes = len(run.classes())
        else:  # the driver probes the images; the model's names/classes come from an actor
            infos = start_actors()
            meta = infos[0]["model"]
            model_meta = SimpleNamespace(
                name=meta["name"],
                source=meta["source"],
                class_names=meta["class_names"],
                num_classes=len(meta["class_names"]),
                describe=lambda: meta["describe"],
            )
            if progress and console is not None:
                console.print(f"[dim]checking {len(ds)} images…[/]")
            run = Run.create(cfg, out_dir, ds, model_meta, conditions, cfg.workers, console)
            num_classes = model_meta.num_classes
        ds_index = run.manifest.data.dataset_index
        labels_all, ids_all, units = plan_pending(
            cfg, store, conditions, len(ds_index), num_classes, max_units
        )
        n = len(ids_all)
        if units and not infos:
            infos = start_actors()
        info = RayEngineInfo(
            address=_cluster_address(ray, address),
            actors=[{k: i[k] for k in ("pid", "node", "device", "torch_threads")} for i in infos],
            num_gpus_per_actor=num_gpus,
            num_cpus_per_actor=num_cpus,
        )
    except BaseException:
        _kill(ray, handles)
        if own_connection:
            ray.shutdown()
        raise

    # ------------------------------------------------------------ schedule and write
    setup_s = time.perf_counter() - t_start
    sched = _Scheduler(units, len(handles))
    clean_known: dict[int, np.ndarray] = {}
    clean_done = {s for (c, s) in store.done_units() if c == CLEAN}
    in_flight: dict[Any, tuple[int, Any]] = {}
    load = [0] * len(handles)
    depth = max(1, rcfg.tasks_per_actor)
    pids: set[int] = set()
    t_fwd = t_deg = 0.0
    images_done = done_units = 0
    bar = UnitProgress(progress, console, total=sum(u.n for u in units))

    def units_per_task() -> int:
        """Enough units per task that Ray's fixed per-task cost (a few ms) stays ~1 % of the work."""
        if rcfg.units_per_task is not None:
            return rcfg.units_per_task
        if info.tasks == 0 or done_units == 0:
            return 1
        per_unit = info.worker_busy_s / done_units
        return int(min(32, max(1, np.ceil(TASK_TARGET_S / max(per_unit, 1e-6)))))

    def submit(a: int) -> bool:
        batch = sched.next_for(a, units_per_task())
        if not batch:
            return False
        u = batch[0]
        ct = None
        if all(v.condition_id != CLEAN for v in batch):
            if u.shard not in clean_known and u.shard in clean_done:
                clean_known[u.shard] = stored_clean_top1(store, u.shard, np.arange(u.start, u.stop))
            ct = clean_known.get(u.shard)
        ref = handles[a].run.remote(
            batch,
            ds_index[u.start : u.stop],
            ids_all[u.start : u.stop],
            labels_all[u.start : u.stop].tolist(),
            None if ct is None else ct.tolist(),
        )
        in_flight[ref] = (a, batch)
        load[a] += 1
        return True

    try:
        with bar:
            for _ in range(depth):
                for a in range(len(handles)):
                    submit(a)
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    a, batch = in_flight.pop(ref)
                    load[a] -= 1
                    try:
                        results, pid, busy = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, WeakspotError):
                            raise cause from None
                        raise
                    except ray.exceptions.RayActorError as exc:
                        raise WeakspotError(
                            f"a Ray actor died more than ray.max_restarts={rcfg.max_restarts} times "
                            f"({exc.__class__.__name__}); finished units are kept: rerun the same command "
                            "to resume, and check the actor logs (e.g. out of memory)"
                        ) from None
                    for u, res in zip(batch, results, strict=True):
                        write_unit(store, res)
                        if u.condition_id == CLEAN:
                            clean_known[u.shard] = top1_for(res, np.arange(u.start, u.stop))
                            clean_done.add(u.shard)
                        t_fwd += res.forward_s
                        t_deg += res.degrade_s
                        images_done += u.n
                        done_units += 1
                        bar.describe(u.condition_id)
                        bar.advance(u.n)
                    pids.add(pid)
                    info.tasks += 1
                    info.worker_busy_s += busy
                    while load[a] < depth and submit(a):
                        pass
    finally:
        _kill(ray, handles)
        if own_connection:
            ray.shutdown()
        seconds = time.perf_counter() - t_start
        run.finish(
            conditions,
            unknown,
            seconds,
            t_fwd,
            t_deg,
            images_done,
            setup_s,
            info.actors[0]["torch_threads"] if info is not None and info.actors else None,
        )
        if info is not None:
            info.actor_pids_seen = len(pids)
            _record_session(store, info)
    total = len(plan_units(n, [c.condition_id for c in conditions], cfg.shard_size))
    skipped = store.manifest().get("skipped", [])
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
        skipped,
        resumed,
        unknown,
        setup_s,
        repaired=repaired,
    )


def _kill(ray, handles) -> None:
    for h in handles:
        with contextlib.suppress(Exception):  # already dead
            ray.kill(h, no_restart=True)


def _record_session(store: ResultsStore, info: RayEngineInfo) -> None:
    """Mark the session ``finish_manifest`` just appended as a Ray session."""
    if not store.exists():
        return
    m = store.manifest()
    sessions = m.get("sessions") or []
    if not sessions:
        return
    sessions[-1].update(
        engine="ray",
        device=", ".join(sorted({a["device"] for a in info.actors})) or "none (nothing left to do)",
        torch_threads=max((a["torch_threads"] for a in info.actors), default=0),
        ray={
            "address": info.address,
            "actors": info.actors,
            "num_gpus_per_actor": info.num_gpus_per_actor,
            "num_cpus_per_actor": info.num_cpus_per_actor,
            "tasks": info.tasks,
            "actor_processes_seen": info.actor_pids_seen,
            "worker_busy_s": round(info.worker_busy_s, 3),
        },
    )
    m.pop("schema_version", None)
    store.write_manifest(m)
