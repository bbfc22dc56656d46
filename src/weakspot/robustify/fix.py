"""``weakspot fix RUN_DIR``: pick the worst weaknesses, train the fitting fix, re-run the sweep.

1. From the results store (:mod:`weakspot.analysis`), the degradations with the largest
   top-1 accuracy drop against clean (at their worst level) are the weaknesses; each
   becomes a training range spanning the levels the run swept.
2. Training images are loaded as ``weakspot run`` loads images (its loader, label mapping,
   bad-file skipping; mixed sizes resized by the model's preprocessing): the data the run
   subsampled, the ``train`` split of idx/CIFAR runs, or ``--train-data KIND[:ROOT]``. Any of
   them whose content equals an evaluated image is dropped unless ``allow_overlap``.
3. The fix: **robust training** (fine-tune the model on training images degraded by
   those ranges, a share kept clean) where the model is trainable; otherwise the
   **enhancement front-end** in front of the frozen model.
4. The fixed model is saved as TorchScript and the *same* run config (data, conditions,
   seed) is re-run with it into ``RUN_DIR/fix/run``. Before and after are compared on the
   same images (exact McNemar, Newcombe's paired interval, Holm across conditions) with a
   verdict per row; ``RUN_DIR/fix/fix.json`` holds it all, and the report's
   "Fix: before / after" section renders it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch
from torch import nn

from weakspot.errors import ConfigError, DataError, InvalidParameterError, WeakspotError
from weakspot.evaluate.store import CLEAN, atomic_write_bytes, atomic_write_json
from weakspot.robustify.data import LabelledImages, image_hashes, load_labelled_images, split_indices
from weakspot.robustify.mix import LevelRange, RandomDegradation
from weakspot.robustify.train import TrainConfig, train_classifier

if TYPE_CHECKING:  # imported lazily at run time (the front-end path only)
    from weakspot.robustify.enhance import EnhanceNet

__all__ = [
    "Weakness",
    "find_weaknesses",
    "choose_method",
    "training_images",
    "before_after",
    "summary_lines",
    "format_table",
    "fix_run",
    "load_fix",
    "FIX_DIRNAME",
    "MIN_IMAGES_FOR_FIX_CLAIM",
    "VERDICTS",
]

FIX_DIRNAME = "fix"


@dataclass(frozen=True)
class Weakness:
    """A degradation the model breaks under: its worst accuracy drop and the swept range."""

    degradation: str
    axis: str | None
    low: float | None
    high: float | None
    worst_condition: str
    clean_acc: float
    worst_acc: float

    @property
    def drop(self) -> float:
        return self.clean_acc - self.worst_acc

    def level_range(self) -> LevelRange:
        return LevelRange(self.degradation, self.axis, self.low, self.high)


def _accuracy(store) -> pd.DataFrame:
    """Top-1 accuracy per condition from the store (labelled images only)."""
    from weakspot.evaluate.store import ResultsStore

    s = store if isinstance(store, ResultsStore) else ResultsStore(store)
    pred = s.predictions()
    pred = pred[pred.label >= 0]
    if pred.empty:
        raise DataError(f"{s.root} has no labelled predictions; 'weakspot fix' needs labelled images")
    acc = pred.groupby("condition_id").correct1.mean().rename("acc").reset_index()
    return acc.merge(s.conditions(), on="condition_id", how="left")


def find_weaknesses(run_dir: str | Path, top: int = 2, min_drop: float = 0.05) -> list[Weakness]:
    """The ``top`` degradations with the largest accuracy drop (at least ``min_drop``)."""
    acc = _accuracy(run_dir)
    clean = acc[acc.condition_id == CLEAN]
    if clean.empty:
        raise DataError(f"{run_dir} has no clean condition; re-run it with 'weakspot run'")
    clean_acc = float(clean.acc.iloc[0])
    deg = acc[(acc.condition_id != CLEAN) & acc.axis.notna()]
    out = []
    for name, g in deg.groupby("degradation"):
        worst = g.loc[g.acc.idxmin()]
        vals = g.axis_value.dropna()
        if vals.empty:
            continue
        out.append(
            Weakness(
                str(name),
                str(worst.axis),
                float(vals.min()),
                float(vals.max()),
                str(worst.condition_id),
                clean_acc,
                float(worst.acc),
            )
        )
    out = [w for w in sorted(out, key=lambda w: -w.drop) if w.drop >= min_drop]
    return out[:top]


def choose_method(model, has_training_data: bool) -> str:
    """``robust`` (fine-tune) where training data and a trainable model exist, else ``frontend``."""
    if not model.differentiable:
        raise WeakspotError(
            f"model '{model.name}' ({model.source}) passes no gradients, so neither fix can be trained; "
            "export it as TorchScript or give a PyTorch model"
        )
    trainable = model.source in ("bundled", "torchvision", "timm", "custom") and any(
        p.requires_grad for p in model.module.parameters()
    )
    return "robust" if trainable and has_training_data else "frontend"


# ----------------------------------------------------------------------------- the run, re-opened
@dataclass
class _OpenedRun:
    """What ``fix`` needs of a finished run, opened through :class:`weakspot.evaluate.Run`."""

    root: Path
    handle: Any  # weakspot.evaluate.Run
    model: Any  # weakspot.models.LoadedModel
    data: Any  # the run's data set, its subsets applied (weakspot.data.ImageDataset)
    dataset_index: list[int]  # positions in ``data`` of the evaluated images (image_index order)
    class_names: list[str]

    @property
    def config(self):
        return self.handle.config

    @property
    def manifest(self):
        return self.handle.manifest


def _open_run(run_dir: Path) -> _OpenedRun:
    """The run ``fix`` works on: :meth:`Run.open_data` re-opens the data exactly as ``run`` did
    (``dataset_index`` holds positions *after* the ``per_class``/``limit`` subset) and refuses
    data whose images moved; a changed content fingerprint is refused here too, since evaluated
    images could then not be told apart from training images."""
    from weakspot.data import fingerprint
    from weakspot.evaluate import Run

    handle = Run.open(run_dir)
    images = handle.open_data()
    recorded = handle.manifest.data.sha256
    if recorded is not None and fingerprint(images.ds) != recorded:
        raise DataError(
            f"the data of {run_dir} changed since it was run (files added, removed or edited), so its "
            "evaluated images cannot be told apart from training images; re-run it with 'weakspot run'"
        )
    return _OpenedRun(
        Path(run_dir), handle, handle.load_model(), images.ds, list(images.dataset_index), handle.classes()
    )


def _run_label_map(ds, model):
    """The label mapping ``weakspot run`` applies (one call, so fix and run can never differ)."""
    from weakspot.evaluate.run import _label_map

    mapped, _ = _label_map(ds, model)  # per item; a folder's label maps to one class, so a table suffices
    table = {int(orig): int(new) for orig, new in zip(ds.labels, mapped, strict=True)}
    return lambda y: table.get(int(y), int(y))


# ----------------------------------------------------------------------------- training images
_SPLIT_KINDS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def _training_source(run: _OpenedRun, train_data: str | None):
    """The data set to draw training images from, and its name; None if the run's data has none.

    ``--train-data KIND[:ROOT]``: that data set (its ``train`` split where the kind has one).
    Otherwise, per data entry of the run: the ``train`` split of idx/CIFAR test runs, else the
    whole data set the run subsampled (``per_class``/``limit``), whose evaluated images are then
    removed by content.
    """
    from weakspot.data import ConcatImageDataset, open_dataset

    if train_data is not None:
        kind, _, root = train_data.partition(":")
        split = "train" if kind in _SPLIT_KINDS else "test"
        return open_dataset(
            root or None, kind, split=split
        ), f"{train_data} ({split} split)" if kind in _SPLIT_KINDS else train_data
    parts, names = [], []
    for d in run.config.data_list:
        ds = open_dataset(d.root, d.kind, split=d.split, subset=d.subset, names=d.names)
        if ds.kind in _SPLIT_KINDS and d.split == "test":
            ds = open_dataset(d.root, ds.kind, split="train")
            names.append(f"{ds.kind} train split")
        else:
            names.append(f"{ds.kind} (the run's data set)")
        parts.append(ds)
    return (parts[0] if len(parts) == 1 else ConcatImageDataset(parts)), " + ".join(names)


def training_images(
    run_dir: str | Path,
    *,
    train_data: str | None = None,
    allow_overlap: bool = False,
    _run: _OpenedRun | None = None,
    keep_unlabelled: bool = False,
) -> tuple[LabelledImages, dict[str, Any]]:
    """The labelled training images of a fix, and a record of how they were chosen.

    Loaded like ``weakspot run`` loads images: the same data loader (bad files skipped and
    listed), the run's label mapping, the model's classes (see
    :func:`~weakspot.robustify.data.load_labelled_images`). Any training image whose content
    (:func:`~weakspot.robustify.data.content_hash`) equals an evaluated image's is dropped, unless
    ``allow_overlap``; then the after-fix accuracy is optimistic, and ``fix.json`` says so.

    Returns ``(images, info)`` with ``info``: ``name``, ``n_evaluated``, ``n_candidates``,
    ``n_overlap`` (training items equal to an evaluated image), ``allow_overlap``, ``n_skipped``,
    ``resized``.
    """
    run = _run if _run is not None else _open_run(Path(run_dir))
    ds, name = _training_source(run, train_data)
    try:
        imgs = load_labelled_images(
            ds,
            _run_label_map(ds, run.model),
            run.model.num_classes,
            run.model.preprocess_config,
            name,
            keep_unlabelled=keep_unlabelled,
        )
    except DataError as exc:
        if train_data is not None:
            raise
        raise DataError(
            f"{exc}; give labelled training images with --train-data KIND[:ROOT] "
            "(e.g. imagefolder:/data/train)"
        ) from None
    evaluated = image_hashes(run.data, run.dataset_index)
    overlap = [i for i, h in enumerate(imgs.hashes) if h in evaluated]
    info = {
        "name": name,
        "n_evaluated": len(run.dataset_index),
        "n_candidates": len(imgs),
        "n_overlap": len(overlap),
        "allow_overlap": bool(allow_overlap),
        "n_skipped": len(imgs.skipped),
        "resized": imgs.resized,
    }
    if overlap and not allow_overlap:
        drop = set(overlap)
        imgs = imgs.select([i for i in range(len(imgs)) if i not in drop])
    if len(imgs) == 0:
        raise DataError(
            f"all {info['n_candidates']} training images of {name} are also evaluated images of {run.root}; "
            "give other labelled images with --train-data KIND[:ROOT] (or --allow-overlap, which makes the "
            "after-fix accuracy meaningless)"
        )
    return imgs, info


class _OnPreprocessed(nn.Module):
    """Front-end + classifier on *preprocessed* input (what the engine feeds a TorchScript
    model): undo the normalisation, enhance in [0, 1], normalise again, classify."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, front_end: EnhanceNet, classifier: nn.Module, mean, std):
        super().__init__()
        self.front_end, self.classifier = front_end, classifier
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = (x * self.std + self.mean).clamp(0.0, 1.0)
        return self.classifier((self.front_end.enhance(img) - self.mean) / self.std)


