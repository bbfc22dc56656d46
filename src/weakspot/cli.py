"""The ``weakspot`` command line.

Each command is a thin layer over the Python API of its layer; user mistakes
(:class:`~weakspot.errors.WeakspotError`) print one clear message and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(
    name="weakspot",
    help="Find where an image classifier breaks under real image-system degradations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "weakspot[ray]" keeps its brackets
)
console = Console()
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        from weakspot import __version__

        console.print(f"weakspot {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="print the version and exit", is_eager=True, callback=_version_callback
    ),
) -> None:
    """Find where an image classifier breaks under real image-system degradations."""


def _set_threads(threads: int | None) -> None:
    """Set torch's CPU thread count when the user asked for one (``--threads``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _parse_params(items: list[str] | None) -> dict[str, str]:
    from weakspot.errors import InvalidParameterError

    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise InvalidParameterError("--param", item, "NAME=VALUE, e.g. --param sigma_px=2")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command("list")
def list_cmd(
    pattern: str | None = typer.Argument(None, help="glob on names, e.g. 'imagenet_c/*'"),
    family: str | None = typer.Option(None, help="only this family (camera, noise, blur, …)"),
    severities: bool = typer.Option(True, "--severities/--no-severities", help="show severity tables"),
) -> None:
    """List registered degradations with parameters, units and severity tables."""
    from rich.table import Table

    from weakspot.degrade import list_specs

    specs = list_specs(pattern, family)
    if not specs:
        err_console.print(f"no degradation matches {pattern or ''} {family or ''}".strip(), markup=False)
        raise typer.Exit(1)
    for spec in specs:
        t = Table(title=f"[bold]{spec.name}[/] ({spec.family}) — {spec.summary}", title_justify="left")
        t.add_column("parameter")
        t.add_column("unit")
        t.add_column("valid")
        t.add_column("default")
        if severities:
            for lvl in sorted(spec.severities):
                t.add_column(f"sev {lvl}")
        for p in spec.params:
            row = [
                p.name + (" (x-axis)" if p.name == spec.axis else ""),
                p.unit,
                p.valid_range(),
                str(p.default),
            ]
            if severities:
                row += [str(spec.severities[lvl].get(p.name, "")) for lvl in sorted(spec.severities)]
            t.add_row(*row)
        console.print(t)
    console.print(f"{len(specs)} degradations")


@app.command("degrade")
def degrade_cmd(
    src: Path = typer.Argument(..., help="input image file"),
    dst: Path = typer.Argument(..., help="output image file (PNG recommended)"),
    op: str = typer.Option(..., "--op", help="degradation name (see 'weakspot list')"),
    param: list[str] | None = typer.Option(None, "--param", help="NAME=VALUE, repeatable"),
    severity: int | None = typer.Option(None, "--severity", help="severity level 1–5"),
    seed: int = typer.Option(0, help="random seed (same seed → same bytes)"),
) -> None:
    """Apply one degradation to one image file."""
    from weakspot.data.imageio import load_image, save_image
    from weakspot.degrade import get_degradation

    deg = get_degradation(op, severity=severity, **_parse_params(param))
    img = load_image(src).unsqueeze(0)
    out = deg(img, generator=seed)
    save_image(out[0], dst)
    console.print(f"wrote {dst} ({op}: {deg.params})")


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="run config (.yaml/.toml): model, data, conditions, seed"),
    out: str = typer.Option(..., "--out", "-o", help="run directory (resumed if it holds the same run)"),
    workers: int | None = typer.Option(None, help="data-loading processes (overrides the config)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar with ETA"),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="'local' (this machine) or 'ray' (a Ray cluster; pip install 'weakspot[ray]')",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray cluster HOST:PORT, ray://HOST:10001 or "
        "'auto' (--engine ray; default: RAY_ADDRESS or a local cluster)",
    ),
    per_class: int | None = typer.Option(None, "--per-class", help="seeded subset: N images per class"),
    limit: int | None = typer.Option(None, "--limit", help="seeded subset: N images in all"),
) -> None:
    """Evaluate a model on a data set under a sweep of conditions (resumable)."""
    from weakspot.evaluate.commands import run_command

    run_command(
        config,
        out,
        workers=workers,
        progress=progress,
        console=console,
        err_console=err_console,
        engine=engine,
        address=address,
        per_class=per_class,
        limit=limit,
    )


