"""ImageNet-C by name, and the mixed mode: k random corruptions at random severities per image."""

from __future__ import annotations

from typing import Any

import torch

from weakspot.degrade.registry import Param, get_spec, register
from weakspot.errors import InvalidParameterError
from weakspot.random import GeneratorLike, batch_keys, rand, randint

__all__ = ["CORRUPTIONS", "COMMON", "HELD_OUT", "corrupt", "mixed"]

#: The 19 corruptions in the reference's order: 15 common, then the 4 held-out (validation) ones.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
COMMON = CORRUPTIONS[:15]
HELD_OUT = CORRUPTIONS[15:]
_SUBSETS = {"common": COMMON, "held_out": HELD_OUT, "all": CORRUPTIONS}


def corrupt(
    images: torch.Tensor, name: str, severity: int = 3, generator: GeneratorLike = None, **params: Any
) -> torch.Tensor:
    """Apply ImageNet-C corruption ``name`` (reference name, e.g. ``"fog"``) at ``severity`` 1–5.

    ``params`` override the severity row. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    from weakspot.degrade.registry import get_degradation

    full = name if name.startswith("imagenet_c/") else f"imagenet_c/{name}"
    return get_degradation(full, severity=severity, **params)(images, generator=generator)


def _check(p: dict[str, Any]) -> None:
    if p["severity_min"] > p["severity_max"]:
        raise InvalidParameterError(
            "severity_min", p["severity_min"], f"≤ severity_max ({p['severity_max']})", "swap the two bounds"
        )
    n = len(_SUBSETS[p["subset"]])
    if p["k"] > n:
        raise InvalidParameterError("k", p["k"], f"at most {n}, the size of subset '{p['subset']}'")


@register(
    "imagenet_c/mixed",
    params=[
        Param("k", 2, "", 1, 19, "corruptions applied to each image, distinct, in random order", type=int),
        Param("severity_min", 1, "", 1, 5, "lowest severity drawn (uniform integer)", type=int),
        Param("severity_max", 5, "", 1, 5, "highest severity drawn", type=int),
        Param(
            "subset", "common", "", doc="which corruptions to draw from", type=str, choices=tuple(_SUBSETS)
        ),
    ],
    severities={s: {"severity_min": s, "severity_max": s} for s in range(1, 6)},
    family="imagenet_c",
    axis="k",
    check=_check,
)
def mixed(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    k: int = 2,
    severity_min: int = 1,
    severity_max: int = 5,
    subset: str = "common",
) -> torch.Tensor:
    """ImageNet-C-Mixed: each image gets ``k`` distinct corruptions from ``subset`` at
    severities drawn uniformly in ``[severity_min, severity_max]``, applied in a random order.

    Images that drew the same (corruption, severity) at the same step are corrupted together
    in one batched call (a loop over at most 19 × 5 groups per step, never over images).
    Every image draws from its own key (:class:`~weakspot.random.KeyedBatch`), and a group is
    corrupted with its images' keys folded with the step, so an image's result does not depend
    on the rest of the batch.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    names = _SUBSETS[subset]
    _check({"k": k, "severity_min": severity_min, "severity_max": severity_max, "subset": subset})
    b = images.shape[0]
    keys = batch_keys(generator, b)
    order = rand((b, len(names)), keys, stream="mixed.order").argsort(1)[
        :, : int(k)
    ]  # distinct picks, random order
    sev = randint(int(severity_min), int(severity_max) + 1, (b, int(k)), keys, stream="mixed.severity")
    out = images
    for step in range(int(k)):
        code = order[:, step] * 10 + sev[:, step]
        nxt = out.clone()
        for c in torch.unique(code).tolist():
            idx = (code == c).nonzero().flatten()
            spec = get_spec(f"imagenet_c/{names[c // 10]}")
            params = spec.resolve(c % 10)
            sub_gen = keys.select(idx).fold("mixed.step", step)
            res = spec.func(out.index_select(0, idx.to(out.device)), generator=sub_gen, **params)
            nxt = nxt.index_copy(0, idx.to(out.device), res)
        out = nxt
    return out
