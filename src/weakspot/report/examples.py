"""Example pairs (clean vs degraded) chosen from the biggest probability drops.

The degraded image is regenerated exactly as the run evaluated it, through the
evaluation engine's :func:`weakspot.evaluate.conditions.degrade_images` (per-image
keyed generators from the run's seed, image id and condition id). The run is
re-opened through :class:`weakspot.evaluate.Run` (conditions, seed, data sources);
failing that, images come from the file paths in ``images.parquet``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import torch

from weakspot.errors import WeakspotError

__all__ = ["pick_examples", "ImageSource", "render_pair"]


def pick_examples(image_damage: pd.DataFrame, k: int = 8, per_degradation: int = 2) -> pd.DataFrame:
    """The ``k`` (image, degradation) pairs with the biggest drops, at most ``per_degradation``
    per degradation, each shown at the mildest level reaching 90% of its largest drop."""
    if image_damage.empty:
        return image_damage
    d = image_damage[image_damage["drop"] > 0]
    best = d.groupby(["degradation", "image_index"])["drop"].transform("max")
    d = d[d["drop"] >= 0.9 * best].sort_values("order").groupby(["degradation", "image_index"]).head(1)
    d = d.assign(max_drop=best.reindex(d.index))
    d = d.sort_values("max_drop", ascending=False).groupby("degradation").head(per_degradation)
    d = d.drop_duplicates("image_index")
    return d.sort_values("max_drop", ascending=False).head(k).reset_index(drop=True)


class ImageSource:
    """The original and degraded images of a run, through :class:`weakspot.evaluate.Run`
    (its data sources re-opened from the manifest's config); when the data cannot be
    re-opened, the file paths in ``images.parquet`` (``note`` says why)."""

    def __init__(self, run):
        from weakspot.evaluate.run import Run

        self.run = run
        self.handle = Run(run.root)
        self._data = None
        self._tried = False
        self.note = ""

    def condition(self, condition_id: str):
        """The engine's ``Condition`` of a run condition."""
        return self.handle.condition(condition_id)

    @property
    def seed(self) -> int:
        try:
            return self.handle.seed
        except WeakspotError:
            return 0

    def _run_data(self):
        if not self._tried:
            self._tried = True
            try:
                self._data = self.handle.open_data()
            except WeakspotError as exc:  # the data may have moved: fall back to the paths
                self.note = f"could not re-open the run's data: {exc}"
        return self._data

    def load(self, image_index: int) -> torch.Tensor | None:
        """``(C, H, W)`` float in [0, 1] or ``None`` when the image cannot be found."""
        data = self._run_data()
        if data is not None:
            try:
                return data.load(int(image_index))
            except (WeakspotError, OSError):
                return None
        img = self.run.images.set_index("image_index").loc[int(image_index)]
        from pathlib import Path

        if img.path and Path(str(img.path)).is_file():
            from weakspot.data.imageio import load_image

            try:
                return load_image(img.path)
            except (WeakspotError, OSError):
                return None
        return None


def _png(img: torch.Tensor, max_side: int = 224) -> bytes:
    from PIL import Image

    a = (img.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    im = Image.fromarray(a)
    h, w = a.shape[:2]
    s = max_side / max(h, w)
    if s < 1:
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    elif s >= 2:  # tiny images (MNIST): enlarge with visible pixels
        f = int(s)
        im = im.resize((w * f, h * f), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render_pair(run, source: ImageSource, row: Any) -> tuple[bytes, bytes] | None:
    """PNG bytes of the clean and the degraded image of one example row, or ``None``."""
    from weakspot.evaluate.conditions import degrade_images

    img = source.load(int(row.image_index))
    if img is None:
        return None
    cond = source.condition(row.condition_id)
    image_id = str(run.images.set_index("image_index").loc[int(row.image_index)].image_id)
    with torch.inference_mode():  # the engine's keyed path (as Run.degraded_images)
        deg = degrade_images(cond, [img], [image_id], source.seed)[0]
    return _png(img), _png(deg)
