"""Shared-kernel blur: one grouped convolution vs a batch of 1-channel convolutions.

Prints ms per batch and the ratio (the baseline is measured in the same run).
Run: .venv/bin/python benchmarks/filters.py
"""

import time

import torch
import torch.nn.functional as F

from weakspot.degrade.filters import gaussian_blur2d


def timed(fn, repeats=5):
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def main():
    torch.manual_seed(0)
    for b in (1, 8, 32):
        x = torch.rand(b, 3, 224, 224)
        k = torch.exp(-0.5 * (torch.arange(-4, 5.0) / 1.0) ** 2)
        k = k / k.sum()

        def batch_of_1ch():
            y = F.pad(x, (4, 4, 0, 0), mode="reflect").reshape(b * 3, 1, 224, 232)
            y = F.conv2d(y, k.view(1, 1, 1, 9)).reshape(b, 3, 224, 224)
            y = F.pad(y, (0, 0, 4, 4), mode="reflect").reshape(b * 3, 1, 232, 224)
            return F.conv2d(y, k.view(1, 1, 9, 1))

        base = timed(batch_of_1ch)
        ours = timed(lambda: gaussian_blur2d(x, 1.0))
        print(
            f"B={b:3d}  1-channel batch {base:8.2f} ms   weakspot grouped {ours:8.2f} ms   speed-up {base / ours:5.1f}x"
        )


if __name__ == "__main__":
    main()
