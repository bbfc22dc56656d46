"""End-to-end jobs behind ``weakspot robustify`` and ``weakspot enhance``.

``robustify_job`` trains the clean baseline and one model per (strategy, training
degradation), evaluates the train × test grid and writes to ``out_dir``::

    models/<model_id>/last.pt      checkpoint after every epoch (resumable)
    grid.parquet                   long table: model, test, cls, n, correct, accuracy, ci95
    grid.md                        models × test conditions, accuracy in %
    summary.json                   data, configs, per-epoch history, seconds

``enhance_job`` trains the front-end in front of a frozen classifier and
evaluates with and without it per condition and per class (``enhance.parquet``,
``enhance.md``, ``front_end.pt``, ``enhance.json``).
"""

from __future__ import annotations

import copy
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from weakspot.errors import InvalidParameterError
from weakspot.evaluate.store import atomic_write_bytes, atomic_write_json
from weakspot.random import keyed_seed
from weakspot.robustify.data import Split
from weakspot.robustify.enhance import EnhanceConfig, EnhancedClassifier, count_flops, train_enhancer
from weakspot.robustify.grid import evaluate_grid, grid_table, markdown_table
from weakspot.robustify.mix import Condition, LevelRange, RandomDegradation, parse_condition, parse_specs
from weakspot.robustify.nets import SmallCNN
from weakspot.robustify.train import STRATEGIES, TrainConfig, load_checkpoint, train_classifier

__all__ = ["robustify_job", "enhance_job", "small_cnn_for", "train_or_load_clean", "DEFAULT_TRAIN", "DEFAULT_TESTS"]

#: Training degradations of the recorded experiment (strong ends of the tests included).
DEFAULT_TRAIN = ("gaussian_noise:variance=0.001..0.1", "gaussian_blur:sigma_px=0.4..2.0")
#: Test conditions of the recorded experiment.
DEFAULT_TESTS = (
    "clean",
    "gaussian_blur:sigma_px=1.0",
    "gaussian_blur:sigma_px=2.0",
    "gaussian_noise:variance=0.05",
    "gaussian_noise:variance=0.1",
)


