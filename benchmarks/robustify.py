"""Time the batched paths of weakspot.robustify against their per-image baselines.

    .venv/bin/python benchmarks/robustify.py                  # batch 64, 28² grey and 224² RGB
    .venv/bin/python benchmarks/robustify.py --threads 1 --repeats 7

Three comparisons. Each is timed round-robin after a warm-up, in the same process, so the
ratios still hold on a loaded machine:

* the random training degradation (:class:`RandomDegradation`, one registry call per
  (degradation, level) group) against one registry call per image;
* the front-end warp (:func:`apply_enhancement`, one grouped convolution) against the
  per-image loop reference;
* the front-end's forward pass (analysis network + warp) against the classifier's forward
  pass. For 28² digits the classifier is the built-in SmallCNN; for 224² RGB it is
  torchvision's ResNet-18 with random weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from weakspot.random import keyed_generator
from weakspot.robustify import EnhanceNet, LevelRange, RandomDegradation, SmallCNN, apply_enhancement
from weakspot.robustify.enhance import apply_enhancement_reference


def _ms(fn) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        fn()
    return (time.perf_counter() - t) * 1e3


def _race(fns: dict, repeats: int) -> dict[str, float]:
    for f in fns.values():
        _ms(f)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_ms(f))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b = args.batch
    g = torch.Generator().manual_seed(0)
    for c, size in ((1, 28), (3, 224)):
        x = torch.rand(b, c, size, size, generator=g)
        mix = RandomDegradation(
            [
                LevelRange("gaussian_noise", "variance", 0.001, 0.05),
                LevelRange("gaussian_blur", "sigma_px", 0.4, 1.0),
            ]
        )
        gens = [keyed_generator(0, i) for i in range(b)]
        choice, value = mix.sample(b, [keyed_generator(0, i) for i in range(b)])

        def per_image():
            for i in range(b):
                r = mix.ranges[int(choice[i])]
                r.build(float(value[i]))(x[i : i + 1], [gens[i]])

        net = EnhanceNet(c, 5)
        for p in net.parameters():  # non-trivial parameters so the warp is not the identity
            p.data.normal_(0, 0.05, generator=g)
        m, t, k = net(x)
        clf = SmallCNN(c, 10) if size == 28 else torchvision.models.resnet18(num_classes=1000)
        clf.eval()
        res = _race(
            {
                "mix (grouped)": lambda: mix(x, gens),
                "mix (per image)": per_image,
                "warp (grouped conv)": lambda: apply_enhancement(x, m, t, k),
                "warp (per-image loop)": lambda: apply_enhancement_reference(x, m, t, k),
                "front-end forward": lambda: net.enhance(x),
                "classifier forward": lambda: clf(x),
            },
            args.repeats,
        )
        print(f"\nbatch {b} × {c}×{size}², {torch.get_num_threads()} thread(s), median of {args.repeats}:")
        for k_, v in res.items():
            print(f"  {k_:24s} {v:9.2f} ms")
        print(f"  mix: per-image / grouped = {res['mix (per image)'] / res['mix (grouped)']:.1f}×")
        print(
            f"  warp: loop / grouped     = {res['warp (per-image loop)'] / res['warp (grouped conv)']:.1f}×"
        )
        cname = "SmallCNN" if size == 28 else "ResNet-18"
        print(f"  front-end / {cname:9s}   = {res['front-end forward'] / res['classifier forward']:.2f}")


if __name__ == "__main__":
    main()
