"""Offline real photos for label-free fixes of ImageNet models: a held-out train/test split.

Sources (all on disk, nothing downloaded):

* **test** — foolbox's 20 ImageNet samples (labelled: ImageNet class in the file name),
  scikit-image's colour photos ``astronaut``, ``chelsea``, ``coffee``, ``rocket`` (unlabelled) and
  about a third of Debian ``opencv-doc``'s sample photos (unlabelled; chosen per photo *group* so
  stereo pairs / sequences such as ``left01``…``left14`` or ``aloeL``/``aloeR`` never straddle the
  split), each resized (short side) and centre-cropped to ``size_px``.
* **train** — the other opencv-doc photos, the other scikit-image photos and scikit-learn's two
  sample images; each gives its centre crop plus ``crops_per_photo - 1`` random crops (side 40–80 %
  of the short side, keyed on the seed) resized to ``size_px``. Crops of test photos never enter
  training.

Non-photos (logos, charts, chessboards, text, synthetic shapes) are left out by name. Train and
test are checked disjoint by content hash of the decoded originals (:func:`content_hash`); a
collision raises :class:`~weakspot.errors.DataError`. Labels: ImageNet class ids, ``-1`` where
unknown (the label-free fix never needs them; top-1 is reported on the labelled subset).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from weakspot.errors import DataError
from weakspot.random import keyed_generator
from weakspot.robustify.data import Split, content_hash

__all__ = ["OPENCV_DATA", "load_photo_split", "photo_group"]

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
_NOT_PHOTOS = re.compile(
    r"(logo|chessboard|sudoku|text|digits|gradient|mask|^ml$|notes|alphabet|detect_blob|ellipses|pca_test|"
    r"^pic\d|^box|board|cards|^h1to3p|^data01|^gt|^disp|^ela_modified|licenseplate|^left\d|^right\d|"
    r"smarties|^aloegt|^tmpl|^templ)",
    re.IGNORECASE,
)
_SKIMAGE_TEST = ("astronaut", "chelsea", "coffee", "rocket")
#: bundled with scikit-image (no download): the ones its loaders fetch through pooch are left out
_SKIMAGE_PHOTOS = (
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
)


def photo_group(stem: str) -> str:
    """The group of a photo file stem: trailing digits, ``L``/``R``/``A``/``B`` and ``_original`` /
    ``_modified`` removed (``left01`` → ``left``, ``aloeL`` → ``aloe``, ``graf3`` → ``graf``)."""
    s = re.sub(r"(_original|_modified|_cls)$", "", stem)
    s = re.sub(r"[_-]?\d+$", "", s)
    s = re.sub(r"(?<=[a-z])[LRAB]$", "", s)
    return s.lower()


def _read(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, EOFError):  # not an image (xml, yml, video): skipped
        return None


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64) / (a.max() or 1), 0, 1) * 255).round().astype(np.uint8)
    return torch.from_numpy(np.array(a, dtype=np.uint8, copy=True)).permute(2, 0, 1)


def _crop_resize(img: torch.Tensor, top: int, left: int, side: int, size_px: int) -> torch.Tensor:
    x = img[:, top : top + side, left : left + side].float().unsqueeze(0) / 255
    x = F.interpolate(x, size=(size_px, size_px), mode="bilinear", antialias=True, align_corners=False)
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8)


def _centre(img: torch.Tensor, size_px: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    s = min(h, w)
    return _crop_resize(img, (h - s) // 2, (w - s) // 2, s, size_px)


def _skimage(names) -> list[tuple[str, torch.Tensor]]:
    import skimage.data

    out = []
    for n in names:
        try:
            out.append((f"skimage/{n}", _to_tensor(getattr(skimage.data, n)())))
        except (OSError, ValueError, ImportError, AttributeError):  # a loader that needs a download
            continue  # skipped offline
    return out


def load_photo_split(
    size_px: int = 160, crops_per_photo: int = 6, seed: int = 0, opencv_dir: str | Path = OPENCV_DATA
) -> Split:
    """The held-out photo split described in the module docstring (uint8 ``(N, 3, size_px, size_px)``)."""
    from weakspot.data.datasets import _imagenet_names

    test: list[tuple[str, torch.Tensor, int]] = []
    try:
        from weakspot.data.datasets import _foolbox

        fb = _foolbox("imagenet")
    except (DataError, OSError, ImportError) as exc:
        raise DataError(
            f"foolbox's ImageNet samples are needed for the labelled test photos ({exc}); pip install foolbox"
        ) from None
    for i in range(len(fb)):
        img, lab, iid = fb[i]
        test.append((iid, (img.clamp(0, 1) * 255).round().to(torch.uint8), int(lab)))
    test += [(n, t, -1) for n, t in _skimage(_SKIMAGE_TEST)]
    train: list[tuple[str, torch.Tensor]] = _skimage(_SKIMAGE_PHOTOS)
    try:
        from sklearn.datasets import load_sample_images

        for n, a in zip(("china", "flower"), load_sample_images().images, strict=True):
            train.append((f"sklearn/{n}", _to_tensor(a)))
    except (OSError, ImportError):  # scikit-learn missing: its two photos are optional
        pass
    od = Path(opencv_dir)
    if od.is_dir():
        for f in sorted(od.iterdir()):
            stem = f.name.split(".")[0]
            if not f.is_file() or _NOT_PHOTOS.search(stem):
                continue
            a = _read(f)
            if a is None or min(a.shape[:2]) < 128:
                continue
            t = _to_tensor(a)
            key = photo_group(stem)
            # about a third of the groups go to test, keyed on the group name (never on the file)
            to_test = int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest(), 16) % 3 == 0
            (test.append((f"opencv/{f.name}", t, -1)) if to_test else train.append((f"opencv/{f.name}", t)))
    if not train:
        raise DataError(
            "no training photos found: apt-get install -y opencv-doc (or pip install scikit-image)"
        )
    h_test = {content_hash(_centre(t, max(t.shape[-2:]))): n for n, t, _ in test}
    for n, t in train:
        hh = content_hash(_centre(t, max(t.shape[-2:])))
        if hh in h_test:
            raise DataError(f"training photo {n} is the same image as test photo {h_test[hh]}; remove one")
    x_te = torch.stack([_centre(t, size_px) for _, t, _ in test])
    y_te = torch.tensor([lab for _, _, lab in test], dtype=torch.int64)
    crops = []
    for n, t in train:
        crops.append(_centre(t, size_px))
        g = keyed_generator(seed, "photo-crops", n)
        h, w = t.shape[-2:]
        s0 = min(h, w)
        for _ in range(crops_per_photo - 1):
            side = int(s0 * (0.4 + 0.4 * float(torch.rand((), generator=g))))
            top = int(torch.randint(0, h - side + 1, (), generator=g))
            left = int(torch.randint(0, w - side + 1, (), generator=g))
            crops.append(_crop_resize(t, top, left, side, size_px))
    x_tr = torch.stack(crops)
    y_tr = torch.full((x_tr.shape[0],), -1, dtype=torch.int64)
    split = Split(x_tr, y_tr, x_te, y_te, _imagenet_names(), "offline-photos")
    split.train_ids = [n for n, _ in train]  # type: ignore[attr-defined]
    split.test_ids = [n for n, _, _ in test]  # type: ignore[attr-defined]
    return split
