"""No-reference quality speed: weakspot's batched NIQE/BRISQUE vs the reference implementations.

    .venv/bin/python benchmarks/quality.py            # 16 real photos, 384×512
    .venv/bin/python benchmarks/quality.py --quick    # 8 photos, 288×384

Prints ms/image of OpenCV's C++ BRISQUE (``cv2.quality``, one image at a time), of
scikit-video's NumPy NIQE (shimmed for current SciPy), of weakspot (one batch), the
speed-up of each, and the cost relative to an EfficientNet-Lite0 forward pass at 224²
measured in the same run. Timings are the minimum over repeats (robust to a shared machine).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "cat",
    "camera",
)


def real_batch(n: int, h: int, w: int) -> torch.Tensor:
    import skimage.data

    out = []
    for i in range(n):
        a = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        a = np.ascontiguousarray(a[:h, :w, :3])
        if a.shape[:2] != (h, w):  # small photos: tile
            a = np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1]), (0, 0)), mode="reflect")
        if i >= len(PHOTOS):
            a = a[:, ::-1].copy()
        out.append(torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, h, w = (8, 288, 384) if args.quick else (16, 384, 512)
    x = real_batch(n, h, w)
    u8 = [
        np.ascontiguousarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[:, :, ::-1])
        for im in x
    ]
    luma = (np.einsum("bchw,c->bhw", x.double().numpy(), np.array([0.2989, 0.587, 0.114])) * 255).astype(
        np.float32
    )

    import weakspot.quality as q

    q.brisque(x[:1]), q.niqe(x[:1])  # warm-up (tables, model files)
    rows = []
    t_b = best(lambda: q.brisque(x), args.repeats) / n
    t_n = best(lambda: q.niqe(x), args.repeats) / n

    import cv2

    ref_b = None
    model = "/usr/share/opencv4/quality/brisque_model_live.yml"
    if hasattr(getattr(cv2, "quality", None), "QualityBRISQUE_create"):
        try:
            m = cv2.quality.QualityBRISQUE_create(model, model.replace("model", "range"))
            ref_b = best(lambda: [m.compute(im) for im in u8], args.repeats) / n
        except cv2.error:
            print("opencv-data's BRISQUE model is not installed: OpenCV column skipped", file=sys.stderr)
    sys.path.insert(0, "tests")
    from test_quality import _skvideo_niqe

    sk = _skvideo_niqe()
    ref_n = best(lambda: [sk(y) for y in luma], 1) / n

    from weakspot.models import bundled

    lite0 = bundled("efficientnet_lite0")
    xin = torch.rand(n, 3, 224, 224)
    with torch.inference_mode():
        lite0.module(xin[:2])
        t_f = best(lambda: lite0.module(xin), args.repeats) / n

    rows.append(("BRISQUE", "OpenCV C++", ref_b, t_b))
    rows.append(("NIQE", "scikit-video", ref_n, t_n))
    print(f"{n} real photos {h}×{w}, torch threads {torch.get_num_threads()}")
    print(
        f"{'measure':8} {'reference':13} {'ref ms/img':>10} {'weakspot ms/img':>16} {'speed-up':>9} {'vs Lite0 fwd':>13}"
    )
    for name, ref, tr, tw in rows:
        r = "—" if tr is None else f"{tr * 1e3:10.1f}"
        s = "—" if tr is None else f"{tr / tw:8.1f}x"
        print(f"{name:8} {ref:13} {r:>10} {tw * 1e3:16.1f} {s:>9} {tw / t_f:12.2f}x")
    print(f"EfficientNet-Lite0 forward at 224²: {t_f * 1e3:.1f} ms/img")
    return 0


if __name__ == "__main__":
    sys.exit(main())
