"""A run directory as one object: :class:`Run`, with a typed :class:`RunManifest`.

Everything that re-opens a run — the engines (resume), the report (example images),
adaptive breaking points, perception analysis, fixes — goes through :class:`Run`::

    run = Run.open("runs/mnist")  # DataError if it is not a run directory
    run.manifest.seed, run.config  # typed manifest, the RunConfig it ran
    run.conditions()  # list[Condition], clean first
    model = run.load_model()  # the LoadedModel the run evaluated
    data = run.open_data()  # the evaluated images, in store order
    imgs = run.degraded_images("gaussian_blur.sigma_px=2", [0, 5, 7])  # exactly as evaluated

The run's life cycle lives here too: :meth:`Run.create` (probe the data, write images,
conditions and manifest), :meth:`Run.resume` (same identity, conditions kept), the
integrity check (:meth:`Run.repair`: damaged units are deleted and so recomputed),
and :meth:`Run.finish` (status, sessions). Engines (:func:`~weakspot.evaluate.engine.run_sweep`,
:func:`~weakspot.evaluate.ray_engine.run_sweep_ray`) only schedule units over it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from weakspot.errors import ConfigError, DataError
from weakspot.evaluate.conditions import CLEAN_CONDITION, Condition, Step, degrade_images
from weakspot.evaluate.config import RunConfig
from weakspot.evaluate.loading import LoadItems, has_files, image_loader, load_run_model, open_run_data
from weakspot.evaluate.store import CLEAN, SCHEMA_VERSION, ResultsStore
from weakspot.evaluate.unit import Unit, plan_units

__all__ = [
    "Run",
    "RunManifest",
    "RunDataInfo",
    "RunImages",
    "prepare_run_dir",
    "check_run_dir_name",
    "lock_run_dir",
    "setup_run",
    "finish_manifest",
    "plan_pending",
    "config_hash",
    "remove_stale_temporaries",
    "stored_clean_top1",
]


# ----------------------------------------------------------------------------- the manifest
class RunDataInfo(BaseModel):
    """``manifest.json``'s ``data``: the data sets' description plus what the run kept."""

    model_config = ConfigDict(extra="allow")
    sha256: str | None = None  # content hash of every probed image
    n_valid: int | None = None  # images evaluated (rows of images.parquet)
    dataset_index: list[int] = Field(default_factory=list)  # image_index -> index in the opened data


class RunManifest(BaseModel):
    """The typed ``manifest.json`` of a run. Unknown fields are kept; fields missing from
    older manifests take the defaults below (``config`` is ``None`` if it no longer validates)."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = 1
    name: str | None = None
    status: str = "running"  # running | partial | complete
    created: str | None = None
    config: RunConfig | None = None
    identity: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    shard_size: int = 64
    store_probs: bool = False
    versions: dict[str, str] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)  # LoadedModel.describe()
    data: RunDataInfo = Field(default_factory=RunDataInfo)
    order: str | None = None
    skipped_inputs: list[dict[str, Any]] = Field(default_factory=list)  # found at set-up
    skipped: list[dict[str, Any]] = Field(default_factory=list)  # set-up + every unit's skips
    units_done: int | None = None
    units_total: int | None = None
    conditions: list[str] = Field(default_factory=list)
    unknown_degradations_skipped: list[str] = Field(default_factory=list)
    sessions: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("config", mode="before")
    @classmethod
    def _tolerant_config(cls, v):
        if isinstance(v, dict):
            try:
                return RunConfig.model_validate(v)
            except ValidationError:
                return None  # an older config schema: the run stays readable, not re-runnable
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, v):
        return v if isinstance(v, (dict, RunDataInfo)) else {}

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"schema_version"})


# ----------------------------------------------------------------------------- the run's images
class RunImages:
    """The images a run evaluated, in store order: item ``i`` is ``image_index`` ``i``.

    Duck-types an :class:`~weakspot.data.ImageDataset`: ``len``, ``image_ids``, ``labels``
    (the run's labels, already mapped to the model's classes), ``load(i)`` → ``(C, H, W)``
    float in [0, 1] at native resolution, ``ds[i]`` → ``(image, label)``.
    """

    def __init__(self, ds, dataset_index: Sequence[int], image_ids: list[str], labels: list[int]):
        self.ds, self.dataset_index = ds, list(dataset_index)
        self.image_ids, self.labels = image_ids, labels

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, i: int) -> torch.Tensor:
        return self.ds.load(self.dataset_index[i])

    def __getitem__(self, i: int):
        return self.load(i), self.labels[i]


