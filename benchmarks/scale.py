"""Throughput of the Ray engine with 1 and 2 actors against the local engine, same run.

    .venv/bin/python benchmarks/scale.py                    # MNIST CNN, 1024 digits × 8 conditions
    .venv/bin/python benchmarks/scale.py --images 2048 --conditions 12 --repeats 3
    .venv/bin/python benchmarks/scale.py --model efficientnet_lite0   # 20 foolbox ImageNet photos, heavier units

Every engine runs the same sweep into a fresh directory on one local Ray cluster
(``ray.init(num_cpus=2)``, started once); times exclude the set-up (probing images,
starting actors), which is paid once per run, not per unit. Printed per engine:

- throughput in image·conditions per second, and its ratio to the local engine (default
  torch threads) measured in this same process, so the ratios hold on a loaded machine;
- the per-unit overhead Ray adds: with 1 actor, the wall time the actor was *not*
  evaluating (Ray scheduling, argument/result transfer, waiting for the driver), per unit,
  and as a share of a unit's work (target < 5 % at the default shard size of 64 images);
- the end-to-end ratio of 1 actor to the local engine with one torch thread (each actor
  uses one CPU, so that is the like-for-like baseline);
- ``busy``: the share of the wall time the actors spent evaluating.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

VARIANCES = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
SIGMAS = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]


def make_config(args) -> dict:
    k = args.conditions
    nv, nb = (k + 1) // 2, k // 2
    conds = [{"degradation": "gaussian_noise", "grid": {"variance": VARIANCES[:nv]}}]
    if nb:
        conds.append({"degradation": "gaussian_blur", "grid": {"sigma_px": SIGMAS[:nb]}})
    if args.model == "mnist_cnn":
        data = {"kind": "mnist_5k", "limit": args.images}
    else:
        data = {"kind": "foolbox", "subset": "imagenet"}
    return {
        "model": {"name": args.model},
        "data": data,
        "seed": 0,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "workers": 0,
        "store_probs": False,
        "conditions": conds,
    }


def timed(fn, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    s = fn(out)
    wall = s.seconds - s.setup_s
    from weakspot.evaluate import ResultsStore

    sess = ResultsStore(out).manifest()["sessions"][-1]
    busy = sess.get("ray", {}).get("worker_busy_s")
    return {
        "wall": wall,
        "setup": s.setup_s,
        "units": s.units_run,
        "imgs": s.images_evaluated,
        "busy": busy,
        "forward": s.forward_s,
        "degrade": s.degrade_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist_cnn", choices=["mnist_cnn", "efficientnet_lite0"])
    ap.add_argument("--images", type=int, default=1024, help="MNIST digits (mnist_cnn only)")
    ap.add_argument("--conditions", type=int, default=8, help="degraded conditions (+ clean)")
    ap.add_argument("--shard-size", type=int, default=64, help="images per unit (64 is the default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="median over this many runs of each engine")
    args = ap.parse_args()

    import ray

    from weakspot.evaluate import run_sweep
    from weakspot.evaluate.ray_engine import run_sweep_ray

    cfg = make_config(args)
    cfg1 = {**cfg, "threads": 1}
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(
        f"ray {ray.__version__}: local cluster up in {time.perf_counter() - t:.1f} s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model}, "
        f"shard {args.shard_size}, batch {args.batch_size}"
    )
    engines = {
        "local": lambda out: run_sweep(cfg, out, progress=False),
        "local, 1 thread": lambda out: run_sweep(cfg1, out, progress=False),
        "ray, 1 actor": lambda out: run_sweep_ray(cfg, out, actors=1, progress=False),
        "ray, 2 actors": lambda out: run_sweep_ray(cfg, out, actors=2, progress=False),
    }
    runs: dict[str, list[dict]] = {k: [] for k in engines}
    with tempfile.TemporaryDirectory(prefix="weakspot-scale-") as tmp:
        for _ in range(args.repeats):  # interleaved, so load changes hit every engine alike
            for name, fn in engines.items():
                runs[name].append(timed(fn, Path(tmp) / name.replace(" ", "_").replace(",", "")))
    ray.shutdown()

    res = {k: sorted(v, key=lambda r: r["wall"])[len(v) // 2] for k, v in runs.items()}
    base = res["local"]
    base_tput = base["imgs"] / base["wall"]
    print(
        f"\n{base['units']} units of {args.shard_size} images ({base['imgs']} image·conditions), "
        f"median of {args.repeats}"
    )
    print(f"{'engine':<16} {'img·cond/s':>11} {'vs local':>9} {'wall s':>8} {'set-up s':>9} {'busy':>6}")
    for name, r in res.items():
        tput = r["imgs"] / r["wall"]
        busy = f"{r['busy'] / r['wall']:.0%}" if r["busy"] is not None else "–"
        print(
            f"{name:<16} {tput:>11.1f} {tput / base_tput:>8.2f}× {r['wall']:>8.2f} {r['setup']:>9.2f} {busy:>6}"
        )
    one, ref = res["ray, 1 actor"], res["local, 1 thread"]
    unit_ms = one["busy"] / one["units"] * 1e3
    over_ms = (one["wall"] - one["busy"]) / one["units"] * 1e3
    print(
        f"\nper-unit overhead Ray adds (1 actor: wall - actor busy time, per unit): {over_ms:.1f} ms "
        f"= {over_ms / unit_ms:.1%} of a unit's {unit_ms:.1f} ms of work (target < 5 %)"
    )
    print(
        f"end to end, 1 actor vs the local engine with 1 thread: {ref['wall'] / one['wall']:.2f}× the speed "
        "(the driver writes while the actor computes; noisy on a shared machine)"
    )
    two = res["ray, 2 actors"]
    print(f"scaling 1 → 2 actors: {one['wall'] / two['wall']:.2f}× (ideal 2× on 2 free cores)")


if __name__ == "__main__":
    main()
