"""Reading and writing image files with explicit conversion rules.

:func:`load_image` returns a ``(C, H, W)`` float32 tensor in [0, 1]:

==============  ===========================================================
file mode       rule
==============  ===========================================================
RGB (8-bit)     ÷ 255
L, 1 (gray)     ÷ 255; replicated to 3 channels when ``channels=3``
I;16 / I        16-bit gray: ÷ 65535 (``I`` values are clipped to 0…65535)
F (float)       clipped to [0, 1]
RGBA, LA, PA    alpha composited over a white background
P (palette)     expanded to RGB (or RGBA, then composited)
CMYK, YCbCr…    converted to RGB by Pillow's colour conversion
==============  ===========================================================

EXIF orientation is applied. A file that cannot be decoded (missing,
truncated, not an image) raises :class:`~weakspot.errors.InvalidImageError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from weakspot.errors import InvalidImageError

__all__ = ["load_image", "save_image", "to_pil"]


def _pil_to_array(img) -> np.ndarray:
    """HWC float32 array in [0, 1] following the table above (channels 1 or 3)."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return arr[..., None]
    if mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        return (np.clip(arr, 0, 65535) / 65535.0).astype(np.float32)[..., None]
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:4]
        rgb = rgba[..., :3] * alpha + (1.0 - alpha)
        if mode in ("LA", "La"):
            rgb = rgb[..., :1]
        return rgb
    if mode in ("L", "1"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if mode != "RGB":
        img = img.convert("RGB")
    del Image
    return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path: str | Path, channels: int | None = 3) -> torch.Tensor:
    """Read an image file as ``(C, H, W)`` float32 in [0, 1].

    ``channels=3`` gives RGB (gray replicated), ``channels=1`` gives luma
    (ITU-R BT.601 weights for colour input), ``None`` keeps the file's own
    (1 for gray, 3 otherwise).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            arr = _pil_to_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"cannot decode image {path}: {exc}") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidImageError(f"image {path} has no pixels")
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    if channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1).contiguous()
    elif channels == 1 and t.shape[0] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        t = (t * w).sum(0, keepdim=True)
    return t


def to_pil(image: torch.Tensor):
    """A PIL image from ``(C, H, W)`` or ``(1, C, H, W)`` float in [0, 1] (rounded to 8 bits)."""
    from PIL import Image

    if image.ndim == 4:
        if image.shape[0] != 1:
            raise InvalidImageError(f"to_pil takes one image, got a batch of {image.shape[0]}")
        image = image[0]
    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    arr = np.transpose(arr, (1, 2, 0))
    if arr.shape[2] == 1:
        return Image.fromarray(arr[..., 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write ``(C, H, W)`` (or a batch of one) as an 8-bit file; format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        to_pil(image).save(path)
    except (ValueError, KeyError) as exc:
        raise InvalidImageError(f"cannot write {path}: {exc}") from None
    return path
