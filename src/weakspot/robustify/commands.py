"""The command layer of ``weakspot robustify``, ``weakspot enhance`` and ``weakspot fix``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from weakspot.errors import InvalidParameterError

__all__ = ["robustify_command", "enhance_command", "resolve_classifier", "validated"]


def validated(cls, **kwargs):
    """``cls(**kwargs)`` for a pydantic config; a validation error names the CLI option."""
    from pydantic import ValidationError

    try:
        return cls(**kwargs)
    except ValidationError as exc:
        e = exc.errors()[0]
        name = str(e["loc"][0]) if e["loc"] else "option"
        raise InvalidParameterError(
            f"--{name.replace('_', '-')} ({name})", e.get("input"), e["msg"].removeprefix("Value error, ")
        ) from None


def _print_table(console, table, title: str) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column(str(table.index.name or ""), overflow="fold")
    for c in table.columns:
        t.add_column(str(c), justify="right", overflow="fold")
    for idx, row in table.iterrows():
        t.add_row(str(idx), *(f"{v:.1f}" for v in row.tolist()))
    console.print(t)


def _device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidParameterError("--device", device, "cpu (no CUDA device is available here)")
    return device


def robustify_command(
    *,
    data: str,
    root: str | None,
    out: Path,
    strategies: list[str],
    degrade: list[str],
    tests: list[str],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    per_degradation: bool,
    resume: bool,
    progress: bool,
    device: str,
    limit: int | None,
    console,
    model: str | None = None,
    labels: str = "labels",
    temperature: float = 2.0,
    test_limit: int | None = None,
) -> dict[str, Any]:
    from weakspot.robustify.data import load_split
    from weakspot.robustify.run import robustify_job
    from weakspot.robustify.train import TrainConfig

    split = load_split(data, root=root, seed=seed, limit=limit, test_limit=test_limit)
    console.print(f"data: {split.describe()}")
    cfg = validated(
        TrainConfig,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        labels=labels,
        temperature=temperature,
    )
    pretrained = None
    if model is not None:
        pretrained = _loaded_module(model, split)
        console.print(f"model: {model} (fine-tuned by every strategy; the clean row is the model as loaded)")
    summary = robustify_job(
        split,
        out,
        strategies=strategies,
        train_specs=degrade,
        test_specs=tests,
        per_degradation=per_degradation,
        config=cfg,
        progress=progress,
        resume=resume,
        device=_device(device),
        log=console.print,
        pretrained=pretrained,
    )
    _print_table(console, summary["table"], "accuracy (%) — trained on (rows) × tested on (columns)")
    if summary.get("study_markdown"):
        console.print(f"paired verdicts and strategy tests: {out / 'study.md'}")
    console.print(
        f"wrote {out / 'grid.md'}, {out / 'grid.parquet'}, checkpoints under {out / 'models'} "
        f"({summary['seconds']:.0f} s)"
    )
    return summary


def resolve_classifier(
    spec: str, split, out: Path, *, epochs: int, seed: int, progress: bool, device: str, console
):
    """``small-cnn`` (train a clean SmallCNN, cached under ``out``), a ``last.pt`` checkpoint
    of ``weakspot robustify``, or a model name for :func:`weakspot.models.load_model`."""
    from weakspot.robustify.run import load_small_cnn, train_or_load_clean
    from weakspot.robustify.train import TrainConfig

    if spec in ("small-cnn", "small_cnn"):
        model, _ = train_or_load_clean(
            split,
            out,
            TrainConfig(epochs=epochs, seed=seed),
            progress=progress,
            device=device,
            log=console.print,
        )
        return model, "small-cnn (clean-trained here)"
    if spec.endswith(".pt") and Path(spec).is_file():
        return load_small_cnn(spec, split), spec
    return _loaded_module(spec, split), spec


def _loaded_module(spec: str, split) -> torch.nn.Module:
    """A model name/file for :func:`weakspot.models.load_model` as a trainable module on images in [0, 1]."""
    from weakspot.models import load_model

    loaded = load_model(spec)
    if loaded.num_classes != split.num_classes:
        raise InvalidParameterError(
            "--model", spec, f"a model with {split.num_classes} classes for '{split.name}'"
        )
    if not loaded.differentiable:
        raise InvalidParameterError("--model", spec, "a PyTorch model (ONNX models cannot be trained)")
    return _Wrapped(loaded)


class _Wrapped(torch.nn.Module):
    """A :class:`~weakspot.models.LoadedModel` as a module on images in [0, 1] (preprocessing inside)."""

    def __init__(self, loaded):
        super().__init__()
        self.loaded = loaded
        self.module = loaded.module

    def forward(self, x):
        return self.module(self.loaded.preprocess_config(x))


def enhance_command(
    *,
    data: str,
    root: str | None,
    out: Path,
    classifier: str,
    degrade: list[str],
    tests: list[str],
    epochs: int,
    classifier_epochs: int,
    kernel_size: int,
    seed: int,
    progress: bool,
    device: str,
    limit: int | None,
    console,
    labels: str = "labels",
    temperature: float = 2.0,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> dict[str, Any]:
    from weakspot.robustify.data import load_split
    from weakspot.robustify.enhance import EnhanceConfig
    from weakspot.robustify.run import enhance_job

    device = _device(device)
    cfg = validated(
        EnhanceConfig,
        epochs=epochs,
        kernel_size=kernel_size,
        seed=seed,
        labels=labels,
        temperature=temperature,
        batch_size=batch_size,
        lr=lr,
    )
    split = load_split(data, root=root, seed=seed, limit=limit)
    console.print(f"data: {split.describe()}")
    model, name = resolve_classifier(
        classifier,
        split,
        out,
        epochs=classifier_epochs,
        seed=seed,
        progress=progress,
        device=device,
        console=console,
    )
    summary = enhance_job(
        split,
        model,
        out,
        train_specs=degrade,
        test_specs=tests,
        config=cfg,
        classifier_name=name,
        progress=progress,
        device=device,
        log=console.print,
    )
    _print_table(console, summary["table"], f"accuracy (%) of {name} without / with the front-end")
    f = summary["flops_per_image"]
    console.print(
        f"FLOPs per image: front-end {f['front_end']:,} vs classifier {f['classifier']:,} "
        f"({100 * f['front_end'] / max(f['classifier'], 1):.1f}%)"
    )
    console.print(summary["paired_markdown"])
    console.print(f"wrote {out / 'enhance.md'}, {out / 'enhance.parquet'}, {out / 'front_end.pt'}")
    return summary


def fix_command(
    run_dir: Path,
    *,
    out,
    top,
    method,
    epochs,
    train_data,
    seed,
    progress,
    console,
    train_limit=None,
    allow_overlap: bool = False,
    labels: str = "labels",
    temperature: float = 2.0,
) -> dict[str, Any]:
    from rich.table import Table

    from weakspot.robustify.fix import fix_run, format_table

    s = fix_run(
        run_dir,
        out_dir=out,
        top=top,
        method=method,
        epochs=epochs,
        train_data=train_data,
        seed=seed,
        train_limit=train_limit,
        allow_overlap=allow_overlap,
        progress=progress,
        log=console.print,
        labels=labels,
        temperature=temperature,
    )
    t = format_table(s["table"])
    table = Table(
        title=f"top-1 accuracy before / after the {s['method']} fix (same images, paired)",
        title_justify="left",
    )
    table.add_column("condition", overflow="fold")
    for c in t.columns:
        table.add_column(
            str(c), justify="left" if c == "verdict" else "right", overflow="fold", no_wrap=c == "verdict"
        )
    for idx, row in t.iterrows():
        table.add_row(str(idx), *row.tolist())
    console.print(table)
    console.print(f"[bold]{s['summary'][0]}[/]")
    where = s.get("report") or (Path(out) if out else Path(run_dir) / "fix")
    console.print(f"fixed model: {s['fixed_model']}; before/after: {where}")
    return s
