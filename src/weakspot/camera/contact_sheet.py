"""A labelled contact sheet of the camera sweeps (pixel size, exposure, defocus) of one photo.

>>> import skimage.data, torch
>>> from weakspot.camera.contact_sheet import camera_contact_sheet
>>> img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float() / 255
>>> camera_contact_sheet(img, "camera_sweeps.png")  # doctest: +SKIP
PosixPath('camera_sweeps.png')
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from weakspot._checks import check_images
from weakspot.camera.optics import defocus_w20_um
from weakspot.errors import InvalidParameterError

__all__ = ["camera_contact_sheet", "DEFAULT_SWEEPS"]

#: Rows of the sheet: (title, degradation name, swept parameter, values, fixed parameters).
DEFAULT_SWEEPS: tuple[tuple[str, str, str, tuple[float, ...], dict], ...] = (
    ("Pixel size, fixed well\n(brighter, clips)", "pixel_size", "pixel_size_um", (2.8, 5.0, 8.0, 11.0), {}),
    ("Pixel size, well ∝ area", "pixel_size", "pixel_size_um", (2.8, 5.0, 8.0, 11.0), {"well": "area"}),
    ("Exposure time", "exposure", "exposure_s", (0.0125, 0.0025, 0.001, 0.00025), {}),
    (
        "Exposure + auto-ISO gain",
        "exposure",
        "exposure_s",
        (0.0125, 0.0025, 0.001, 0.00025),
        {"iso_gain": True},
    ),
    ("Defocus (6 mm f/2.8)", "defocus", "defocus_diopters", (0.0, 1.0, 2.0, 4.0), {}),
)


def _label(param: str, value: float, size: int) -> str:
    from weakspot.degrade.camera_ops import DEFAULT_CAMERA

    if param == "pixel_size_um":
        n = int(DEFAULT_CAMERA.scene.pitch_um(size) * size / value + 1e-9)
        return f"{value:g} µm  ({n}×{n} px)"
    if param == "exposure_s":
        stops = torch.log2(torch.tensor(DEFAULT_CAMERA.sensor.exposure_s / value)).item()
        ev = "default" if abs(stops) < 1e-6 else f"−{stops:.1f} EV"
        return f"1/{round(1 / value):d} s  ({ev})"
    if param == "defocus_diopters":
        o = DEFAULT_CAMERA.optics
        w = defocus_w20_um(o.focal_length_mm, o.f_number, value) / 0.55  # w20 in waves at 550 nm
        return f"{value:g} D  ({w:.1f} waves)" if value else "0 D  (in focus)"
    return f"{param}={value:g}"


def _square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop to a square and resize to ``size`` (antialiased)."""
    _, h, w = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = image[:, top : top + s, left : left + s].unsqueeze(0)
    if s != size:
        crop = F.interpolate(
            crop, size=(size, size), mode="bilinear", antialias=s > size, align_corners=False
        )
    return crop.clamp(0.0, 1.0)


def camera_contact_sheet(
    image: torch.Tensor,
    out_png: str | Path,
    *,
    size: int = 224,
    seed: int = 0,
    sweeps=DEFAULT_SWEEPS,
    title: str | None = "weakspot camera simulator — one photo through the physical camera",
    dpi: int = 110,
) -> Path:
    """Write a PNG grid: one row per sweep (pixel size with the fixed and the area-scaled well,
    exposure, exposure with auto-ISO, defocus).

    Args:
        image: one photo ``(3, H, W)`` (or ``(1, H, W)``) float in [0, 1]; it is centre-cropped
            to a square and resized to ``size`` × ``size`` (the scene at 2.8 µm per pixel).
        out_png: output path (parent folders are created).
        size: working resolution in pixels.
        seed: noise seed, so the sheet is reproducible.
        sweeps: rows as ``(title, degradation, parameter, values[, fixed_params])``.
        title: figure title, or ``None``.
    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from weakspot.degrade import get_degradation

    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise InvalidParameterError(
            "image", getattr(image, "shape", type(image).__name__), "a (3, H, W) tensor in [0, 1]"
        )
    check_images(image.unsqueeze(0), "image")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if int(size) < 32:
        raise InvalidParameterError("size", size, "an integer ≥ 32 pixels")
    x = _square(image.float(), int(size))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)

    n_rows, n_cols = len(sweeps), max(len(s[3]) for s in sweeps)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.3 * n_cols, 2.55 * n_rows + (0.5 if title else 0)),
        squeeze=False,
        facecolor="white",
    )
    for r, (row_title, name, param, values, *fixed) in enumerate(sweeps):
        fixed_params = dict(fixed[0]) if fixed else {}
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(values):
                ax.axis("off")
                continue
            out = get_degradation(name, **fixed_params, **{param: values[c]})(x, generator=seed)[0]
            ax.imshow(out.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xlabel(_label(param, values[c], int(size)), fontsize=9)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=10, fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi, facecolor="white")
    plt.close(fig)
    return out_png
