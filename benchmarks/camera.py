"""Time the full camera capture against a ResNet-18 forward pass on the same batch.

    .venv/bin/python benchmarks/camera.py                 # 224² and 512², batch 32
    .venv/bin/python benchmarks/camera.py --sizes 224 --batch 16 --repeats 5
    .venv/bin/python benchmarks/camera.py --batch 8 --repeats 5 --cpu-time   # on a shared CPU

Prints the median wall time of each over ``--repeats`` rounds (after one warm-up; the
functions are timed round-robin so load drift affects all alike) and the ratio camera / ResNet-18. Both run in the same process on the same device, so the ratio
holds on a loaded machine too. Goal: the default camera costs < 10 % of the forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from weakspot.degrade.camera_ops import DEFAULT_CAMERA
from weakspot.random import KeyedBatch

#: the clock: wall time by default; ``--cpu-time`` uses this process's CPU time on one thread,
#: which other jobs on a shared machine barely disturb
_CLOCK = {"fn": time.perf_counter}


def _ms(fn) -> float:
    clock = _CLOCK["fn"]
    t = clock()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (clock() - t) * 1e3


def interleaved_medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each function, timed round-robin so that load drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (caches, allocator, PSF)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_ms(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc malloc as it is (by default the run reuses freed pages, as the CLI does)",
    )
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="CPU only: one thread, timed by this process's CPU time (robust to a loaded machine)",
    )
    args = ap.parse_args()
    if args.cpu_time:
        if args.device != "cpu":
            ap.error("--cpu-time needs --device cpu")
        torch.set_num_threads(1)
        _CLOCK["fn"] = time.process_time
    if not args.default_malloc:
        from weakspot.runtime import keep_freed_memory

        keep_freed_memory()
    dev = torch.device(args.device)
    net = torchvision.models.resnet18().eval().to(dev)
    # the degradations' camera: the scene is 0.6272 mm wide whatever the input size, so a 512² input
    # is sensed with 224² default pixels (box-integrated), a 224² one 1:1 (the fast path)
    cams = {
        "default (0 D)": DEFAULT_CAMERA,
        "defocus 2 D wave": DEFAULT_CAMERA.replace(defocus_diopters=2.0),
        "defocus 2 D geom": DEFAULT_CAMERA.replace(defocus_diopters=2.0, defocus_model="geometric"),
        "pixel 8 µm": DEFAULT_CAMERA.replace(pixel_size_um=8.0),
    }
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} torch={torch.__version__}")
    print(f"{'size':>5} {'camera':>15} {'camera ms':>10} {'resnet18 ms':>12} {'ratio':>7}")
    for size in args.sizes:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.batch, 3, size, size, generator=g).to(dev)
        fns = {"resnet18": lambda: net(x)}
        # what a sweep passes: one key per image (the noise is drawn for the whole batch)
        keys = KeyedBatch.from_ids(0, [f"img{i}" for i in range(args.batch)], "benchmark")
        fns.update({name: (lambda c=cam: c.capture(x, generator=keys)) for name, cam in cams.items()})
        with torch.inference_mode():
            ms = interleaved_medians(fns, args.repeats)
        for name in cams:
            print(
                f"{size:>5} {name:>15} {ms[name]:>10.1f} {ms['resnet18']:>12.1f} {ms[name] / ms['resnet18']:>7.3f}"
            )


if __name__ == "__main__":
    main()