# ----------------------------------------------------------------------------- Run
class Run:
    """A run directory: its store, typed manifest, conditions, model and data.

    Open an existing one with :meth:`Run.open`; engines create one with :meth:`Run.create`.
    """

    def __init__(self, root: str | Path, manifest: RunManifest | None = None):
        self.root = Path(root)
        self.store = ResultsStore(self.root)
        self._manifest = manifest
        self._data: RunImages | None = None
        self._conditions: dict[str, Condition] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Open the run in ``path``; :class:`DataError` if it is not a run directory."""
        run = cls(path)
        run.reload()
        return run

    def reload(self) -> RunManifest:
        """Re-read ``manifest.json`` (an engine may have updated it)."""
        if not self.store.manifest_path.is_file():
            what = (
                "does not exist"
                if not self.root.exists()
                else "is not a weakspot run directory (no manifest.json)"
            )
            raise DataError(
                f"{self.root} {what}; create the run with 'weakspot run CONFIG --out {self.root}'"
            )
        raw = self.store.manifest()
        if not isinstance(raw, dict):
            raise DataError(
                f"{self.store.manifest_path} is not a run manifest; run 'weakspot run CONFIG --out "
                f"{self.root}' into a new directory"
            )
        self._manifest = RunManifest.model_validate(raw)
        return self._manifest

    @property
    def manifest(self) -> RunManifest:
        return self._manifest if self._manifest is not None else self.reload()

    @property
    def config(self) -> RunConfig:
        """The :class:`RunConfig` the run was made with."""
        cfg = self.manifest.config
        if cfg is None:
            raise DataError(
                f"{self.store.manifest_path} has no usable run config (written by an older weakspot?); "
                "rerun 'weakspot run CONFIG --out DIR' into a new directory"
            )
        return cfg

    @property
    def seed(self) -> int:
        return int(self.manifest.seed)

    @property
    def shard_size(self) -> int:
        return int(self.manifest.shard_size)

    def images(self):
        """``images.parquet`` as a DataFrame: image_index, image_id, path, label, height, width."""
        return self.store.images()

    def classes(self) -> list[str]:
        return self.store.classes()

    # ------------------------------------------------------------------ conditions
    def conditions(self) -> list[Condition]:
        """Every condition of the run (``conditions.parquet``), the clean one first."""
        if self._conditions is None:
            import pyarrow.parquet as pq

            self.store._require(self.root / "conditions.parquet")
            out: dict[str, Condition] = {CLEAN: CLEAN_CONDITION}
            for r in pq.read_table(self.root / "conditions.parquet").to_pylist():
                if r["condition_id"] != CLEAN:
                    out[r["condition_id"]] = _condition_from_row(r)
            self._conditions = out
        return list(self._conditions.values())

    def condition(self, condition_id: str) -> Condition:
        """One condition by id; :class:`DataError` naming the known ids if absent."""
        self.conditions()
        try:
            return self._conditions[condition_id]  # type: ignore[index]
        except KeyError:
            known = ", ".join(list(self._conditions)[:8])  # type: ignore[arg-type]
            raise DataError(f"run {self.root} has no condition '{condition_id}'; it has {known}…") from None

    # ------------------------------------------------------------------ model and data
    def load_model(self, device: str | None = None):
        """The :class:`~weakspot.models.LoadedModel` the run evaluated (its config's model), on
        ``device`` (default: the config's device)."""
        return load_run_model(self.config, device)

    def open_data(self) -> RunImages:
        """The evaluated images in store order (``RunImages[i]`` is ``image_index`` ``i``),
        re-opened from the run config's data sources. :class:`DataError` if they changed."""
        if self._data is not None:
            return self._data
        ds = open_run_data(self.config)
        imgs = self.images()
        ids = [str(i) for i in imgs.image_id]
        index = list(self.manifest.data.dataset_index)
        if len(index) != len(ids):  # an older manifest: find the images by id
            pos = {str(iid): j for j, iid in enumerate(ds.image_ids)}
            index = [pos.get(i, -1) for i in ids]
        bad = [k for k, j in enumerate(index) if not (0 <= j < len(ds)) or str(ds.image_ids[j]) != ids[k]]
        if bad:
            raise DataError(
                f"the data of {self.root} changed since the run ({len(bad)} of {len(ids)} images, "
                f"e.g. '{ids[bad[0]]}', are not where they were); restore the data or rerun "
                "'weakspot run CONFIG --out DIR' into a new directory"
            )
        self._data = RunImages(ds, index, ids, [int(x) for x in imgs.label])
        return self._data

    def degraded_images(
        self, condition_id: str, image_indices: Sequence[int], degradation: torch.nn.Module | None = None
    ) -> list[torch.Tensor]:
        """The images ``image_indices`` exactly as the run evaluated them under ``condition_id``:
        decoded at native resolution, degraded with the engine's keyed generators
        (:func:`~weakspot.evaluate.conditions.degrade_images` with the run's seed and image ids).

        Returns a list of ``(C, H, W)`` float tensors in [0, 1] (sizes may differ between
        images), before the model's preprocessing."""
        data = self.open_data()
        cond = self.condition(condition_id)
        idx = [int(i) for i in image_indices]
        imgs = [data.load(i) for i in idx]
        with torch.inference_mode():
            return degrade_images(cond, imgs, [data.image_ids[i] for i in idx], self.seed, degradation)

    # ------------------------------------------------------------------ units
    def units(self) -> list[Unit]:
        """Every unit of the run (all conditions × shards), shard-major, clean first."""
        return plan_units(len(self.images()), [c.condition_id for c in self.conditions()], self.shard_size)

    def done_units(self) -> set[tuple[str, int]]:
        """``(condition_id, shard)`` of the finished units whose files are intact."""
        damaged = self.store.damaged_units()
        return {u for u in self.store.done_units() if u not in damaged}

    def pending_units(self) -> list[Unit]:
        """The units still to do (missing or damaged)."""
        done = self.done_units()
        return [u for u in self.units() if (u.condition_id, u.shard) not in done]

    def repair(self, console=None) -> list[str]:
        """Delete every damaged unit so that the next session recomputes it; prints and returns
        one line per unit, e.g. ``unit gaussian_blur.sigma_px=2/shard 3: truncated parquet, recomputing``."""
        lines = []
        for (cid, shard), reason in self.store.damaged_units().items():
            for p in (
                self.store.unit_path(cid, shard),
                self.store.probs_path(cid, shard),
                self.store.checksum_path(cid, shard),
            ):
                p.unlink(missing_ok=True)
            lines.append(f"unit {cid}/shard {shard}: {reason}, recomputing")
        for line in lines:
            if console is not None:
                from rich.markup import escape

                console.print(f"[yellow]{escape(line)}[/]")
            else:
                print(line, file=sys.stderr)
        return lines

    # ------------------------------------------------------------------ life cycle
    def lock(self):
        """An exclusive lock on the run directory (:func:`lock_run_dir`): a second writer is
        refused with a :class:`ConfigError`. ``close()`` the returned file to release it."""
        return lock_run_dir(self.root)

    @classmethod
    def create(
        cls,
        cfg: RunConfig,
        out_dir: str | Path,
        ds,
        model,
        conditions: list[Condition],
        workers: int,
        console=None,
    ) -> Run:
        """Set up a new run in ``out_dir`` (see :func:`setup_run`)."""
        store = ResultsStore(out_dir)
        setup_run(cfg, store, ds, model, conditions, workers, console)
        return cls.open(out_dir)

    @classmethod
    def resume(cls, cfg: RunConfig, out_dir: str | Path, conditions: list[Condition], n_data: int) -> Run:
        """Re-open the run in ``out_dir`` to continue it with ``cfg``: refuses another identity
        (model, data, seed, shard_size, store_probs), records new conditions (keeping the earlier
        config's, whose rows stay valid), and checks the data still has ``n_data`` ≥ needed items."""
        run = cls.open(out_dir)
        run.check_identity(cfg)
        _sync_conditions(run.store, conditions)
        run._conditions = None
        if max(run.manifest.data.dataset_index, default=-1) >= n_data:
            raise ConfigError(
                f"the data of {out_dir} changed since the run started; use a new --out directory"
            )
        return run

    def check_identity(self, cfg: RunConfig) -> None:
        """:class:`ConfigError` unless ``cfg`` may continue this run (same model, data, seed,
        shard_size and store_probs, written with the current store schema: an older weakspot drew
        other random values, so new units would not match the stored ones; reading stays possible)."""
        version = self.manifest.schema_version
        if version < SCHEMA_VERSION:
            raise ConfigError(
                f"{self.root} was made by an older weakspot (store schema {version}, now {SCHEMA_VERSION}) whose "
                "random draws differ, so it cannot be continued; rerun into a new --out directory "
                "(reading and reporting the old run still work)"
            )
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.root} was made by a newer weakspot (store schema {version}, this one writes "
                f"{SCHEMA_VERSION}); continue it with that version, or rerun into a new --out directory"
            )
        if config_hash(self.manifest.identity) != config_hash(cfg.identity()):
            raise ConfigError(
                f"{self.root} holds a different run (model, data, seed, shard_size or store_probs changed); "
                "choose a new --out directory, or delete the old one to start over"
            )

    def finish(self, conditions, unknown, seconds, t_fwd, t_deg, images_done, setup_s, threads) -> None:
        """Record a session's end (see :func:`finish_manifest`)."""
        finish_manifest(self.store, conditions, unknown, seconds, t_fwd, t_deg, images_done, setup_s, threads)
        self.reload()


def _opt(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _condition_from_row(r: dict) -> Condition:
    params = json.loads(r.get("params_json") or "{}")
    sev = _opt(r.get("severity"))
    if isinstance(params, list):
        steps = tuple(
            Step(name=p["name"], params={k: v for k, v in p.items() if k != "name"}) for p in params
        )
    else:
        steps = (Step(name=str(r["degradation"]).split("+")[0], params=params, severity=sev),)
    value = _opt(r.get("axis_value"))
    return Condition(
        condition_id=r["condition_id"],
        steps=steps,
        family=_opt(r.get("family")) or "clean",
        severity=None if sev is None else int(sev),
        axis=_opt(r.get("axis")),
        axis_value=None if value is None else float(value),
        axis_unit=_opt(r.get("axis_unit")),
    )


def _sync_conditions(store: ResultsStore, conditions: list[Condition]) -> None:
    """Make ``conditions.parquet`` list ``conditions`` plus those of earlier sessions."""
    try:
        prior = store.conditions()
    except DataError:
        prior = None
    known = {c.condition_id for c in conditions}
    have = set(prior.condition_id) if prior is not None else set()
    extra = (
        []
        if prior is None
        else [r for _, r in prior.iterrows() if r.condition_id not in known and r.condition_id != CLEAN]
    )
    if not have >= known | {CLEAN} or extra:
        rows = [CLEAN_CONDITION.store_row()] + [c.store_row() for c in conditions]
        rows += [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.to_dict().items()}
            for r in extra
        ]
        store.write_conditions({k: [r[k] for r in rows] for k in rows[0]})


# ----------------------------------------------------------------------------- the directory
def check_run_dir_name(out_dir: str | Path | None) -> Path:
    """``out_dir`` as a Path; :class:`ConfigError` if it is empty."""
    if out_dir is None or str(out_dir).strip() == "":
        raise ConfigError("the run directory (--out) is empty; give one, e.g. --out runs/my-run")
    return Path(out_dir)


def prepare_run_dir(out_dir: str | Path) -> Path:
    """Create the run directory ``out_dir`` (or accept an existing one) and check it is writable.

    Raises :class:`ConfigError` with a one-line message when ``out_dir`` is empty, is a file,
    cannot be created (permission, name too long, a parent is a file) or is not writable."""
    root = check_run_dir_name(out_dir)
    try:
        if root.exists() and not root.is_dir():
            raise ConfigError(f"--out {root} is a file, not a directory; choose a directory for the run")
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _dir_error(root, exc) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the run directory {root} is not writable; choose another --out or fix its permissions"
        )
    return root


