"""Degradations: pure functions on ``(B, C, H, W)`` tensors in [0, 1] and their registry.

Importing this package registers every built-in degradation. Each submodule
below registers its own entries beside its code.
"""

# the built-in entries: each of these modules registers its degradations when imported
from weakspot.degrade import basic, camera_ops, defects, imagenet_c  # noqa: F401 - imported to register
from weakspot.degrade.compose import Compose, compose
from weakspot.degrade.registry import (
    Degradation,
    DegradationSpec,
    Param,
    get_degradation,
    get_spec,
    list_degradations,
    list_specs,
    register,
)

__all__ = [
    "Degradation",
    "DegradationSpec",
    "Param",
    "register",
    "get_degradation",
    "get_spec",
    "list_degradations",
    "list_specs",
    "Compose",
    "compose",
]
