"""ImageNet-C (Hendrycks & Dietterich 2019): 19 corruptions × 5 severities as batched tensor ops.

Every corruption is registered as ``imagenet_c/<reference name>`` (family ``imagenet_c``)
with the reference's constants (``imagecorruptions`` 1.1.2) as typed parameters::

    import weakspot

    fog = weakspot.get_degradation("imagenet_c/fog", severity=3)
    out = fog(images, generator=0)  # (B, C, H, W) float in [0, 1]

:func:`corrupt` is the functional one-liner, :func:`mixed` applies k random corruptions at
random severities per image (ImageNet-C-Mixed style). See ``docs/imagenet_c.md``.
"""

from weakspot.degrade.imagenet_c import blur, digital, noise, weather  # noqa: F401
from weakspot.degrade.imagenet_c.blur import defocus_blur, gaussian_blur, glass_blur, motion_blur, zoom_blur
from weakspot.degrade.imagenet_c.digital import (
    brightness,
    contrast,
    elastic_transform,
    jpeg_compression,
    pixelate,
    saturate,
)
from weakspot.degrade.imagenet_c.mixed import CORRUPTIONS, corrupt, mixed
from weakspot.degrade.imagenet_c.noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from weakspot.degrade.imagenet_c.weather import fog, frost, snow, spatter

__all__ = [
    "CORRUPTIONS",
    "corrupt",
    "mixed",
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
]
