"""Pipeline overhead of ``weakspot run`` beyond the model's forward passes.

For each scenario, in the same process and with the same torch threads:

* baseline  = the bare forward passes ``module(x)`` (inference_mode) over exactly the
  images × conditions the sweep evaluates, on ready-made preprocessed tensors with the
  sweep's batch size;
* pipeline  = ``run_sweep`` end to end into a fresh directory (decode in worker
  processes, keyed degradations, preprocessing, forward, softmax, top-5 rows, atomic
  Parquet/npy writes, manifest), minus the time spent inside the degradations
  themselves (the workload the user asked for, reported separately).

overhead = (pipeline − degradations − network) / network; target ≤ 15 %. "network" is
the time inside ``model.module(x)`` measured within the same run (robust: the same
batches, at the same moment) and, as a cross-check, the bare baseline above. Times are
process CPU times (robust when other jobs share the cores; decoding in worker processes
runs beside the loop and is listed apart) and wall times. The one-time set-up (model
load, probing and hashing every image) is reported apart.

    .venv/bin/python benchmarks/pipeline.py            # both scenarios
    .venv/bin/python benchmarks/pipeline.py --quick    # smaller (CI smoke)
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def _baseline(model, images: list[torch.Tensor], n_conditions: int, batch_size: int) -> tuple[float, float]:
    """(wall s, CPU s) of the bare forward passes."""
    x_all = model.preprocess(images)  # ready-made inputs: not timed
    t = c = 0.0
    with torch.inference_mode():
        model.module(x_all[: min(batch_size, len(x_all))])  # warm-up, like the first pipeline batch
        for _ in range(n_conditions):
            for i in range(0, len(x_all), batch_size):
                t0, c0 = time.perf_counter(), time.process_time()
                model.module(x_all[i : i + batch_size])
                t += time.perf_counter() - t0
                c += time.process_time() - c0
    return t, c


def scenario(name: str, cfg: dict, work: Path) -> dict:
    from weakspot.evaluate import expand_conditions, parse_config, run_sweep
    from weakspot.evaluate.engine import load_run_model, open_run_data

    parsed = parse_config(cfg)
    conds, _ = expand_conditions(parsed.conditions)
    model = load_run_model(parsed)
    ds = open_run_data(parsed)
    images = [ds[i][0] for i in range(len(ds))]
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    s = run_sweep(parsed, out, progress=False)
    wall = time.perf_counter() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    base, base_cpu = _baseline(model, images, len(conds) + 1, int(cfg["batch_size"]))
    loop = wall - s.setup_s
    return {
        "name": name,
        "images": len(images),
        "conditions": len(conds) + 1,
        "wall_s": wall,
        "setup_s": s.setup_s,
        "degrade_s": s.degrade_s,
        "baseline_forward_s": base,
        "overhead_wall": (loop - s.degrade_s - base) / base,
        "loop_cpu_s": s.loop_cpu_s,
        "degrade_cpu_s": s.degrade_cpu_s,
        "baseline_cpu_s": base_cpu,
        "overhead_cpu": (s.loop_cpu_s - s.degrade_cpu_s - s.model_cpu_s) / s.model_cpu_s,
        "model_cpu_s": s.model_cpu_s,
        "overhead_vs_bare": (s.loop_cpu_s - s.degrade_cpu_s - base_cpu) / base_cpu,
        "workers_cpu_s": (children1.ru_utime + children1.ru_stime)
        - (children0.ru_utime + children0.ru_stime),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller scenarios")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from weakspot.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does
    n_mnist = 1000 if args.quick else 5000
    scenarios = {
        "lite0-foolbox": {
            "model": {"name": "efficientnet_lite0"},
            "data": [
                {"kind": "foolbox", "subset": "imagenet", **({"limit": 8} if args.quick else {})},
                {"kind": "skimage"},
            ],
            "batch_size": 16,
            "shard_size": 32,
            "workers": 1,
            "seed": 0,
            "store_probs": True,
            "conditions": [
                {"degradation": "gaussian_noise", "grid": {"variance": [0.01, 0.05]}},
                {"degradation": "gaussian_blur", "grid": {"sigma_px": [2.0]}},
            ],
        },
        "mnist_cnn-5k": {
            "model": {"name": "mnist_cnn"},
            "data": {"kind": "mnist_5k", "limit": n_mnist},
            "batch_size": 500,
            "shard_size": 1000,
            "workers": 0,
            "seed": 0,
            "store_probs": True,
            "conditions": [
                {"degradation": "gaussian_noise", "grid": {"variance": [0.05]}},
                {"degradation": "gaussian_blur", "grid": {"sigma_px": [1.0]}},
            ],
        },
    }
    work = Path(tempfile.mkdtemp(prefix="weakspot-bench-"))
    print(
        f"torch threads {torch.get_num_threads()}; overhead = (pipeline loop - degradations - network) / network, "
        "network = module(x) inside the run"
    )
    print(
        f"{'scenario':14} {'img×cond':>8} | {'CPU s: loop':>11} {'degrade':>7} {'network':>7} {'overhead':>8} "
        f"{'bare fwd':>8} {'vs bare':>7} {'workers':>7} | {'wall s: loop':>12} {'degrade':>7} {'bare fwd':>8} "
        f"{'overhead':>8} | {'setup':>5}"
    )
    worst = 0.0
    try:
        for name, cfg in scenarios.items():
            r = scenario(name, cfg, work)
            worst = max(worst, r["overhead_cpu"])
            print(
                f"{name:14} {r['images'] * r['conditions']:>8} | {r['loop_cpu_s']:>11.2f} {r['degrade_cpu_s']:>7.2f} "
                f"{r['model_cpu_s']:>7.2f} {r['overhead_cpu']:>8.1%} {r['baseline_cpu_s']:>8.2f} "
                f"{r['overhead_vs_bare']:>7.1%} {r['workers_cpu_s']:>7.2f} | "
                f"{r['wall_s'] - r['setup_s']:>12.2f} {r['degrade_s']:>7.2f} {r['baseline_forward_s']:>8.2f} "
                f"{r['overhead_wall']:>8.1%} | {r['setup_s']:>5.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"worst CPU overhead {worst:.1%} (target <= 15%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
