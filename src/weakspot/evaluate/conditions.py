"""Conditions of a sweep and THE function that applies one to images.

A :class:`Condition` is one point of a sweep: one or more registered degradations with
their parameters, a file-safe ``condition_id``, its family, severity and physical axis
(``pixel_size_um`` = 5.0 µm …). :func:`apply_condition` degrades a batch with one 64-bit key
per image, ``KeyedBatch.from_ids(seed, image_ids, condition_id)`` (keys
``keyed_seed(seed, image_id, condition_id)``), and every draw is computed for the whole batch
on the images' device from (key, stream, element counter), so a sampled value depends only
on (seed, image, condition, stream) — never on batch size, order, sharding or device. Everything that must reproduce the images a run evaluated (report examples,
perception analysis, robust training) calls :func:`apply_condition` or
:func:`degrade_images`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from weakspot.errors import ConfigError
from weakspot.evaluate.store import CLEAN, check_condition_id
from weakspot.random import KeyedBatch

__all__ = [
    "Step",
    "Condition",
    "CLEAN_CONDITION",
    "apply_condition",
    "degrade_images",
    "format_value",
    "make_condition_id",
]


class Step(BaseModel):
    """One registered degradation with explicit parameters (and the severity they came from)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    severity: int | None = None


class Condition(BaseModel):
    """One evaluated condition. ``steps`` is empty for the clean condition."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    condition_id: str
    steps: tuple[Step, ...] = ()
    family: str = "clean"
    severity: int | None = None
    axis: str | None = None
    axis_value: float | None = None
    axis_unit: str | None = None

    def model_post_init(self, __context: Any) -> None:
        try:
            check_condition_id(self.condition_id)
        except ValueError as exc:
            raise ConfigError(f"invalid condition id: {exc}; use letters, digits and . _ = , + -") from None

    @property
    def is_clean(self) -> bool:
        return not self.steps

    @property
    def degradation(self) -> str:
        """Registered name(s), ``+``-joined for a composition, ``clean`` for none."""
        return "+".join(s.name for s in self.steps) if self.steps else CLEAN

    @property
    def params_json(self) -> str:
        if len(self.steps) == 1:
            return json.dumps(self.steps[0].params, sort_keys=True)
        return json.dumps([{"name": s.name, **s.params} for s in self.steps], sort_keys=True)

    def build(self) -> torch.nn.Module | None:
        """The degradation module (a :class:`~weakspot.degrade.Compose`), ``None`` if clean."""
        if self.is_clean:
            return None
        from weakspot.degrade import compose, get_degradation

        return compose([get_degradation(s.name, **s.params) for s in self.steps])

    def store_row(self) -> dict[str, Any]:
        """This condition as a row of ``conditions.parquet``."""
        return {
            "condition_id": self.condition_id,
            "degradation": self.degradation,
            "family": self.family,
            "params_json": self.params_json if self.steps else "{}",
            "severity": self.severity,
            "axis": self.axis,
            "axis_value": self.axis_value,
            "axis_unit": self.axis_unit,
        }


CLEAN_CONDITION = Condition(condition_id=CLEAN)


def format_value(v: Any) -> str:
    """Compact, file-safe text for a parameter value (``5``, ``0.001``, ``1e-05``, ``true``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def make_condition_id(name: str, params: dict[str, Any] | None = None, severity: int | None = None) -> str:
    """``imagenet_c/fog`` at severity 3 → ``imagenet_c.fog.sev=3``; ``pixel_size`` with
    ``pixel_size_um=5`` → ``pixel_size.pixel_size_um=5``."""
    base = name.replace("/", ".")
    parts = [base]
    if severity is not None:
        parts.append(f"sev={severity}")
    for k, v in (params or {}).items():
        parts.append(f"{k}={format_value(v)}")
    cid = ".".join(parts)
    safe = "".join(c if (c.isalnum() and c.isascii()) or c in "._=,+-" else "-" for c in cid)
    return safe


def _generators(seed: int, image_ids: Sequence[str], condition_id: str) -> KeyedBatch:
    """The batch's keys: ``keyed_seed(seed, image_id, condition_id)`` per image."""
    return KeyedBatch.from_ids(int(seed), [str(i) for i in image_ids], condition_id)


def apply_condition(
    condition: Condition,
    images: torch.Tensor,
    image_ids: Sequence[str],
    seed: int,
    degradation: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Degrade a batch exactly as a sweep does.

    Args:
        condition: the condition (the clean condition returns ``images`` unchanged).
        images: ``(B, C, H, W)`` float in [0, 1], at the images' native resolution.
        image_ids: the ``B`` image ids (``images.parquet``'s ``image_id``).
        seed: the run's seed (``manifest.json``'s ``seed``).
        degradation: ``condition.build()`` if already built (saves rebuilding it).

    Returns:
        the degraded batch (same B; the degradation may change H, W).
    """
    if len(image_ids) != images.shape[0]:
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError(
            "image_ids", f"{len(image_ids)} ids", f"one per image ({images.shape[0]})"
        )
    if condition.is_clean:
        return images
    deg = degradation if degradation is not None else condition.build()
    assert deg is not None, "only the clean condition builds to None"
    return deg(images, generator=_generators(seed, image_ids, condition.condition_id))


def degrade_images(
    condition: Condition,
    images: Sequence[torch.Tensor],
    image_ids: Sequence[str],
    seed: int,
    degradation: torch.nn.Module | None = None,
) -> list[torch.Tensor]:
    """:func:`apply_condition` for a list of ``(C, H, W)`` images of different sizes.

    Images of equal shape are degraded together; the result equals degrading each image
    alone, because every image has its own key.
    """
    images = list(images)
    if condition.is_clean:
        return images
    deg = degradation if degradation is not None else condition.build()
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    for idx in groups.values():
        res = apply_condition(
            condition, torch.stack([images[i] for i in idx]), [image_ids[i] for i in idx], seed, deg
        )
        for j, i in enumerate(idx):
            out[i] = res[j]
    return out  # type: ignore[return-value]
