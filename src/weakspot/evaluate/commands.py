"""The ``weakspot run`` and ``weakspot demo`` commands (thin printing layer over the API)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weakspot.evaluate.config import RunConfig

__all__ = ["run_command", "demo_command"]


def _accuracy_table(summary, title: str):
    from rich.table import Table

    acc = summary.accuracy()
    t = Table(title=title, title_justify="left")
    for col in ("condition", "images", "top-1 acc", "agree w/ clean"):
        t.add_column(col, justify="left" if col == "condition" else "right")
    for r in acc.itertuples():
        a = "–" if r.top1_acc != r.top1_acc else f"{r.top1_acc:.3f}"
        t.add_row(r.condition_id, str(r.n), a, f"{r.agree_clean:.3f}")
    return t


def _summary_line(s) -> str:
    speed = s.images_evaluated / s.seconds if s.seconds > 0 else 0.0
    what = "resumed: " if s.resumed else ""
    return (
        f"{what}{s.units_run} units run ({s.images_evaluated} image·conditions, {speed:.1f}/s; "
        f"forward {s.forward_s:.1f}s, degradations {s.degrade_s:.1f}s, total {s.seconds:.1f}s); "
        f"{len(s.skipped)} inputs skipped (listed in manifest.json)"
    )


def run_command(
    config: str | Path | RunConfig,
    out: str | Path,
    *,
    workers=None,
    progress=True,
    console=None,
    err_console=None,
    engine: str = "local",
    address: str | None = None,
    per_class: int | None = None,
    limit: int | None = None,
) -> None:
    from weakspot.errors import ConfigError
    from weakspot.evaluate.run import check_run_dir_name

    out_dir = check_run_dir_name(out)  # --out "" (a Path would read it as "."); the engines check the rest
    if per_class is not None or limit is not None:
        from weakspot.evaluate.config import RunConfig, load_config, parse_config

        cfg = (config if isinstance(config, RunConfig) else load_config(config)).model_dump()
        for d in cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]:
            if per_class is not None:
                d["per_class"] = per_class
            if limit is not None:
                d["limit"] = limit
        config = parse_config(cfg, f"{config} with --per-class/--limit")

    if engine == "local":
        if address is not None:
            raise ConfigError("--address names a Ray cluster: add --engine ray, or leave out --address")
        from weakspot.evaluate.engine import run_sweep

        summary = run_sweep(config, out_dir, workers=workers, progress=progress, console=err_console)
    elif engine == "ray":
        from weakspot.evaluate.ray_engine import run_sweep_ray

        summary = run_sweep_ray(config, out_dir, address=address, progress=progress, console=err_console)
    else:
        raise ConfigError(f"unknown --engine {engine!r}; use 'local' (default) or 'ray'")
    console.print(
        _accuracy_table(
            summary, f"{out_dir}: {summary.n_images} images × {summary.n_conditions + 1} conditions"
        )
    )
    console.print(_summary_line(summary))
    console.print(
        f"results: {out_dir}/predictions (Parquet), {out_dir}/manifest.json; "
        f"query with weakspot.evaluate.ResultsStore('{out_dir}')"
    )


def demo_command(out: Path, *, quick=False, progress=True, console=None, err_console=None) -> None:
    from weakspot.evaluate.demo import run_demo

    res = run_demo(out, quick=quick, progress=progress, console=err_console)
    for key, s in res["runs"].items():
        console.print(_accuracy_table(s, f"{key}: {s.n_images} images × {s.n_conditions + 1} conditions"))
        console.print(_summary_line(s))
    console.print("[bold]written:[/]")
    for key, s in res["runs"].items():
        console.print(f"  run     {Path(s.out_dir)}  (Parquet store + manifest.json + config.yaml)")
        rep = res["reports"].get(key)
        console.print(f"  report  {rep}" if rep else f"  report  (not written for {key})")
    cs = res.get("contact_sheet")
    console.print(f"  camera  {cs}" if cs else "  camera  (contact sheet not written)")
    if res["missing"]:
        console.print(f"  [yellow]degradations not registered, left out:[/] {', '.join(res['missing'])}")
    console.print(f"demo finished in {res['seconds']:.0f} s")