class _Preprocessed(nn.Module):
    """``module(preprocess(images))`` for training on images in [0, 1]."""

    def __init__(self, loaded):
        super().__init__()
        self.module, self.pre = loaded.module, loaded.preprocess_config

    def forward(self, x):
        return self.module(self.pre(x))


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """TorchScript by tracing, checked against eager at another batch size."""
    import warnings

    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
    probe = torch.cat([example, example.flip(0), example[:1]])
    with torch.no_grad():
        torch.testing.assert_close(traced(probe), module(probe), rtol=1e-4, atol=1e-4)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    traced.save(str(tmp))
    tmp.replace(path)


#: fewer evaluated images than this per condition (or class) and ``fix`` claims nothing for it.
#: With 20 images (the foolbox ImageNet samples) a gain of 20 points (12/20 → 16/20: 5 images
#: turn right, 1 turns wrong) has a paired 95 % interval of about −3 … +41 points, McNemar p = 0.22;
#: a set that small can only tell near-complete flips from chance
MIN_IMAGES_FOR_FIX_CLAIM = 30

VERDICTS = ("better", "worse", "not significant", "too few images")


def _paired_rows(before_dir: Path, after_dir: Path) -> pd.DataFrame:
    """One row per (condition, image) evaluated both before and after: label, right before/after."""
    from weakspot.evaluate.store import ResultsStore

    out = []
    for tag, d in (("before", before_dir), ("after", after_dir)):
        s = ResultsStore(d)
        p = s.predictions().merge(s.images()[["image_index", "image_id"]], on="image_index", how="left")
        p = p[p.label >= 0]
        out.append(p[["condition_id", "image_id", "label", "correct1"]].rename(columns={"correct1": tag}))
    m = out[0].merge(out[1].drop(columns="label"), on=["condition_id", "image_id"], how="inner")
    return m