def _dir_error(root: Path, exc: OSError) -> ConfigError:
    if exc.errno == errno.ENAMETOOLONG:
        longest = max((len(p) for p in root.parts), default=0)
        return ConfigError(
            f"the run directory name is too long ({len(str(root))} characters, longest part "
            f"{longest}); choose a shorter --out"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(
            f"cannot create the run directory {root}: {(exc.strerror or str(exc)).lower()}; choose a writable --out"
        )
    if exc.errno == errno.ENOTDIR:
        return ConfigError(
            f"cannot create the run directory {root}: a part of the path is a file; choose another --out"
        )
    return ConfigError(f"cannot create the run directory {root}: {exc.strerror or exc}; choose another --out")


def lock_run_dir(root: Path):
    """An exclusive ``flock`` on ``root/.lock``: a second run on the same directory is refused
    (the kernel drops the lock when the process dies, so a killed run never blocks a resume)."""
    import fcntl

    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        f = open(root / ".lock", "a+")  # noqa: SIM115 - stays open: it holds the lock for the run's lifetime
    except OSError as exc:
        raise _dir_error(root, exc) from None
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


def remove_stale_temporaries(root: Path) -> None:
    """Temporary files of a killed earlier session (never renamed, so never part of the store)."""
    for sub in ("predictions", "probs", "skipped", "checksums"):
        d = Path(root) / sub
        if d.is_dir():
            for f in d.glob("*/.*.tmp"):
                f.unlink(missing_ok=True)


def _versions(model_source: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in (
        "weakspot",
        "torch",
        "torchvision",
        "numpy",
        "pyarrow",
        "pillow",
        "scikit-image",
        "efficientnet-lite-pytorch",
        "timm",
        "onnxruntime",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _label_map(ds, model) -> tuple[list[int], dict | None]:
    """Per-item model class indices and the manifest's ``data.label_map`` (folder → index →
    class name; ``None`` without folder data), by :func:`weakspot.data.labels.dataset_labels`."""
    from weakspot.data.labels import dataset_labels, manifest_label_map

    labels, maps = dataset_labels(ds, model.class_names, model.name)
    return labels, manifest_label_map(maps)


def setup_run(
    cfg, store: ResultsStore, ds, model, conditions: list[Condition], workers: int, console
) -> dict:
    """Probe every image (decode, shape, content hash), write classes, images, conditions and
    the manifest. Returns the manifest."""
    n = len(ds)
    batches = [list(range(i, min(n, i + 32))) for i in range(0, n, 32)]
    shapes: list[tuple | None] = [None] * n
    digests = [""] * n
    errors: list[str | None] = [None] * n
    use_workers = workers if has_files(ds) else 0
    for items in image_loader(LoadItems(ds, range(n), probe=True), batches, use_workers):
        for i, shape, digest, err in items:
            shapes[i], digests[i], errors[i] = shape, digest, err
    mapped, label_map = _label_map(ds, model)
    k = model.num_classes
    skipped, valid = [], []
    hw: dict[int, tuple[int, int]] = {}  # (height, width) of every valid image
    out_of_range = 0
    for i in range(n):
        lab = mapped[i]
        shape = shapes[i]
        if errors[i] is not None or shape is None:
            skipped.append({"image_id": ds.image_ids[i], "path": ds.paths[i], "reason": errors[i]})
        elif lab >= k or lab < -1:
            out_of_range += 1
            skipped.append(
                {
                    "image_id": ds.image_ids[i],
                    "path": ds.paths[i],
                    "reason": f"label {lab} out of range for a model with {k} classes",
                }
            )
        else:
            valid.append((i, lab))
            hw[i] = (int(shape[1]), int(shape[2]))
    labelled = sum(1 for x in ds.labels if x >= 0)
    if labelled and out_of_range > labelled // 2:
        raise DataError(
            f"{out_of_range} of {labelled} labels are out of range for {model.name} ({k} classes): "
            "the data set does not belong to this model; check 'data' and 'model' in the config"
        )
    if not valid:
        raise DataError(
            f"none of the {n} images could be used; first problem: {skipped[0]['reason'] if skipped else '?'}"
        )
    from weakspot.evaluate.check import data_warnings, print_warnings

    warns = data_warnings(
        [lab for _, lab in valid],
        model.class_names,
        [digests[i] for i, _ in valid],
        [ds.image_ids[i] for i, _ in valid],
        label_map,
    )
    print_warnings(warns, console)
    store.write_classes(model.class_names)
    store.write_images(
        {
            "image_index": list(range(len(valid))),
            "image_id": [ds.image_ids[i] for i, _ in valid],
            "path": [ds.paths[i] for i, _ in valid],
            "label": [lab for _, lab in valid],
            "height": [hw[i][0] for i, _ in valid],
            "width": [hw[i][1] for i, _ in valid],
        }
    )
    _write_conditions(store, conditions)
    from weakspot.data import fingerprint

    manifest = {
        "name": cfg.name,
        "status": "running",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "identity": cfg.identity(),
        "seed": cfg.seed,
        "shard_size": cfg.shard_size,
        "store_probs": cfg.store_probs,
        "versions": _versions(model.source),
        "model": model.describe(),
        "data": {
            **ds.describe(),
            "sha256": fingerprint(ds, digests),
            "n_valid": len(valid),
            "dataset_index": [i for i, _ in valid],
            "label_map": label_map,
            "warnings": warns,
        },
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


def plan_pending(
    cfg,
    store: ResultsStore,
    conditions: list[Condition],
    n_images: int,
    num_classes: int,
    max_units: int | None = None,
) -> tuple[np.ndarray, list[str], list[Unit]]:
    """Labels, image ids and the units still to do for a set-up run (any engine).

    Refuses (:class:`ConfigError`) a ``store_probs`` run that would write more than 8 GiB.
    """
    if cfg.store_probs:
        n_bytes = n_images * (len(conditions) + 1) * num_classes * 4  # float32
        if n_bytes > 8 * 2**30:
            raise ConfigError(
                f"store_probs would write {n_bytes / 2**30:.1f} GiB of probabilities; set store_probs: false "
                "or use fewer images/conditions"
            )
    images_df = store.images()
    ids_all = images_df.image_id.tolist()
    done = {u for u in store.done_units() if store.check_unit(*u) is None}
    units = plan_units(len(ids_all), [c.condition_id for c in conditions], cfg.shard_size, done)
    if max_units is not None:
        units = units[:max_units]
    return images_df.label.to_numpy(), ids_all, units


def stored_clean_top1(store: ResultsStore, shard: int, idx: np.ndarray) -> np.ndarray:
    """The stored clean top-1 class of each ``image_index`` in ``idx`` (``-1`` where unknown),
    read from the shard's clean unit (repaired before any engine reads it)."""
    import pyarrow.parquet as pq

    path = store.unit_path(CLEAN, shard)
    out = np.full(len(idx), -1, dtype=np.int64)
    if not path.is_file():
        return out
    t = pq.read_table(path, columns=["image_index", "top1"])
    pos = {int(i): j for j, i in enumerate(idx)}
    for ii, t1 in zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True):
        if int(ii) in pos:
            out[pos[int(ii)]] = t1
    return out


def finish_manifest(store, conditions, unknown, seconds, t_fwd, t_deg, images_done, setup_s, threads) -> None:
    """End a session: status (``complete`` when every unit is done and intact, else
    ``partial``), units done/total, every skipped input, and a ``sessions`` entry with timings."""
    if not store.exists():
        return
    m = store.manifest()
    unit_skips = []
    base = store.root / "skipped"
    if base.is_dir():
        for f in sorted(base.glob("*/shard-*.json")):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                unit_skips += json.loads(f.read_text())
    total = len(
        plan_units(len(store.images()), [c.condition_id for c in conditions], m.get("shard_size", 64))
    )
    done = len(store.done_units()) - len(store.damaged_units())
    m.pop("schema_version", None)
    sessions = m.get("sessions", [])
    sessions.append(
        {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "images_evaluated": images_done,
            "setup_s": round(setup_s, 3),
            "forward_s": round(t_fwd, 3),
            "degrade_s": round(t_deg, 3),
            "images_per_s": round(images_done / seconds, 2) if seconds > 0 else None,
            "device": str(
                torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
            ),
            "torch_threads": threads,
            "pid": os.getpid(),
        }
    )
    m.update(
        {
            "status": "complete" if done >= total else "partial",
            "units_done": done,
            "units_total": total,
            "conditions": [c.condition_id for c in conditions],
            "unknown_degradations_skipped": unknown,
            "skipped": m.get("skipped_inputs", []) + unit_skips,
            "sessions": sessions[-50:],
        }
    )
    store.write_manifest(m)
