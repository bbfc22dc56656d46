"""ImageNet-C speed per core: weakspot against what users would pick instead.

    .venv/bin/python benchmarks/peers.py --quick        # severity 3, few repeats (~1–2 min)
    .venv/bin/python benchmarks/peers.py                # severity 3, more images and repeats

Peers, on the same real photos (scikit-image's, 224², 8-bit grid), one image at a time as they work:

* ``imagecorruptions`` 1.1.2 — the ImageNet-C reference (run through
  :mod:`weakspot.degrade.imagenet_c.reference`, which patches its numpy-2 crashes);
* ``albumentations`` 2.x — its nearest transform per corruption (severity-3 constants where
  the parameters map), several of them different algorithms (see ``NOTES``);
* ``corrupt-tta`` 0.1.7 — a per-image NumPy/OpenCV port of ImageNet-C.

albumentations pulls its own opencv, which would shadow the contrib build's ``cv2.quality``
in the project's venv, so the peers live in a separate ``pip install --target`` directory
(``--peers-dir``, default ``$WEAKSPOT_PEERS_DIR`` or ``/tmp/weakspot-peers``):

    .venv/bin/python -m pip install --target /tmp/weakspot-peers albumentations corrupt-tta

and run in a worker process with that directory first on its path. A peer that is not
installed is skipped with a note. Everything runs on one core (``torch.set_num_threads(1)``,
``cv2.setNumThreads(1)``, ``OMP_NUM_THREADS=1``); weakspot degrades a batch (``--batch``) and
its time is divided by the batch. Repeats are interleaved (every corruption, every peer, once
per round) and each time is the minimum over the rounds, so a burst of load on a shared
machine does not land on one side. The last line is
``faithful ops ahead of every peer per core: K/19``: the corruptions where weakspot (which
follows imagecorruptions 1.1.2) is faster per image than every peer that has that corruption.

weakspot is timed as users call it: on these CPU tensors without autograd, gaussian blur,
pixelate, saturate and the elastic field's blur take their CPU fast paths (OpenCV / Pillow
per plane, ``weakspot.degrade.imagenet_c._cpu``; docs/imagenet_c.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEVERITY = 3

#: albumentations' nearest transform for each corruption at severity 3: (class, kwargs)
ALBU = {
    "gaussian_noise": ("GaussNoise", {"std_range": (0.18, 0.18)}),
    "shot_noise": ("ShotNoise", {"scale_range": (1 / 12, 1 / 12)}),
    "impulse_noise": ("SaltAndPepper", {"amount": (0.09, 0.09), "salt_vs_pepper": (0.5, 0.5)}),
    "speckle_noise": (
        "MultiplicativeNoise",
        {"multiplier": (0.4, 1.6), "per_channel": True, "elementwise": True},
    ),
    "gaussian_blur": ("GaussianBlur", {"sigma_limit": (3.0, 3.0), "blur_limit": 0}),
    "glass_blur": ("GlassBlur", {"sigma": 1.0, "max_delta": 2, "iterations": 3, "mode": "fast"}),
    "defocus_blur": ("Defocus", {"radius": (6, 6), "alias_blur": (0.5, 0.5)}),
    "motion_blur": ("MotionBlur", {"blur_limit": (31, 31)}),
    "zoom_blur": ("ZoomBlur", {"max_factor": (1.21, 1.21), "step_factor": (0.02, 0.02)}),
    "fog": ("RandomFog", {"fog_coef_range": (0.5, 0.5)}),
    "snow": ("RandomSnow", {"snow_point_range": (0.3, 0.3)}),
    "spatter": ("Spatter", {}),
    "contrast": (
        "RandomBrightnessContrast",
        {"brightness_limit": (0.0, 0.0), "contrast_limit": (-0.8, -0.8)},
    ),
    "brightness": (
        "RandomBrightnessContrast",
        {"brightness_limit": (0.3, 0.3), "contrast_limit": (0.0, 0.0)},
    ),
    "saturate": (
        "ColorJitter",
        {"brightness": (1, 1), "contrast": (1, 1), "saturation": (2, 2), "hue": (0, 0)},
    ),
    "jpeg_compression": ("ImageCompression", {"quality_range": (15, 15)}),
    "pixelate": ("Downscale", {"scale_range": (0.4, 0.4)}),
    "elastic_transform": ("ElasticTransform", {"alpha": 21.25, "sigma": 2.24}),
}

#: where a peer's algorithm differs from ImageNet-C (imagecorruptions 1.1.2)
NOTES = {
    ("albumentations", "shot_noise"): "Poisson on a different scale parameter",
    ("albumentations", "speckle_noise"): "uniform multiplicative noise, not Gaussian",
    ("albumentations", "glass_blur"): "'fast' mode: a vectorised shuffle, not the sequential scan",
    ("albumentations", "motion_blur"): "uniform line kernel, not a half-Gaussian trail",
    ("albumentations", "fog"): "haze circles, not a plasma fractal",
    ("albumentations", "snow"): "bleached points, not blurred flake layers",
    ("albumentations", "brightness"): "adds in RGB, not to HSV value",
    ("albumentations", "saturate"): "blend with grey, not HSV saturation scaling",
    ("albumentations", "pixelate"): "OpenCV nearest resampling, not PIL box",
    ("albumentations", "elastic_transform"): "different field construction",
    ("albumentations", "frost"): "no frost transform",
    ("corrupt-tta", "glass_blur"): "true swaps in a forward scan (the reference duplicates pixels)",
    ("corrupt-tta", "motion_blur"): "uniform line kernel (OpenCV), not the 1.1.2 half-Gaussian trail",
    ("corrupt-tta", "snow"): "OpenCV line-kernel streaks",
    ("corrupt-tta", "spatter"): "mud blobs only, simplified",
    ("corrupt-tta", "elastic_transform"): "the original ImageNet-C variant (affine + elastic), not 1.1.2's",
}


# ------------------------------------------------------------------ worker (peers' process)


def _worker(images_path: str) -> None:
    """Answer ``{"peer", "name", "severity"}`` lines with ``{"ms": per-image ms}`` (or an error)."""
    import cv2

    cv2.setNumThreads(1)
    images = np.load(images_path)
    peers = {}
    try:
        import albumentations as A

        peers["albumentations"] = A
    except Exception:  # a missing or broken peer is a note, not a failure
        pass
    try:
        import corrupt_tta

        peers["corrupt-tta"] = corrupt_tta
    except Exception:
        pass
    print(json.dumps({"peers": sorted(peers)}), flush=True)
    built: dict = {}
    for line in sys.stdin:
        req = json.loads(line)
        peer, name, sev = req["peer"], req["name"], req["severity"]
        try:
            if peer == "albumentations":
                if name not in built:
                    cls, kw = ALBU[name]
                    built[name] = getattr(peers[peer], cls)(p=1.0, **kw)
                op = built[name]

                def run(img):
                    return op(image=img)["image"]
            else:
                mod = peers[peer]

                def run(img):
                    return mod.corrupt(img, severity=sev, corruption_name=name)

            t0 = time.perf_counter()
            for img in images:
                run(img)
            print(json.dumps({"ms": (time.perf_counter() - t0) / len(images) * 1000}), flush=True)
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:200]}), flush=True)


# ------------------------------------------------------------------ main process


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 peer images, 3 rounds, weakspot batch 8")
    ap.add_argument("--batch", type=int, default=None, help="weakspot batch (default 32, quick 8)")
    ap.add_argument(
        "--images", type=int, default=None, help="images per peer measurement (default 4, quick 2)"
    )
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    ap.add_argument("--only", default=None, help="comma-separated corruption names")
    ap.add_argument("--peers-dir", default=os.environ.get("WEAKSPOT_PEERS_DIR", "/tmp/weakspot-peers"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return 0

    import tempfile

    import cv2
    import torch

    sys.path.insert(0, str(HERE))
    from corruptions import real_batch

    import weakspot
    from weakspot.degrade.imagenet_c.reference import run_reference

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    batch = args.batch or (8 if args.quick else 32)
    n_peer = args.images or (2 if args.quick else 4)
    rounds = args.rounds or (3 if args.quick else 5)
    from weakspot.degrade.imagenet_c import CORRUPTIONS

    names = args.only.split(",") if args.only else list(CORRUPTIONS)

    x = real_batch(batch)
    u8 = (x[:n_peer] * 255).round().byte().permute(0, 2, 3, 1).contiguous().numpy()
    with tempfile.NamedTemporaryFile(
        suffix=".npy", delete=False
    ) as tmp:  # the worker reads it; unlinked below
        np.save(tmp, u8)

    worker, peers = None, []
    if Path(args.peers_dir).is_dir():
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([args.peers_dir, str(HERE)]),
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", tmp.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        peers = json.loads(worker.stdout.readline())["peers"]
    for p in ("albumentations", "corrupt-tta"):
        if p not in peers:
            print(
                f"note: {p} not installed in {args.peers_dir}: skipped "
                f"(pip install --target {args.peers_dir} {p})"
            )

    def ask(peer: str, name: str) -> float | None:
        worker.stdin.write(json.dumps({"peer": peer, "name": name, "severity": SEVERITY}) + "\n")
        worker.stdin.flush()
        ans = json.loads(worker.stdout.readline())
        return ans.get("ms")

    degs = {n: weakspot.get_degradation(f"imagenet_c/{n}", severity=SEVERITY) for n in names}
    best: dict = {}

    r = -1

    def record(key, ms):
        if ms is not None and r >= 0:
            best[key] = min(best.get(key, float("inf")), ms)

    for r in range(-1, rounds):  # round −1 warms every side up (imports, caches) and is not recorded
        for n in names:
            t0 = time.perf_counter()
            degs[n](x, generator=r + 1)
            record(("weakspot", n), (time.perf_counter() - t0) / batch * 1000)
            t0 = time.perf_counter()
            for i in range(n_peer):
                run_reference(u8[i], n, SEVERITY, seed=r + 1)
            record(("imagecorruptions", n), (time.perf_counter() - t0) / n_peer * 1000)
            for p in peers:
                if p == "albumentations" and n not in ALBU:
                    continue
                record((p, n), ask(p, n))
        print(f"round {r + 1}/{rounds} done" if r >= 0 else "warm-up done", file=sys.stderr, flush=True)
    if worker is not None:
        worker.stdin.close()
        worker.wait(timeout=30)
    os.unlink(tmp.name)

    cols = ["imagecorruptions", *peers]
    print(
        f"\nms per image, one core, severity {SEVERITY}, 224² (weakspot: batch {batch}; peers: "
        f"{n_peer} images one at a time); min over {rounds} interleaved rounds"
    )
    print(f"{'corruption':18s} {'weakspot':>9s} " + " ".join(f"{c:>16s}" for c in cols) + "  ahead")
    ahead = ahead_faithful = 0
    for n in names:
        ours = best[("weakspot", n)]
        theirs = [best.get((c, n)) for c in cols]
        present = [t for t in theirs if t is not None]
        win = bool(present) and ours < min(present)
        ahead += win
        faithful = [best[(c, n)] for c in cols if (c, n) in best and (c, n) not in NOTES]
        ahead_faithful += bool(faithful) and ours < min(faithful)
        cells = " ".join(f"{t:16.2f}" if t is not None else f"{'—':>16s}" for t in theirs)
        print(f"{n:18s} {ours:9.2f} {cells}  {'yes' if win else 'no'}")
    notes = [(p, n, NOTES[(p, n)]) for p in peers for n in names if (p, n) in NOTES]
    if notes:
        print("\nwhere a peer's algorithm differs from ImageNet-C (imagecorruptions 1.1.2):")
        for p, n, why in notes:
            print(f"  {p:15s} {n:18s} {why}")
    print(f"\nahead of every faithful peer implementation (no note above): {ahead_faithful}/{len(names)}")
    print(f"faithful ops ahead of every peer per core: {ahead}/{len(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
