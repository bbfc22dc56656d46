"""Time the full camera capture against a ResNet-18 forward pass on the same batch.

    .venv/bin/python benchmarks/camera.py                 # 224² and 512², batch 32
    .venv/bin/python benchmarks/camera.py --sizes 224 --batch 16 --repeats 5

Prints the median wall time of each over ``--repeats`` runs (after one warm-up) and the
ratio camera / ResNet-18. Both run in the same process on the same device, so the ratio
holds on a loaded machine too. Goal: the default camera costs < 10 % of the forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from weakspot.camera import Camera, Optics


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    net = torchvision.models.resnet18().eval().to(dev)
    cams = {"default (0 D)": Camera(), "defocus 2 D": Camera(optics=Optics(defocus_diopters=2.0))}
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} torch={torch.__version__}")
    print(f"{'size':>5} {'camera':>15} {'camera ms':>10} {'resnet18 ms':>12} {'ratio':>7}")
    for size in args.sizes:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.batch, 3, size, size, generator=g).to(dev)
        with torch.inference_mode():
            net_ms = median_ms(lambda: net(x), args.repeats)
            for name, cam in cams.items():
                cam_ms = median_ms(lambda: cam.capture(x, generator=0), args.repeats)
                print(f"{size:>5} {name:>15} {cam_ms:>10.1f} {net_ms:>12.1f} {cam_ms / net_ms:>7.3f}")


if __name__ == "__main__":
    main()