def small_cnn_for(split: Split, seed: int = 0) -> SmallCNN:
    """A freshly initialised :class:`SmallCNN` for the split (weights keyed on ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(keyed_seed(seed, "small-cnn-init"))
        return SmallCNN(split.channels, split.num_classes)


def _model_id(strategy: str, train_label: str) -> str:
    return strategy if strategy == "clean" else f"{strategy}-{train_label}"


def _label(r: LevelRange) -> str:
    return r.name.replace("/", ".")


def train_or_load_clean(
    split: Split,
    out_dir: Path,
    base: TrainConfig,
    *,
    progress: bool = True,
    resume: bool = True,
    device="cpu",
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, list[dict]]:
    """The clean-trained :class:`SmallCNN` under ``out_dir/models/clean`` (trained or resumed)."""
    model = small_cnn_for(split, base.seed)
    cfg = base.model_copy(update={"strategy": "clean"})
    res = train_classifier(
        model, split.train_images, split.train_labels, RandomDegradation([]), cfg,
        checkpoint_dir=out_dir / "models" / "clean", resume=resume, progress=progress, device=device, desc="clean",
    )
    log(f"clean: trained {len(res.history) - res.resumed_from_epoch} epoch(s), resumed from {res.resumed_from_epoch}")
    return res.model, res.history


def robustify_job(
    split: Split,
    out_dir: str | Path,
    *,
    strategies: Sequence[str] = ("constant", "incremental", "transfer"),
    train_specs: Sequence[str] = DEFAULT_TRAIN,
    test_specs: Sequence[str] = DEFAULT_TESTS,
    per_degradation: bool = True,
    config: TrainConfig | None = None,
    transfer_epochs: int | None = None,
    progress: bool = True,
    resume: bool = True,
    device="cpu",
    log: Callable[[str], None] = print,
    pretrained: nn.Module | None = None,
) -> dict[str, Any]:
    """Train the clean baseline and the robust models, evaluate the grid, write results.

    ``pretrained`` (a module on images in [0, 1], e.g. a loaded model with its
    preprocessing): the ``clean`` row is that model as it is, and every strategy
    fine-tunes a copy of it instead of training a :class:`SmallCNN` from scratch.

    ``train_specs`` (text forms of :mod:`weakspot.robustify.mix`) make one training
    mix (each image gets one of them at a random level); with ``per_degradation``
    the ``constant`` strategy also trains one model per single degradation (the
    "train degradation" axis of the grid). ``transfer`` starts from the clean model.
    Returns the summary dict (also written to ``summary.json``).
    """
    out_dir = Path(out_dir)
    base = config or TrainConfig()
    for s in strategies:
        if s not in STRATEGIES:
            raise InvalidParameterError("--strategy", s, " | ".join(STRATEGIES))
    ranges = [r for t in train_specs for r in parse_specs(t)]
    if not ranges and any(s != "clean" for s in strategies):
        raise InvalidParameterError("--degrade", list(train_specs), "at least one training degradation, e.g. gaussian_blur:sigma_px=0.4..1.0")
    tests = [parse_condition(t) for t in test_specs]
    t0 = time.perf_counter()
    models: dict[str, nn.Module] = {}
    history: dict[str, Any] = {}
    mix_label = "mix" if len(ranges) > 1 else (_label(ranges[0]) if ranges else "none")

    if pretrained is None:
        clean, hist = train_or_load_clean(split, out_dir, base, progress=progress, resume=resume, device=device,
                                          log=log)
    else:
        clean, hist = pretrained.to(device).eval(), []
    models["clean"] = clean
    history["clean"] = {"strategy": "clean", "train": "clean", "history": hist}

    jobs: list[tuple[str, str, list[LevelRange]]] = []
    if per_degradation and len(ranges) > 1 and "constant" in strategies:
        jobs += [("constant", _label(r), [r]) for r in ranges]
    jobs += [(s, mix_label, ranges) for s in strategies if s != "clean"]
    for strategy, label, rs in jobs:
        mid = _model_id(strategy, label)
        mix = RandomDegradation(rs)
        if strategy == "transfer":
            model = copy.deepcopy(clean)
            cfg = base.model_copy(update={"strategy": "transfer", "epochs": transfer_epochs or max(1, base.epochs // 2)})
        else:
            model = small_cnn_for(split, base.seed) if pretrained is None else copy.deepcopy(clean)
            cfg = base.model_copy(update={"strategy": strategy})
        res = train_classifier(
            model, split.train_images, split.train_labels, mix, cfg,
            checkpoint_dir=out_dir / "models" / mid, resume=resume, progress=progress, device=device, desc=mid,
        )
        log(f"{mid}: {len(res.history) - res.resumed_from_epoch} epoch(s) trained, resumed from {res.resumed_from_epoch}")
        models[mid] = res.model
        history[mid] = {"strategy": strategy, "train": mix.name, "history": res.history}

    grid = evaluate_grid(models, split.test_images, split.test_labels, tests, class_names=split.class_names,
                         seed=base.seed, device=device)
    table = grid_table(grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_parquet(out_dir / "grid.parquet", grid)
    md = markdown_table(table)
    atomic_write_bytes(out_dir / "grid.md", (md + "\n").encode())
    summary = {
        "kind": "robustify",
        "data": split.describe(),
        "train_degradations": [r.label for r in ranges],
        "tests": [c.spec for c in tests],
        "config": base.model_dump(mode="json"),
        "models": history,
        "accuracy_percent": json.loads(table.to_json(orient="index")),
        "seconds": time.perf_counter() - t0,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    summary["table"] = table
    summary["markdown"] = md
    return summary


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def enhance_job(
    split: Split,
    classifier: nn.Module,
    out_dir: str | Path,
    *,
    train_specs: Sequence[str] = DEFAULT_TRAIN,
    test_specs: Sequence[str] = DEFAULT_TESTS,
    config: EnhanceConfig | None = None,
    classifier_name: str = "classifier",
    progress: bool = True,
    device="cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the enhancement front-end before the frozen ``classifier`` (images in [0, 1]
    → logits) and evaluate with/without it per condition and class."""
    out_dir = Path(out_dir)
    cfg = config or EnhanceConfig()
    ranges = [r for t in train_specs for r in parse_specs(t)]
    if not ranges:
        raise InvalidParameterError("--degrade", list(train_specs), "at least one training degradation")
    tests: list[Condition] = [parse_condition(t) for t in test_specs]
    t0 = time.perf_counter()
    res = train_enhancer(classifier, split.train_images, split.train_labels, RandomDegradation(ranges), cfg,
                         progress=progress, device=device)
    train_s = time.perf_counter() - t0
    front = res.front_end  # the student: directly optimised; the EMA teacher lags on short schedules
    with_fe = EnhancedClassifier(front, classifier)
    df = evaluate_grid({"without": classifier, "with front-end": with_fe}, split.test_images, split.test_labels,
                       tests, class_names=split.class_names, seed=cfg.seed, device=device)
    table = grid_table(df).T
    table.columns.name = None
    table.index.name = "test condition"
    table["gain (points)"] = table["with front-end"] - table["without"]
    x = (split.test_images[:1].float() / 255).to(device)
    flops_cls = count_flops(classifier, x)
    flops_fe = count_flops(front.enhance, x)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_parquet(out_dir / "enhance.parquet", df)
    md = markdown_table(table)
    flops_md = (
        f"\nFLOPs per image ({tuple(x.shape[1:])}): front-end {flops_fe:,}, classifier {flops_cls:,} "
        f"(front-end = {100 * flops_fe / max(flops_cls, 1):.1f}% of the classifier)\n"
    )
    atomic_write_bytes(out_dir / "enhance.md", (md + "\n" + flops_md).encode())
    buf = __import__("io").BytesIO()
    torch.save({"format": 1, "front_end": front.state_dict(), "config": cfg.model_dump(mode="json"),
                "channels": split.channels}, buf)
    atomic_write_bytes(out_dir / "front_end.pt", buf.getvalue())
    summary = {
        "kind": "enhance",
        "classifier": classifier_name,
        "data": split.describe(),
        "train_degradations": [r.label for r in ranges],
        "tests": [c.spec for c in tests],
        "config": cfg.model_dump(mode="json"),
        "history": res.history,
        "accuracy_percent": json.loads(table.to_json(orient="index")),
        "flops_per_image": {"front_end": flops_fe, "classifier": flops_cls},
        "train_seconds": train_s,
        "seconds": time.perf_counter() - t0,
        "device": str(device),
    }
    atomic_write_json(out_dir / "enhance.json", summary)
    summary["table"] = table
    summary["markdown"] = md + "\n" + flops_md
    return summary


def load_small_cnn(path: str | Path, split: Split) -> SmallCNN:
    """A :class:`SmallCNN` from a ``last.pt`` checkpoint written by ``weakspot robustify``."""
    state = load_checkpoint(path)
    model = small_cnn_for(split)
    if state.get("config", {}).get("strategy") == "transfer":
        from weakspot.robustify.nets import replace_head

        replace_head(model, tuple(state["config"].get("transfer_hidden", (256, 512))))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        from weakspot.errors import ModelLoadError

        raise ModelLoadError(f"{path} does not fit a SmallCNN for {split.name}: {str(exc).splitlines()[0]}") from None
    return model.eval()
