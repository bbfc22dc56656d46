"""Example pairs (clean vs degraded) chosen from the biggest probability drops.

The degraded image is regenerated exactly as the run evaluated it, through the
evaluation engine's :func:`weakspot.evaluate.conditions.apply_condition` (per-image
keyed generators from the run's seed, image id and condition id). Images come from
the run's data sources (re-opened from the manifest's config) or, failing that,
from the file paths in ``images.parquet``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import torch

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


def _opt(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v


def _condition_from_row(row: dict):
    """The engine's ``Condition`` from a ``conditions.parquet`` row (only the parameters matter
    for regenerating the image; the keyed generators come from ``apply_condition``)."""
    import json

    from weakspot.evaluate.conditions import Condition, Step

    params = json.loads(row.get("params_json") or "{}")
    sev = _opt(row.get("severity"))
    if isinstance(params, list):
        steps = tuple(Step(name=p["name"], params={k: v for k, v in p.items() if k != "name"}) for p in params)
    else:
        steps = (Step(name=row["degradation"], params=params),)
    value = _opt(row.get("axis_value"))
    return Condition(condition_id=row["condition_id"], steps=steps, family=_opt(row.get("family")) or "clean",
                     severity=None if sev is None else int(sev), axis=_opt(row.get("axis")),
                     axis_value=None if value is None else float(value), axis_unit=_opt(row.get("axis_unit")))


class ImageSource:
    """Finds the original image of an ``image_id``: the run's data sets, else the file path."""

    def __init__(self, run):
        self.run = run
        self._by_id: dict[str, tuple[Any, int]] | None = None
        self._conditions: dict | None = None
        self.note = ""

    def condition(self, condition_id: str):
        """The engine's ``Condition`` of a run condition (via ``load_run_conditions``)."""
        if self._conditions is None:
            from weakspot.evaluate import load_run_conditions

            try:
                self._conditions = load_run_conditions(self.run.root)
            except Exception:  # e.g. missing strings read back as NaN (pandas 3): rebuild from the rows
                self._conditions = {}
        if condition_id not in self._conditions:
            self._conditions[condition_id] = _condition_from_row(
                self.run.conditions[self.run.conditions.condition_id == condition_id].iloc[0].to_dict())
        return self._conditions[condition_id]

    def _index(self) -> dict:
        if self._by_id is not None:
            return self._by_id
        self._by_id = {}
        m = self.run.manifest or {}
        cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
        data = cfg.get("data", m.get("data"))
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, list):
            from weakspot.data import open_dataset

            for d in data:
                if not isinstance(d, dict) or "kind" not in d:
                    continue
                try:
                    kw = {k: d[k] for k in ("root", "kind", "split", "subset", "names", "per_class", "limit")
                          if d.get(k) is not None}
                    ds = open_dataset(seed=int(m.get("seed", cfg.get("seed", 0)) or 0), **kw)
                except Exception as exc:  # the data may have moved: fall back to the paths
                    self.note = f"could not re-open data source {d.get('kind')}: {exc}"
                    continue
                for i, iid in enumerate(ds.image_ids):
                    self._by_id.setdefault(str(iid), (ds, i))
        return self._by_id

    def load(self, image_index: int) -> torch.Tensor | None:
        """``(C, H, W)`` float in [0, 1] or ``None`` when the image cannot be found."""
        img = self.run.images.set_index("image_index").loc[int(image_index)]
        hit = self._index().get(str(img.image_id))
        if hit is not None:
            ds, i = hit
            try:
                return ds.load(i)
            except Exception:
                return None
        from pathlib import Path

        if img.path and Path(str(img.path)).is_file():
            from weakspot.data.imageio import load_image

            try:
                return load_image(img.path)
            except Exception:
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
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    elif s >= 2:  # tiny images (MNIST): enlarge with visible pixels
        f = int(s)
        im = im.resize((w * f, h * f), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render_pair(run, source: ImageSource, row: Any) -> tuple[bytes, bytes] | None:
    """PNG bytes of the clean and the degraded image of one example row, or ``None``."""
    from weakspot.evaluate.conditions import apply_condition

    img = source.load(int(row.image_index))
    if img is None:
        return None
    cond = source.condition(row.condition_id)
    image_id = str(run.images.set_index("image_index").loc[int(row.image_index)].image_id)
    seed = int((run.manifest or {}).get("seed", 0) or 0)
    with torch.inference_mode():
        deg = apply_condition(cond, img.unsqueeze(0), [image_id], seed)[0]
    return _png(img), _png(deg)