@app.command("check")
def check_cmd(
    config: Path = typer.Argument(..., help="run config (.yaml/.toml) to check before 'weakspot run'"),
    sample: int = typer.Option(64, "--sample", min=1, help="labelled images (seeded) for the clean top-1"),
    min_per_class: int = typer.Option(
        5, "--min-per-class", min=1, help="images per class per-class claims need"
    ),
    eta: bool = typer.Option(True, "--eta/--no-eta", help="time forward passes and degradations for an ETA"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the full report as JSON"),
) -> None:
    """Preflight: model, label mapping, clean top-1 on a sample, per-class counts, duplicates, ETA."""
    from weakspot.evaluate.check import preflight, print_check

    report = preflight(config, sample=sample, min_per_class=min_per_class, eta=eta)
    print_check(report, console)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(report.to_dict(), indent=1, default=str))
        console.print(f"report: {json_out}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="output directory"),
    quick: bool = typer.Option(False, "--quick", help="a tiny version (seconds), for smoke tests"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars with ETA"),
) -> None:
    """Run the bundled defaults end to end (EfficientNet-Lite0 + MNIST CNN), offline."""
    from weakspot.evaluate.commands import demo_command

    demo_command(out, quick=quick, progress=progress, console=console, err_console=err_console)


@app.command("breaking")
def breaking_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run: its model, images, labels and seed are reused"),
    degradation: str = typer.Argument(..., help="registered degradation with a continuous x-axis"),
    mild: float | None = typer.Option(None, help="mild end of the search (default: its severity-1 value)"),
    severe: float | None = typer.Option(None, help="severe end (default: its severity-5 value)"),
    tol: float | None = typer.Option(None, help="resolution in the axis unit (default: range/64)"),
    metric: str = typer.Option("p_clean", help="p_clean (mean clean-class probability) or accuracy"),
    per_class: int | None = typer.Option(None, "--per-class", min=1, help="at most N images per class"),
) -> None:
    """Adaptive breaking points: bisect a physical parameter per class (evaluates the model)."""
    from rich.table import Table

    from weakspot.evaluate.adaptive import adaptive_from_run

    df = adaptive_from_run(
        run_dir, degradation, per_class=per_class, mild=mild, severe=severe, tol=tol, metric=metric
    )
    a = df.attrs
    unit = f" {a['unit']}" if a["unit"] else ""
    t = Table(
        title=f"{degradation}: where {metric} halves ({a['axis']}, ±{a['tol']:.3g}{unit})",
        title_justify="left",
    )
    for c in ("class", "images", "clean", "breaks at", "status", "evaluations"):
        t.add_column(c)
    for r in df.itertuples():
        at = "—" if r.breaking_x != r.breaking_x else f"{r.breaking_x:.3g}{unit}"
        t.add_row(str(r.class_name), str(r.n_images), f"{r.clean_value:.2f}", at, r.status, str(r.n_evals))
    console.print(t)
    console.print(
        f"{a['adaptive_image_evaluations']} image evaluations instead of {a['grid_image_evaluations']} "
        f"for a {a['grid_points']}-point grid: {a['saved']} saved; written to {run_dir}/adaptive/"
    )


