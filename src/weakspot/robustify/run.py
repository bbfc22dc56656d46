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
from weakspot.robustify.enhance import (
    EnhanceConfig,
    EnhancedClassifier,
    clean_soft_targets,
    count_flops,
    train_enhancer,
)
from weakspot.robustify.grid import evaluate_grid, grid_table, markdown_table
from weakspot.robustify.mix import (
    Condition,
    LevelRange,
    RandomDegradation,
    SeverityRange,
    parse_condition,
    parse_specs,
)
from weakspot.robustify.nets import SmallCNN
from weakspot.robustify.study import (
    correctness,
    grid_from_correctness,
    level_kind,
    pairwise_table,
    study_markdown,
    verdict_table,
)
from weakspot.robustify.train import STRATEGIES, TrainConfig, load_checkpoint, train_classifier

__all__ = [
    "robustify_job",
    "enhance_job",
    "small_cnn_for",
    "train_or_load_clean",
    "DEFAULT_TRAIN",
    "DEFAULT_TESTS",
]

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


def _label(r: LevelRange | SeverityRange) -> str:
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
    if bool((split.train_labels < 0).any()):
        raise InvalidParameterError(
            "--model",
            None,
            "a trained model (--model NAME): these training images have no "
            "labels to train a SmallCNN from scratch",
        )
    cfg = base.model_copy(update={"strategy": "clean", "labels": "labels"})
    res = train_classifier(
        model,
        split.train_images,
        split.train_labels,
        RandomDegradation([]),
        cfg,
        checkpoint_dir=out_dir / "models" / "clean",
        resume=resume,
        progress=progress,
        device=device,
        desc="clean",
    )
    log(
        f"clean: trained {len(res.history) - res.resumed_from_epoch} epoch(s), resumed from {res.resumed_from_epoch}"
    )
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
        raise InvalidParameterError(
            "--degrade",
            list(train_specs),
            "at least one training degradation, e.g. gaussian_blur:sigma_px=0.4..1.0",
        )
    tests = [parse_condition(t) for t in test_specs]
    t0 = time.perf_counter()
    models: dict[str, nn.Module] = {}
    history: dict[str, Any] = {}
    mix_label = "mix" if len(ranges) > 1 else (_label(ranges[0]) if ranges else "none")

    if pretrained is None:
        clean, hist = train_or_load_clean(
            split, out_dir, base, progress=progress, resume=resume, device=device, log=log
        )
    else:
        clean, hist = pretrained.to(device).eval(), []
    models["clean"] = clean
    history["clean"] = {"strategy": "clean", "train": "clean", "history": hist}
    soft = None
    if base.labels == "clean-predictions":  # label-free: the clean model's soft predictions, computed once
        soft = clean_soft_targets(clean, split.train_images, base.temperature, device=device)
        log(
            f"label-free: targets are the clean model's predictions on the clean images (T = {base.temperature:g})"
        )

    jobs: list[tuple[str, str, list[LevelRange | SeverityRange]]] = []
    if per_degradation and len(ranges) > 1 and "constant" in strategies:
        jobs += [("constant", _label(r), [r]) for r in ranges]
    jobs += [(s, mix_label, ranges) for s in strategies if s != "clean"]
    for strategy, label, rs in jobs:
        mid = _model_id(strategy, label)
        mix = RandomDegradation(rs)
        if strategy == "transfer":
            model = copy.deepcopy(clean)
            cfg = base.model_copy(
                update={"strategy": "transfer", "epochs": transfer_epochs or max(1, base.epochs // 2)}
            )
        else:
            model = small_cnn_for(split, base.seed) if pretrained is None else copy.deepcopy(clean)
            cfg = base.model_copy(update={"strategy": strategy})
        res = train_classifier(
            model,
            split.train_images,
            split.train_labels,
            mix,
            cfg,
            checkpoint_dir=out_dir / "models" / mid,
            resume=resume,
            progress=progress,
            device=device,
            desc=mid,
            soft_targets=soft,
        )
        log(
            f"{mid}: {len(res.history) - res.resumed_from_epoch} epoch(s) trained, resumed from {res.resumed_from_epoch}"
        )
        models[mid] = res.model
        history[mid] = {"strategy": strategy, "train": mix.name, "history": res.history}

    # one pass over (test condition × model): per-image correctness, from which the grid is counted
    targets, metric = split.test_labels, "top-1 accuracy"
    if bool(
        (split.test_labels < 0).any()
    ):  # unlabelled test photos: agreement with the clean model, clean image
        from weakspot.robustify.grid import predict

        targets = predict(models["clean"], split.test_images, device=device)
        metric = "agreement with the clean model's prediction on the clean image (test images without labels)"
        log(f"metric: {metric}")
    correct = correctness(models, split.test_images, targets, tests, seed=base.seed, device=device)
    grid = grid_from_correctness(correct, targets, split.class_names)
    table = grid_table(grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_parquet(out_dir / "grid.parquet", grid)
    kinds = {c.spec: level_kind(c, ranges) for c in tests}
    lines = markdown_table(table).split("\n")
    lines.insert(2, "| *level* | " + " | ".join(f"*{kinds[c]}*" for c in table.columns) + " |")
    md = "\n".join(lines)
    atomic_write_bytes(out_dir / "grid.md", (md + "\n").encode())
    study_md = None
    if any(c.range is None for c in tests) and len(tests) > 1:
        clean_spec = next(c.spec for c in tests if c.range is None)
        verdicts = verdict_table(correct, kinds, clean=clean_spec)
        pairs = pairwise_table(dict(correct), kinds)
        _write_parquet(out_dir / "verdicts.parquet", verdicts)
        _write_parquet(out_dir / "pairs.parquet", pairs)
        study_md = study_markdown(verdicts, pairs)
        atomic_write_bytes(out_dir / "study.md", study_md.encode())
    summary = {
        "kind": "robustify",
        "data": split.describe(),
        "train_degradations": [r.label for r in ranges],
        "tests": [c.spec for c in tests],
        "config": base.model_dump(mode="json"),
        "models": history,
        "accuracy_percent": json.loads(table.to_json(orient="index")),
        "level_kinds": kinds,
        "metric": metric,
        "seconds": time.perf_counter() - t0,
        "device": str(device),
        "torch_threads_training": base.threads,
        "torch_threads_evaluation": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    summary["table"] = table
    summary["markdown"] = md
    summary["study_markdown"] = study_md
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
    label_free = cfg.labels == "clean-predictions"
    if not label_free and bool((split.train_labels < 0).any()):
        raise InvalidParameterError(
            "--labels", "labels", "clean-predictions: these training images have no labels"
        )
    res = train_enhancer(
        classifier,
        split.train_images,
        None if label_free else split.train_labels,
        RandomDegradation(ranges),
        cfg,
        progress=progress,
        device=device,
    )
    train_s = time.perf_counter() - t0
    front = res.front_end  # the student: directly optimised; the EMA teacher lags on short schedules
    with_fe = EnhancedClassifier(front, classifier)
    paired = before_after(
        classifier, with_fe, split.test_images, split.test_labels, tests, seed=cfg.seed, device=device
    )
    paired_md = before_after_markdown(paired)
    if bool((split.test_labels < 0).any()):
        # unlabelled test photos: the grid is the agreement with the clean prediction
        table = pd.DataFrame(
            {
                "without": paired[paired.metric == "agreement"].set_index("test")["before"],
                "with front-end": paired[paired.metric == "agreement"].set_index("test")["after"],
            }
        )
        df = paired
    else:
        df = evaluate_grid(
            {"without": classifier, "with front-end": with_fe},
            split.test_images,
            split.test_labels,
            tests,
            class_names=split.class_names,
            seed=cfg.seed,
            device=device,
        )
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
    atomic_write_bytes(out_dir / "enhance.md", (md + "\n" + flops_md + "\n" + paired_md).encode())
    _write_parquet(out_dir / "before_after.parquet", paired)
    buf = __import__("io").BytesIO()
    torch.save(
        {
            "format": 1,
            "front_end": front.state_dict(),
            "config": cfg.model_dump(mode="json"),
            "channels": split.channels,
        },
        buf,
    )
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
        "labels": cfg.labels,
        "temperature": cfg.temperature,
        "before_after": json.loads(paired.to_json(orient="records")),
        "train_seconds": train_s,
        "seconds": time.perf_counter() - t0,
        "device": str(device),
    }
    atomic_write_json(out_dir / "enhance.json", summary)
    summary["table"] = table
    summary["markdown"] = md + "\n" + flops_md
    summary["paired_markdown"] = paired_md
    return summary


@torch.inference_mode()
def before_after(
    before: nn.Module,
    after: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    tests: Sequence[Condition],
    *,
    seed: int = 0,
    device="cpu",
    batch_size: int = 32,
) -> pd.DataFrame:
    """Paired before/after per test condition on the same degraded images.

    Two metrics: ``agreement`` — the prediction equals ``before``'s prediction on the *clean*
    image (needs no label), on every image; ``top-1`` — against the label, on the images with a
    label (``>= 0``). Each row: ``n``, ``before``/``after`` (%), paired change with Newcombe's
    interval (points), exact McNemar ``p``, Holm-adjusted over all rows of the same metric
    (``p_holm``), and ``verdict`` (``better`` / ``worse`` / ``not significant`` after Holm).
    """
    from weakspot.analysis.paired import compare_paired, holm
    from weakspot.robustify.grid import degrade_test_set, predict

    ref = predict(before, images, batch_size=batch_size, device=device)
    lab = labels.cpu()
    has = lab >= 0
    rows = []
    for cond in tests:
        x = degrade_test_set(images, cond, seed)
        pb = predict(before, x, batch_size=batch_size, device=device)
        pa = predict(after, x, batch_size=batch_size, device=device)
        for metric, target, sel in (("agreement", ref, torch.ones_like(has)), ("top-1", lab, has)):
            if int(sel.sum()) == 0:
                continue
            c = compare_paired((pb == target)[sel].numpy(), (pa == target)[sel].numpy())
            rows.append(
                {
                    "test": cond.spec,
                    "metric": metric,
                    "n": c["n"],
                    "before": 100 * c["acc_a"],
                    "after": 100 * c["acc_b"],
                    "change": 100 * c["diff"],
                    "change_lo": 100 * c["diff_lo"],
                    "change_hi": 100 * c["diff_hi"],
                    "p": c["p"],
                }
            )
    df = pd.DataFrame(rows)
    df["p_holm"] = float("nan")
    for m in df["metric"].unique():
        sel = df["metric"] == m
        df.loc[sel, "p_holm"] = holm(df.loc[sel, "p"].to_numpy())
    df["verdict"] = [
        "not significant" if ph >= 0.05 else ("better" if ch > 0 else "worse")
        for ph, ch in zip(df["p_holm"], df["change"], strict=True)
    ]
    return df


def before_after_markdown(df: pd.DataFrame) -> str:
    """The :func:`before_after` table as markdown, one block per metric."""
    out = []
    for m in df["metric"].unique():
        d = df[df["metric"] == m]
        what = (
            "agreement with the frozen model's prediction on the clean image (no labels needed)"
            if m == "agreement"
            else "top-1 accuracy on the labelled test images"
        )
        out.append(
            f"\n{m}: {what}; paired on the same degraded images, Newcombe 95% interval, exact McNemar, "
            f"Holm over the {len(d)} conditions.\n"
        )
        out.append(
            "| test | n | before % | after % | change, points [95% CI] | McNemar p | Holm p | verdict |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for r in d.itertuples(index=False):
            out.append(
                f"| {r.test} | {r.n} | {r.before:.1f} | {r.after:.1f} | {r.change:+.1f} "
                f"[{r.change_lo:+.1f}, {r.change_hi:+.1f}] | {r.p:.2g} | {r.p_holm:.2g} | {r.verdict} |"
            )
    return "\n".join(out) + "\n"


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

        raise ModelLoadError(
            f"{path} does not fit a SmallCNN for {split.name}: {str(exc).splitlines()[0]}"
        ) from None
    return model.eval()