def _compare(rows: pd.DataFrame, keys: list[str], alpha: float, min_images: int) -> pd.DataFrame:
    """Paired before/after per group: n, accuracies, difference with its Newcombe interval, exact
    McNemar p, Holm-adjusted p across the groups, verdict."""
    import numpy as np

    from weakspot.analysis.paired import compare_paired, holm

    recs = []
    for key, g in rows.groupby(keys, sort=False):
        c = compare_paired(g.before.to_numpy(bool), g.after.to_numpy(bool))
        key = key if isinstance(key, tuple) else (key,)
        recs.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": c["n"],
                "before": c["acc_a"],
                "after": c["acc_b"],
                "gain": c["diff"],
                "gain_lo": c["diff_lo"],
                "gain_hi": c["diff_hi"],
                "p": c["p"],
            }
        )
    t = pd.DataFrame(recs)
    if t.empty:
        return t
    t["p_holm"] = holm(t.p.to_numpy())
    sig = (t.p_holm < alpha).to_numpy()
    t["verdict"] = np.select(
        [t.n < min_images, sig & (t.gain_lo > 0), sig & (t.gain_hi < 0)],
        ["too few images", "better", "worse"],
        "not significant",
    )
    return t


def before_after(
    before_dir: Path,
    after_dir: Path,
    class_names: list[str],
    *,
    alpha: float = 0.05,
    min_images: int = MIN_IMAGES_FOR_FIX_CLAIM,
) -> pd.DataFrame:
    """Paired before/after comparison per condition (``cls = "all"``) and per condition × class.

    The same images, matched by ``image_id``, before and after the fix: ``n``, ``before``,
    ``after``, ``gain`` (after − before) with its 95 % paired interval (``gain_lo``, ``gain_hi``,
    Newcombe), the exact McNemar ``p``, ``p_holm`` (Holm across the conditions; per-class rows form
    a second family) and a ``verdict``: ``better`` / ``worse`` (Holm p < ``alpha`` *and* the
    interval excludes 0), ``not significant``, or ``too few images`` (n < ``min_images``).
    """
    rows = _paired_rows(Path(before_dir), Path(after_dir))
    if rows.empty:
        raise DataError(f"{before_dir} and {after_dir} share no labelled evaluated images to compare")
    rows["cls"] = [class_names[i] if 0 <= i < len(class_names) else str(i) for i in rows.label]
    overall = _compare(rows, ["condition_id"], alpha, min_images).assign(cls="all")
    per_class = _compare(rows, ["condition_id", "cls"], alpha, min_images)
    cols = [
        "condition_id",
        "cls",
        "n",
        "before",
        "after",
        "gain",
        "gain_lo",
        "gain_hi",
        "p",
        "p_holm",
        "verdict",
    ]
    return pd.concat([overall[cols], per_class[cols]], ignore_index=True)


