"""Reading and writing image files with explicit conversion rules.

:func:`load_image` returns a ``(C, H, W)`` float32 tensor in [0, 1]:

==============  ===========================================================
file mode       rule
==============  ===========================================================
RGB (8-bit)     ÷ 255
L, 1 (gray)     ÷ 255; replicated to 3 channels when ``channels=3``
I;16            16-bit gray: ÷ 65535
I (32-bit)      TIFF: ÷ (2³² − 1), signed ÷ (2³¹ − 1), negatives → 0 (the
                file's BitsPerSample/SampleFormat); other files (Pillow
                widened 16-bit data): clipped to 0…65535, ÷ 65535
F (float)       clipped to [0, 1]
RGB(A) 16-bit   PNG/TIFF with 16 bits per colour sample: ÷ 65535, read with
                OpenCV (``cv2``) or, for TIFF, ``tifffile`` (Pillow would
                keep only 8 bits; without either a warning says so)
RGBA, LA, PA    alpha composited over a white background
P (palette)     expanded to RGB (or RGBA, then composited)
CMYK, YCbCr…    converted to RGB by Pillow's colour conversion
==============  ===========================================================

EXIF orientation is applied (all paths). A file that cannot be decoded
(missing, truncated, not an image) raises :class:`~weakspot.errors.InvalidImageError`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from weakspot.errors import InvalidImageError

__all__ = ["load_image", "save_image", "to_pil"]


def _tiff_tag(img, tag: int):
    v = getattr(img, "tag_v2", {}).get(tag)
    return v[0] if isinstance(v, tuple) and v else v


def _pil_to_array(img, tiff_bits: int | None = None, tiff_signed: bool = False) -> np.ndarray:
    """HWC float32 array in [0, 1] following the table above (channels 1 or 3).
    ``tiff_bits``/``tiff_signed``: the TIFF's BitsPerSample and SampleFormat (read before
    ``exif_transpose``, whose copy drops the tags)."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return arr[..., None]
    if mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        if tiff_bits and tiff_bits > 16:  # a real 32-bit TIFF: scale by its own range
            full = 2.0 ** (tiff_bits - 1) - 1 if tiff_signed else 2.0**tiff_bits - 1
            if not tiff_signed:
                arr = np.where(arr < 0, arr + 2.0**32, arr)  # Pillow reads uint32 as int32
            return (np.clip(arr, 0, full) / full).astype(np.float32)[..., None]
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


def _deep_colour(path: Path, img) -> bool:
    """Whether the file stores more than 8 bits per colour sample (Pillow decodes those to 8)."""
    if img.mode not in ("RGB", "RGBA"):
        return False
    if img.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)  # signature (8) + IHDR length/type (8) + w, h (8) + bit depth, colour type
        return len(head) == 26 and head[24] == 16
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b is not None and int(b) > 8 for b in bits)
    return False


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1–8) to an HWC array as Pillow's ``exif_transpose`` does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _read_deep_colour(path: Path, img) -> np.ndarray | None:
    """HWC float32 [0, 1] RGB of a 16-bit colour PNG/TIFF (alpha composited over white), or
    ``None`` when neither OpenCV nor (for TIFF) tifffile is installed."""
    raw = None
    try:
        import cv2

        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # does not apply EXIF orientation
        if raw is not None and raw.ndim == 3:
            raw = raw[..., [2, 1, 0, 3][: raw.shape[2]]]  # BGR(A) -> RGB(A)
    except ImportError:
        pass
    if raw is None and img.format == "TIFF":
        try:
            import tifffile

            raw = tifffile.imread(str(path))
        except ImportError:
            pass
    if raw is None or raw.ndim != 3 or raw.dtype != np.uint16:
        return None
    rgba = raw.astype(np.float32) / 65535.0
    rgb = rgba[..., :3]
    if rgba.shape[2] == 4:
        alpha = rgba[..., 3:4]
        rgb = rgb * alpha + (1.0 - alpha)
    orientation = int(img.getexif().get(0x0112, 1) or 1)
    return np.ascontiguousarray(_orient(rgb, orientation))


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
            arr = _read_deep_colour(path, img) if _deep_colour(path, img) else None
            if arr is None:
                if _deep_colour(path, img):
                    warnings.warn(
                        f"{path} has 16-bit colour but only 8 bits are read: install opencv-python-headless "
                        "(or tifffile for TIFF) to keep them",
                        stacklevel=2,
                    )
                bits, signed = _tiff_tag(img, 258), _tiff_tag(img, 339) == 2
                upright = ImageOps.exif_transpose(img)
                upright.load()
                arr = _pil_to_array(upright, int(bits) if bits else None, signed)
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