@app.command("envelope")
def envelope_cmd(
    run_dir: Path = typer.Argument(
        ..., help="a finished run with a 2-D camera grid (degradation: camera, grid: {A: [...], B: [...]})"
    ),
    share: float = typer.Option(
        0.9, "--share", min=0.01, max=1.0, help="share of the camera-reference accuracy to keep"
    ),
    refine: bool = typer.Option(
        False, "--refine/--no-refine", help="bisect each crossing between grid points (runs the model)"
    ),
    tol: float = typer.Option(0.125, "--tol", help="bisection resolution as a fraction of the grid step"),
) -> None:
    """The operating envelope: where the model keeps SHARE of its camera-reference accuracy."""
    from weakspot.analysis.envelope import operating_envelope, refine_envelope
    from weakspot.errors import DataError

    env = (
        refine_envelope(run_dir, share=share, tol_fraction=tol)
        if refine
        else operating_envelope(run_dir, share=share)
    )
    if env is None:
        raise DataError(
            f"{run_dir} has no 2-D camera grid; sweep two parameters of the 'camera' degradation "
            "(see examples/camera_study_demo.yaml)"
        )
    console.print(env.table().to_string(index=False))
    console.print(env.sentence)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory (weakspot run CONFIG --out RUN_DIR)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output folder (default RUN_DIR/report)"),
    baseline: Path | None = typer.Option(None, "--baseline", help="run to normalise corruption errors by"),
    examples: int = typer.Option(8, "--examples", min=0, help="number of clean-vs-degraded example pairs"),
    min_per_class: int = typer.Option(
        5, "--min-per-class", min=1, help="images a class needs before per-class rankings and claims are made"
    ),
) -> None:
    """Write the weakness report (HTML, summary.json, Markdown) of a finished run."""
    from weakspot.report import write_report

    path = write_report(run_dir, out, baseline=baseline, max_examples=examples, min_per_class=min_per_class)
    console.print(f"report: {path}  (+ summary.json, report.md, figures/)")


@app.command("perceive")
def perceive_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    max_images: int = typer.Option(32, "--max-images", min=0, help="images sampled per condition (0 = all)"),
    conditions: list[str] | None = typer.Option(
        None, "--conditions", help="glob on condition ids (repeatable)"
    ),
    grid: int = typer.Option(4, min=1, help="cells per side of the patch quality map"),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="bootstrap resamples for the intervals"),
    overlays: int = typer.Option(4, min=0, help="overlay figures (image, quality map, saliency)"),
    seed: int = typer.Option(0, help="seed of the image sample and the bootstrap"),
    saliency: str = typer.Option(
        "auto",
        "--saliency",
        help="gradcam | occlusion | none (default auto: "
        "Grad-CAM for a PyTorch module with a conv layer, else occlusion)",
    ),
    lpips_weights: Path | None = typer.Option(
        None,
        "--lpips-weights",
        help="torchvision AlexNet weights file for LPIPS (default: $TORCH_HOME/hub/checkpoints; none: NaN)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Quality (NIQE, BRISQUE) and saliency vs accuracy: tables and figures in RUN_DIR/perception/."""
    from weakspot.quality.relations import perceive, print_summary

    res = perceive(
        run_dir,
        max_images=max_images,
        conditions=conditions,
        grid=grid,
        n_boot=n_boot,
        overlays=overlays,
        seed=seed,
        saliency=saliency,
        lpips_weights=lpips_weights,
        progress=progress,
        console=console,
    )
    print_summary(res, console)


_ROBUST_TRAIN = ["gaussian_noise:variance=0.001..0.1", "gaussian_blur:sigma_px=0.4..2.0"]
_ROBUST_TESTS = [
    "clean",
    "gaussian_blur:sigma_px=1.0",
    "gaussian_blur:sigma_px=2.0",
    "gaussian_noise:variance=0.05",
    "gaussian_noise:variance=0.1",
]


@app.command("robustify")
def robustify_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="output folder (checkpoints, grid.md, grid.parquet)"),
    data: str = typer.Option("mnist", "--data", help="'mnist' (bundled 5000 digits) or an open_dataset kind"),
    root: str | None = typer.Option(None, "--root", help="data folder for kinds that need one"),
    model: str | None = typer.Option(
        None,
        "--model",
        help="fine-tune this model (weakspot.models.load_model "
        "name or file) instead of training the built-in SmallCNN",
    ),
    strategy: list[str] | None = typer.Option(
        None,
        "--strategy",
        help="constant | incremental | transfer (repeatable; default all three; 'clean' is always trained)",
    ),
    degrade: list[str] | None = typer.Option(
        None,
        "--degrade",
        help="training degradation, e.g. gaussian_noise:variance=0.001..0.05 (repeatable: a mix)",
    ),
    test: list[str] | None = typer.Option(
        None,
        "--test",
        help="test condition, e.g. clean, gaussian_blur@4, gaussian_blur:sigma_px=2 (repeatable)",
    ),
    epochs: int = typer.Option(8, min=1, help="epochs per model (transfer: half)"),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(2e-3, help="peak learning rate (one-cycle)"),
    seed: int = typer.Option(0),
    per_degradation: bool = typer.Option(
        True, "--per-degradation/--mix-only", help="also train a constant model per single degradation"
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from checkpoints in --out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    limit: int | None = typer.Option(None, min=10, help="use only the first N images (smoke tests)"),
    test_limit: int | None = typer.Option(
        None,
        "--test-limit",
        min=10,
        help="use only the first N images of the data set's own test split (overrides --limit for it)",
    ),
    threads: int | None = typer.Option(
        None, min=1, help="torch CPU threads (1 is fastest on a busy machine)"
    ),
    labels: str = typer.Option(
        "labels",
        "--labels",
        help="training targets: 'labels', or 'clean-predictions' "
        "(label-free: the frozen model's soft predictions on the clean image)",
    ),
    temperature: float = typer.Option(
        2.0, "--temperature", help="softmax temperature of --labels clean-predictions"
    ),
) -> None:
    """Train robust models (constant / incremental / transfer) and print the train × test grid."""
    from weakspot.robustify.commands import robustify_command

    _set_threads(threads)
    robustify_command(
        data=data,
        root=root,
        out=out,
        strategies=strategy or ["constant", "incremental", "transfer"],
        degrade=degrade or _ROBUST_TRAIN,
        tests=test or _ROBUST_TESTS,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        per_degradation=per_degradation,
        resume=resume,
        progress=progress,
        device=device,
        limit=limit,
        console=console,
        model=model,
        labels=labels,
        temperature=temperature,
        test_limit=test_limit,
    )


