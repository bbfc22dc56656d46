"""Run the ImageNet-C reference package (``imagecorruptions`` 1.1.2) on today's numpy/skimage.

Used by the parity tests and ``benchmarks/corruptions.py`` only. The reference crashes on
numpy 2 / scikit-image ≥ 0.19 in three places (``glass_blur`` and ``gaussian_blur`` pass
``multichannel=`` to ``skimage.filters.gaussian``; ``fog`` uses ``np.float_``);
:func:`reference_patches` fixes those names for the duration of a call only. Nothing of
the reference is copied here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from weakspot.errors import WeakspotError

__all__ = ["load_reference", "reference_patches", "run_reference"]


def load_reference() -> Any:
    """Import ``imagecorruptions.corruptions`` (a :class:`WeakspotError` if it is missing)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import imagecorruptions.corruptions as rc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise WeakspotError(
            f"the ImageNet-C reference package is not importable ({exc}); "
            "install it with: pip install 'imagecorruptions==1.1.2' 'setuptools<81'"
        ) from None
    return rc


@contextlib.contextmanager
def reference_patches() -> Iterator[Any]:
    """Context in which the reference's three crashing calls work; yields its module."""
    rc = load_reference()
    original = rc.gaussian

    def gaussian(image, sigma=1, *args, multichannel=None, **kwargs):
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return original(image, sigma, *args, **kwargs)

    had_float_ = "float_" in np.__dict__
    rc.gaussian = gaussian
    if not had_float_:
        np.float_ = np.float64  # type: ignore[attr-defined]  # NumPy 2 removed it; the reference still uses it
    try:
        yield rc
    finally:
        rc.gaussian = original
        if not had_float_:
            del np.float_  # type: ignore[attr-defined]  # the shim set above


def run_reference(image: np.ndarray, name: str, severity: int, seed: int | None = None) -> np.ndarray:
    """The reference's ``corrupt(image, severity, name)`` on an ``(H, W, 3)`` uint8 image.

    ``seed`` seeds NumPy's global generator first (the reference draws from it).
    """
    with reference_patches(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from imagecorruptions import corrupt

        if seed is not None:
            np.random.seed(seed)
        return corrupt(image, severity=severity, corruption_name=name)
