"""FFT helpers shared by the camera and the degradations (no weakspot imports: both use it)."""

from __future__ import annotations

import torch

__all__ = ["spectrum_product"]


def spectrum_product(spectrum: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``spectrum * kernel`` (complex × complex or complex × real, broadcast), element by element
    in real arithmetic.

    torch's vectorised complex multiply rounds the elements of a chunk's scalar tail differently
    from the vector lanes, and where the chunks (and thread splits) fall depends on the tensor's
    size: an image's spectrum product then changes in its last bit with the other images of the
    batch. Separate real multiplies and adds are correctly rounded per element, so an image gets
    the same bits in any batch and on any thread count (``tests/test_batch_ops.py``).
    """
    sr, si = spectrum.real, spectrum.imag
    if not kernel.is_complex():
        return torch.complex(sr * kernel, si * kernel)
    kr, ki = kernel.real, kernel.imag
    return torch.complex(sr * kr - si * ki, sr * ki + si * kr)
