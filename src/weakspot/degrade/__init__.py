"""Degradations: pure functions on ``(B, C, H, W)`` tensors in [0, 1] and their registry.

Importing this package registers every built-in degradation. Each submodule
below registers its own entries beside its code.
"""

from weakspot.degrade.registry import (  # noqa: F401
    Degradation,
    DegradationSpec,
    Param,
    get_degradation,
    get_spec,
    list_degradations,
    list_specs,
    register,
)
from weakspot.degrade.compose import Compose, compose  # noqa: F401

# built-in entries (each module registers on import)
from weakspot.degrade import basic  # noqa: F401,E402
from weakspot.degrade import imagenet_c  # noqa: F401,E402
from weakspot.degrade import camera_ops  # noqa: F401,E402
from weakspot.degrade import defects  # noqa: F401,E402
