"""``weakspot fix RUN_DIR``: pick the worst weaknesses, train the fitting fix, re-run the sweep.

1. From the results store (:mod:`weakspot.analysis`), the degradations with the largest
   top-1 accuracy drop against clean (at their worst level) are the weaknesses; each
   becomes a training range spanning the levels the run swept.
2. The fix: **robust training** (fine-tune the model on training images degraded by
   those ranges, a share kept clean) where training images and a trainable model are
   available; otherwise the **enhancement front-end** in front of the frozen model.
   Training images: for ``mnist_5k`` runs the bundled digits *not* evaluated in the run;
   for idx/CIFAR runs their ``train`` split; else ``--train-data KIND[:ROOT]``.
3. The fixed model is saved as TorchScript and the *same* run config (data, conditions,
   seed) is re-run with it into ``RUN_DIR/fix/run``; ``RUN_DIR/fix/fix.json`` holds the
   before/after accuracies per condition and per class, which the report's
   "Fix: before / after" section renders.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from weakspot.errors import ConfigError, DataError, InvalidParameterError, WeakspotError
from weakspot.evaluate.store import CLEAN, atomic_write_bytes, atomic_write_json
from weakspot.robustify.data import Split, split_indices
from weakspot.robustify.mix import LevelRange, RandomDegradation

__all__ = ["Weakness", "find_weaknesses", "choose_method", "fix_run", "FIX_DIRNAME", "before_after"]

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
        out.append(Weakness(str(name), str(worst.axis), float(vals.min()), float(vals.max()),
                            str(worst.condition_id), clean_acc, float(worst.acc)))
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


def _training_split(manifest: dict, train_data: str | None, seed: int) -> Split | None:
    """Labelled training images disjoint from the run's evaluated images, or None."""
    from weakspot.robustify.data import _read_mnist_5k

    cfg = manifest.get("config", {})
    data = cfg.get("data")
    data = data[0] if isinstance(data, list) and len(data) == 1 else data
    if train_data is not None:
        kind, _, root = train_data.partition(":")
        from weakspot.robustify.data import _from_dataset

        x, y, names = _from_dataset(kind, root or None, "train" if kind in ("mnist", "fashion_mnist", "cifar10",
                                                                             "cifar100") else "test", None)
        return Split(x, y, x[:0], y[:0], names, kind)
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if kind == "mnist_5k":
        x, y = _read_mnist_5k()
        used = set(manifest.get("data", {}).get("dataset_index", []))
        keep = torch.tensor([i for i in range(len(y)) if i not in used], dtype=torch.long)
        if len(keep) < 100:
            return None
        return Split(x[keep], y[keep], x[:0], y[:0], [str(i) for i in range(10)], "mnist_5k (not evaluated)")
    if kind in ("mnist", "fashion_mnist", "cifar10", "cifar100") and data.get("split", "test") == "test":
        from weakspot.robustify.data import _from_dataset

        x, y, names = _from_dataset(kind, data.get("root"), "train", None)
        return Split(x, y, x[:0], y[:0], names, f"{kind} train split")
    return None


class _OnPreprocessed(nn.Module):
    """Front-end + classifier on *preprocessed* input (what the engine feeds a TorchScript
    model): undo the normalisation, enhance in [0, 1], normalise again, classify."""

    def __init__(self, front_end: nn.Module, classifier: nn.Module, mean, std):
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


