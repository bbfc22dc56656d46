"""Shared fixtures: real photos from scikit-image (bundled, nothing downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


@pytest.fixture(scope="session")
def photo_uint8() -> np.ndarray:
    """Chelsea the cat, 300×451 RGB uint8 (a real photograph)."""
    return _photo("chelsea")


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    """Four real photos centre-cropped to 224², as a (4, 3, 224, 224) float batch in [0, 1]."""
    out = []
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        a = _photo(name)
        h, w = a.shape[:2]
        s = min(h, w)
        a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        t = torch.from_numpy(a).permute(2, 0, 1).float().unsqueeze(0) / 255
        t = torch.nn.functional.interpolate(
            t, size=(224, 224), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(t.clamp(0, 1))
    return torch.cat(out)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's training tests on one torch thread (two OpenMP threads spin against
    each other when the 2-core machine is shared), restoring the count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def lite0():
    """The bundled EfficientNet-Lite0 with its real ImageNet weights (loaded once per session)."""
    from weakspot.models import bundled

    return bundled("efficientnet_lite0")


@pytest.fixture(scope="session")
def mnist_cnn():
    """The bundled MNIST CNN of digit-recognizer-py (loaded once per session)."""
    from weakspot.models import bundled

    return bundled("mnist_cnn")