def _pts(v: float) -> str:
    return f"{100 * v:+.1f} pts"


def summary_lines(ba: pd.DataFrame, weaknesses: list[dict]) -> list[str]:
    """Plain-language verdicts: how many weaknesses got a significant gain, and the clean cost."""
    overall = ba[ba.cls == "all"].set_index("condition_id")
    lines = []
    if (overall.verdict == "too few images").all():
        n = int(overall.n.max())
        return [
            (
                f"too few images ({n} per condition, fewer than {MIN_IMAGES_FOR_FIX_CLAIM}) to tell any "
                "before/after difference from chance: no gain or cost is claimed"
            )
        ]
    gained = []
    for w in weaknesses:
        if w["worst_condition"] not in overall.index:
            lines.append(f"no comparison for {w['degradation']}: {w['worst_condition']} was not re-run")
            continue
        r = overall.loc[w["worst_condition"]]
        what = (
            f"{w['degradation']} at {w['worst_condition']}: {100 * r.before:.1f}% → {100 * r.after:.1f}% "
            f"({_pts(r.gain)}, 95% CI {_pts(r.gain_lo)} … {_pts(r.gain_hi)}, Holm p = {r.p_holm:.2g})"
        )
        if r.verdict == "better":
            gained.append(w["degradation"])
            lines.append(f"significant gain: {what}")
        elif r.verdict == "worse":
            lines.append(f"significantly worse: {what}")
        elif r.verdict == "too few images":
            lines.append(f"too few images to claim anything: {what}")
        else:
            lines.append(f"no significant gain: {what}")
    head = f"{len(gained)} of {len(weaknesses)} weaknesses got a significant gain"
    if "clean" in overall.index:
        c = overall.loc["clean"]
        cost = (
            f"clean accuracy {100 * c.before:.1f}% → {100 * c.after:.1f}% ({_pts(c.gain)}, 95% CI "
            f"{_pts(c.gain_lo)} … {_pts(c.gain_hi)}, Holm p = {c.p_holm:.2g})"
        )
        if c.verdict == "worse":
            cost = f"a real clean-accuracy cost: {cost}"
        elif c.verdict == "better":
            cost = f"clean accuracy improved significantly: {cost}"
        elif c.verdict == "too few images":
            cost = f"too few clean images to judge a cost: {cost}"
        else:
            cost = f"no significant clean-accuracy change: {cost}"
        lines.append(cost)
    return [head, *lines]