def before_after(before_dir: Path, after_dir: Path, class_names: list[str]) -> pd.DataFrame:
    """Accuracy per condition and class (``cls = "all"`` for all images) before/after."""
    from weakspot.evaluate.store import ResultsStore

    rows = []
    for tag, d in (("before", before_dir), ("after", after_dir)):
        p = ResultsStore(d).predictions()
        p = p[p.label >= 0]
        a = p.groupby("condition_id").correct1.agg(["mean", "size"]).reset_index().assign(cls="all")
        c = p.groupby(["condition_id", "label"]).correct1.agg(["mean", "size"]).reset_index()
        c["cls"] = [class_names[i] if 0 <= i < len(class_names) else str(i) for i in c.label]
        for df in (a, c.drop(columns="label")):
            rows.append(df.assign(when=tag))
    t = pd.concat(rows).pivot_table(index=["condition_id", "cls"], columns="when", values="mean").reset_index()
    t["gain"] = t["after"] - t["before"]
    return t


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
    progress: bool = True,
    report: bool = True,
    log=print,
) -> dict[str, Any]:
    """Diagnose ``run_dir``, train the fix, re-run the same sweep, write before/after."""
    from weakspot.evaluate.config import parse_config
    from weakspot.evaluate.engine import run_sweep
    from weakspot.evaluate.store import ResultsStore
    from weakspot.models import load_model
    from weakspot.robustify.enhance import EnhanceConfig, train_enhancer
    from weakspot.robustify.train import TrainConfig, train_classifier

    if method not in ("auto", "robust", "frontend"):
        raise InvalidParameterError("--method", method, "auto | robust | frontend")
    run_dir = Path(run_dir)
    store = ResultsStore(run_dir)
    manifest = store.manifest()
    if manifest.get("status") not in (None, "complete", "done", "finished"):
        log(f"note: run status is '{manifest.get('status')}'")
    out = Path(out_dir) if out_dir is not None else run_dir / FIX_DIRNAME
    weak = find_weaknesses(run_dir, top=top)
    if not weak:
        raise WeakspotError(f"no degradation in {run_dir} costs 5 accuracy points or more: nothing to fix")
    for w in weak:
        log(f"weakness: {w.degradation} ({w.axis} {w.low:g}..{w.high:g}): accuracy {100 * w.clean_acc:.1f}% → "
            f"{100 * w.worst_acc:.1f}% at {w.worst_condition}")
    cfg = parse_config(manifest["config"], f"{run_dir}/manifest.json")
    mc = cfg.model
    model = load_model(mc.name, source=mc.source, weights=mc.weights, num_classes=mc.num_classes,
                       class_names=mc.class_names, preprocess=mc.preprocess)
    split = _training_split(manifest, train_data, seed)
    chosen = choose_method(model, split is not None) if method == "auto" else method
    if split is not None and train_limit is not None and train_limit < len(split.train_labels):
        keep = split_indices(split.train_labels, train_limit / len(split.train_labels), seed)[1]
        split = Split(split.train_images[keep], split.train_labels[keep], split.test_images, split.test_labels,
                      split.class_names, split.name)
    if split is None:
        raise DataError(
            f"no labelled training images for the {chosen} fix of {run_dir}: give --train-data KIND[:ROOT] "
            "(an open_dataset kind, e.g. mnist:/data/mnist or imagefolder:/data/train)"
        )
    log(f"fix: {chosen} on {split.train_images.shape[0]} training images ({split.name})")
    mix = RandomDegradation([w.level_range() for w in weak], p_clean=p_clean)
    t0 = time.perf_counter()
    pre = model.preprocess_config
    example = pre(torch.rand(2, split.channels, *split.train_images.shape[-2:]))
    if chosen == "robust":
        net = _Preprocessed(model)
        tcfg = TrainConfig(strategy="constant", epochs=epochs, lr=1e-3, seed=seed)
        ckpt = out / "checkpoint"
        try:  # resume an interrupted fix; a checkpoint of different settings is replaced
            hist = train_classifier(net, split.train_images, split.train_labels, mix, tcfg,
                                    checkpoint_dir=ckpt, progress=progress, desc="fix").history
        except ConfigError:
            shutil.rmtree(ckpt)
            hist = train_classifier(net, split.train_images, split.train_labels, mix, tcfg,
                                    checkpoint_dir=ckpt, progress=progress, desc="fix").history
        export = model.module
    else:
        clf = _Preprocessed(model)
        res = train_enhancer(clf, split.train_images, split.train_labels, mix,
                             EnhanceConfig(epochs=epochs, p_clean=p_clean, seed=seed), progress=progress)
        hist = res.history
        export = _OnPreprocessed(res.front_end, model.module, pre.mean, pre.std)
    train_s = time.perf_counter() - t0
    ts = out / "fixed_model.ts"
    _export(export, example, ts)
    new = manifest["config"].copy()
    new["model"] = {**new["model"], "name": str(ts.resolve()), "source": "torchscript", "weights": None,
                    "class_names": store.classes(), "num_classes": len(store.classes()),
                    "preprocess": pre.to_dict()}
    new["name"] = f"{manifest.get('name') or run_dir.name} (fixed: {chosen})"
    log("re-running the same sweep with the fixed model …")
    if (out / "run").exists():  # predictions of an earlier fixed model under the same file name
        shutil.rmtree(out / "run")
    run_sweep(new, out / "run", progress=progress)
    ba = before_after(run_dir, out / "run", store.classes())
    summary = {
        "method": chosen,
        "weaknesses": [{**w.__dict__, "drop": w.drop} for w in weak],
        "training_data": split.describe() | {"name": split.name},
        "train_range": mix.name,
        "p_clean": p_clean,
        "epochs": epochs,
        "history": hist,
        "train_seconds": train_s,
        "fixed_model": str(ts),
        "after_run": str(out / "run"),
        "before_after": json.loads(ba.to_json(orient="records")),
    }
    atomic_write_json(out / "fix.json", summary)
    overall = ba[ba.cls == "all"].set_index("condition_id")[["before", "after", "gain"]] * 100
    atomic_write_bytes(out / "before_after.md", (_md(overall) + "\n").encode())
    summary["table"] = overall
    if report and out == run_dir / FIX_DIRNAME:
        from weakspot.report import write_report

        import weakspot.robustify.report_section  # noqa: F401  (registers the section)

        summary["report"] = str(write_report(run_dir))
    return summary


def _md(t: pd.DataFrame) -> str:
    from weakspot.robustify.grid import markdown_table

    t = t.copy()
    t.index.name = "condition"
    return markdown_table(t)


def load_fix(run_dir: str | Path) -> dict | None:
    """``RUN_DIR/fix/fix.json`` or None."""
    p = Path(run_dir) / FIX_DIRNAME / "fix.json"
    return json.loads(p.read_text()) if p.is_file() else None