@app.command("enhance")
def enhance_cmd(
    out: Path = typer.Option(
        ..., "--out", "-o", help="output folder (enhance.md, enhance.parquet, front_end.pt)"
    ),
    data: str = typer.Option("mnist", "--data", help="'mnist' (bundled 5000 digits) or an open_dataset kind"),
    root: str | None = typer.Option(None, "--root"),
    classifier: str = typer.Option(
        "small-cnn",
        "--classifier",
        help="'small-cnn' (clean-trained here), a "
        "robustify checkpoint .pt, or a model name (weakspot.models.load_model)",
    ),
    degrade: list[str] | None = typer.Option(None, "--degrade", help="training degradations (repeatable)"),
    test: list[str] | None = typer.Option(None, "--test", help="test conditions (repeatable)"),
    epochs: int = typer.Option(6, min=1, help="front-end training epochs"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="front-end training batch size"),
    lr: float = typer.Option(2e-3, "--lr", help="front-end peak learning rate (one-cycle)"),
    classifier_epochs: int = typer.Option(8, min=1, help="epochs of the small-cnn classifier"),
    kernel_size: int = typer.Option(5, help="side of the predicted filter kernel (odd)"),
    seed: int = typer.Option(0),
    labels: str = typer.Option(
        "labels",
        "--labels",
        help="training targets: 'labels', or 'clean-predictions' "
        "(label-free: the frozen model's soft predictions on the clean image)",
    ),
    temperature: float = typer.Option(
        2.0, "--temperature", help="softmax temperature of --labels clean-predictions"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    limit: int | None = typer.Option(None, min=10, help="use only the first N images (smoke tests)"),
    threads: int | None = typer.Option(
        None, min=1, help="torch CPU threads (1 is fastest on a busy machine)"
    ),
) -> None:
    """Train the enhancement front-end before a frozen classifier; table with/without + FLOPs."""
    from weakspot.robustify.commands import enhance_command

    _set_threads(threads)
    enhance_command(
        data=data,
        root=root,
        out=out,
        classifier=classifier,
        degrade=degrade or _ROBUST_TRAIN,
        tests=test or _ROBUST_TESTS,
        epochs=epochs,
        classifier_epochs=classifier_epochs,
        kernel_size=kernel_size,
        seed=seed,
        progress=progress,
        device=device,
        limit=limit,
        console=console,
        labels=labels,
        temperature=temperature,
        batch_size=batch_size,
        lr=lr,
    )


@app.command("fix")
def fix_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory (weakspot run CONFIG --out RUN_DIR)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output folder (default RUN_DIR/fix)"),
    top: int = typer.Option(2, min=1, help="how many of the worst degradations to fix"),
    method: str = typer.Option("auto", help="auto | robust (fine-tune) | frontend (enhancement front-end)"),
    epochs: int = typer.Option(3, min=1, help="training epochs of the fix"),
    train_data: str | None = typer.Option(
        None,
        "--train-data",
        help="labelled training images KIND[:ROOT] when the run's data has no training split",
    ),
    train_limit: int | None = typer.Option(
        None, "--train-limit", min=10, help="use a stratified subset of N training images (quick checks)"
    ),
    seed: int = typer.Option(0),
    allow_overlap: bool = typer.Option(
        False,
        "--allow-overlap",
        help="train also on images the run evaluated (the after-fix accuracy is then optimistic)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    threads: int | None = typer.Option(
        None, min=1, help="torch CPU threads (1 is fastest on a busy machine)"
    ),
    labels: str = typer.Option(
        "labels",
        "--labels",
        help="training targets: 'labels', or 'clean-predictions' "
        "(label-free: the frozen model's soft predictions on the clean image)",
    ),
    temperature: float = typer.Option(
        2.0, "--temperature", help="softmax temperature of --labels clean-predictions"
    ),
) -> None:
    """Fix the worst weaknesses of a run, re-run the same sweep, add before/after to the report."""
    from weakspot.robustify.commands import fix_command

    _set_threads(threads)
    fix_command(
        run_dir,
        out=out,
        top=top,
        method=method,
        epochs=epochs,
        train_data=train_data,
        seed=seed,
        progress=progress,
        console=console,
        train_limit=train_limit,
        allow_overlap=allow_overlap,
        labels=labels,
        temperature=temperature,
    )