def _train(
    chosen: str,
    model,
    train: LabelledImages,
    mix: RandomDegradation,
    *,
    epochs: int,
    p_clean: float,
    seed: int,
    out: Path,
    progress: bool,
    log,
    labels: Literal["labels", "clean-predictions"] = "labels",
    temperature: float = 2.0,
) -> tuple[nn.Module, list[dict]]:
    """Train the fix; returns the module to export (on preprocessed input) and the epoch history."""
    import hashlib

    from weakspot.robustify.enhance import EnhanceConfig, clean_soft_targets, train_enhancer

    def on_epoch(rec: dict) -> None:
        loss = rec.get("loss", rec.get("ce"))
        log(
            f"  epoch {rec['epoch']}/{epochs}: loss {loss:.4f}, train accuracy {100 * rec['train_acc']:.1f}% "
            f"({rec['seconds']:.0f} s)"
        )

    device = getattr(model, "device", "cpu")
    if chosen == "robust":
        net = _Preprocessed(model)
        tcfg = TrainConfig(
            strategy="constant", epochs=epochs, lr=1e-3, seed=seed, labels=labels, temperature=temperature
        )
        # label-free: the frozen model's soft predictions on the clean images, before any update
        soft = (
            clean_soft_targets(net, train.images, temperature, device=device) if labels != "labels" else None
        )
        # a checkpoint belongs to these exact training images: their content keys its folder
        key = hashlib.sha256(("".join(train.hashes) + str(train.labels.tolist())).encode()).hexdigest()[:12]
        root = out / "checkpoint"
        if root.is_dir():
            for old in root.iterdir():
                if old.name != key:
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
        ckpt = root / key

        def train_once():
            return train_classifier(
                net,
                train.images,
                train.labels,
                mix,
                tcfg,
                checkpoint_dir=ckpt,
                progress=progress,
                desc="fix",
                device=device,
                on_epoch=on_epoch,
                soft_targets=soft,
            ).history

        try:  # resume an interrupted fix; a checkpoint of different settings is replaced
            hist = train_once()
        except ConfigError:
            shutil.rmtree(ckpt)
            hist = train_once()
        return model.module, hist
    pre = model.preprocess_config
    res = train_enhancer(
        _Preprocessed(model),
        train.images,
        train.labels,
        mix,
        EnhanceConfig(epochs=epochs, p_clean=p_clean, seed=seed, labels=labels, temperature=temperature),
        progress=progress,
        device=device,
        on_epoch=on_epoch,
    )
    return _OnPreprocessed(res.front_end, model.module, pre.mean, pre.std).to(device), res.history


