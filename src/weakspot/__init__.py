"""weakspot: find where an image classifier breaks under real image-system degradations.

Quick use::

    import torch, weakspot

    weakspot.list_degradations()  # every registered name
    deg = weakspot.get_degradation("defocus", defocus_diopters=1.5)
    out = deg(images, generator=0)  # (B, C, H, W) float in [0, 1]
"""

from weakspot.degrade import (
    Degradation,
    compose,
    get_degradation,
    get_spec,
    list_degradations,
    list_specs,
)
from weakspot.errors import WeakspotError

__version__ = "0.1.0"

__all__ = [
    "WeakspotError",
    "Degradation",
    "compose",
    "get_degradation",
    "get_spec",
    "list_degradations",
    "list_specs",
    "__version__",
]