def _click_exception_types() -> tuple[type[Exception], ...]:
    """Click's exception base class, and typer's vendored copy of it (typer ≥ 0.2x)."""
    import click

    types: list[type[Exception]] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        types.append(TyperClickException)
    except ImportError:  # pragma: no cover - typer without a vendored click
        pass
    return tuple(types)


def _usage_error(exc) -> int:
    """One line saying what was wrong, one line saying where the help is; exit 2."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "weakspot"
    msg = " ".join(str(exc.format_message()).split())  # one line whatever the message
    err_console.print(f"error: {msg}", markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"Try '{path} --help' for help.", markup=False, highlight=False, soft_wrap=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    A user mistake never shows a traceback: a :class:`~weakspot.errors.WeakspotError` prints
    its message, a usage mistake (unknown command or option, missing argument, bad value)
    prints click's message and where the help is; both exit 2.
    """
    from weakspot.errors import WeakspotError
    from weakspot.runtime import keep_freed_memory

    keep_freed_memory()  # an application: reuse freed pages of large tensors (see weakspot.runtime)
    click_errors = _click_exception_types()
    try:
        rc = app(args=argv, prog_name="weakspot", standalone_mode=False)
    except WeakspotError as exc:
        from rich.markup import escape

        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True
        )  # keep "[ray]", paths with [ ]
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is kept")
        return 130
    except click_errors as error:
        click_exc: Any = error  # click's ClickException or typer's vendored copy: show(), exit_code
        if type(click_exc).__name__ == "NoArgsIsHelpError":  # bare 'weakspot': the help itself
            click_exc.show()
            return 0
        if type(click_exc).__name__ in (
            "UsageError",
            "NoSuchOption",
            "BadOptionUsage",
            "BadArgumentUsage",
            "MissingParameter",
            "BadParameter",
        ):
            return _usage_error(click_exc)
        click_exc.show()  # e.g. FileError
        return click_exc.exit_code
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