def fix_run(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    top: int = 2,
    method: str = "auto",
    epochs: int = 3,
    train_data: str | None = None,
    p_clean: float = 0.2,
    train_limit: int | None = None,
    seed: int = 0,
    allow_overlap: bool = False,
    progress: bool = True,
    report: bool = True,
    log=print,
    labels: str = "labels",
    temperature: float = 2.0,
) -> dict[str, Any]:
    """Diagnose ``run_dir``, train the fix, re-run the same sweep, compare before/after (paired).

    Training images never include an evaluated image (compared by content) unless
    ``allow_overlap``. Returns the summary written to ``fix.json`` plus ``table`` (the
    per-condition before/after DataFrame) and ``report`` (the report's path, if written).
    """
    from weakspot.evaluate.engine import run_sweep

    if method not in ("auto", "robust", "frontend"):
        raise InvalidParameterError("--method", method, "auto | robust | frontend")
    if labels not in ("labels", "clean-predictions"):
        raise InvalidParameterError("--labels", labels, "labels | clean-predictions")
    label_mode: Literal["labels", "clean-predictions"] = (
        "labels" if labels == "labels" else "clean-predictions"
    )
    if not temperature > 0:
        raise InvalidParameterError("--temperature", temperature, "a positive number, e.g. 2")
    run_dir = Path(run_dir)
    run = _open_run(run_dir)
    status = run.manifest.status
    if status not in (None, "complete", "done", "finished"):
        log(f"note: run status is '{status}'")
    out = Path(out_dir) if out_dir is not None else run_dir / FIX_DIRNAME
    weak = find_weaknesses(run_dir, top=top)
    if not weak:
        raise WeakspotError(f"no degradation in {run_dir} costs 5 accuracy points or more: nothing to fix")
    for w in weak:
        log(
            f"weakness: {w.degradation} ({w.axis} {w.low:g}..{w.high:g}): accuracy {100 * w.clean_acc:.1f}% → "
            f"{100 * w.worst_acc:.1f}% at {w.worst_condition}"
        )
    model = run.model
    log("loading training images (as 'weakspot run' loads them) …")
    train, info = training_images(
        run_dir,
        train_data=train_data,
        allow_overlap=allow_overlap,
        _run=run,
        keep_unlabelled=labels == "clean-predictions",
    )
    if info["n_overlap"]:
        log(
            f"{'kept' if allow_overlap else 'dropped'} {info['n_overlap']} training images that are also "
            f"evaluated images" + (" — the after-fix accuracy is optimistic" if allow_overlap else "")
        )
    if info["n_skipped"]:
        log(
            f"skipped {info['n_skipped']} training items (undecodable, unlabelled or out of the model's classes)"
        )
    chosen = choose_method(model, True) if method == "auto" else method
    if train_limit is not None and train_limit < len(train):
        keep = split_indices(train.labels, train_limit / len(train), seed)[1]
        train = train.select(keep)
    log(
        f"fix: {chosen} on {len(train)} training images ({info['name']}"
        f"{', resized to the model input by its preprocessing' if train.resized else ''})"
    )
    mix = RandomDegradation([w.level_range() for w in weak], p_clean=p_clean)
    pre = model.preprocess_config
    example = pre(torch.rand(2, *train.images.shape[1:])).to(model.device)
    t0 = time.perf_counter()
    if labels == "clean-predictions":
        log(
            f"label-free: targets are the frozen model's predictions on the clean images (T = {temperature:g}); "
            "the training images' labels are not used"
        )
    export, hist = _train(
        chosen,
        model,
        train,
        mix,
        epochs=epochs,
        p_clean=p_clean,
        seed=seed,
        out=out,
        progress=progress,
        log=log,
        labels=label_mode,
        temperature=temperature,
    )
    train_s = time.perf_counter() - t0
    ts = out / "fixed_model.ts"
    _export(export, example, ts)
    new = run.config.model_dump(mode="json")
    new["model"] = {
        **new["model"],
        "name": str(ts.resolve()),
        "source": "torchscript",
        "weights": None,
        "class_names": run.class_names,
        "num_classes": len(run.class_names),
        "preprocess": pre.to_dict(),
    }
    new["name"] = f"{run.manifest.name or run_dir.name} (fixed: {chosen})"
    log("re-running the same sweep with the fixed model …")
    if (out / "run").exists():  # predictions of an earlier fixed model under the same file name
        shutil.rmtree(out / "run")
    run_sweep(new, out / "run", progress=progress)
    ba = before_after(run_dir, out / "run", run.class_names)
    weak_d = [{**w.__dict__, "drop": w.drop} for w in weak]
    lines = summary_lines(ba, weak_d)
    summary = {
        "method": chosen,
        "weaknesses": weak_d,
        "training_data": {**info, "train": len(train), "image_shape": list(train.images.shape[1:])},
        "train_range": mix.name,
        "p_clean": p_clean,
        "epochs": epochs,
        "labels": labels,
        "temperature": temperature,
        "history": hist,
        "train_seconds": train_s,
        "fixed_model": str(ts),
        "after_run": str(out / "run"),
        "min_images": MIN_IMAGES_FOR_FIX_CLAIM,
        "summary": lines,
        "before_after": json.loads(ba.to_json(orient="records", double_precision=15)),
    }
    atomic_write_json(out / "fix.json", summary)
    overall = ba[ba.cls == "all"].drop(columns="cls").set_index("condition_id")
    atomic_write_bytes(
        out / "before_after.md", ("\n".join(f"- {x}" for x in lines) + "\n\n" + _md(overall) + "\n").encode()
    )
    for x in lines:
        log(x)
    summary["table"] = overall
    if report and out == run_dir / FIX_DIRNAME:
        import weakspot.robustify.report_section  # noqa: F401  (registers the section)
        from weakspot.report import write_report

        summary["report"] = str(write_report(run_dir))
    return summary


def format_table(t: pd.DataFrame) -> pd.DataFrame:
    """The before/after table as text: accuracies in %, the gain with its interval in points."""
    return pd.DataFrame(
        {
            "n": t.n.astype(int).astype(str),
            "before": [f"{100 * v:.1f}%" for v in t.before],
            "after": [f"{100 * v:.1f}%" for v in t.after],
            "gain (95% CI)": [
                f"{100 * g:+.1f} ({100 * lo:+.1f} … {100 * hi:+.1f})"
                for g, lo, hi in zip(t.gain, t.gain_lo, t.gain_hi, strict=True)
            ],
            "McNemar p": [f"{v:.2g}" for v in t.p],
            "Holm p": [f"{v:.2g}" for v in t.p_holm],
            "verdict": list(t.verdict),
        },
        index=t.index,
    )


def _md(t: pd.DataFrame) -> str:
    from weakspot.robustify.grid import markdown_table

    t = format_table(t)
    t.index.name = "condition"
    return markdown_table(t)


def load_fix(run_dir: str | Path) -> dict | None:
    """``RUN_DIR/fix/fix.json`` or None."""
    p = Path(run_dir) / FIX_DIRNAME / "fix.json"
    return json.loads(p.read_text()) if p.is_file() else None
