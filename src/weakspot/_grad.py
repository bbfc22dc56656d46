"""Gradient helpers shared by the camera and the degradations (no weakspot imports: both use it).

:func:`straight_through` gives a sampled or quantised value in the forward pass and the
identity gradient in the backward pass, with the forward numbers exactly the value's.
"""

from __future__ import annotations

import torch

__all__ = ["straight_through", "straight_through_"]


def straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass (bit for bit), identity gradient to ``x`` in the backward pass.

    Computed as ``value.detach() + (x − x.detach())``: the bracket is exactly 0 for finite ``x``,
    so the forward numbers are ``value``'s whether or not ``x`` requires a gradient (the older
    ``x + (value − x).detach()`` rounds twice and can be one float step off ``value``). Without a
    graph the zero is skipped, which changes no number.
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return value
    return value.detach() + (x - x.detach())


def straight_through_(x: torch.Tensor, op_) -> torch.Tensor:
    """``straight_through(x, op_(values of x))`` for an in-place op ``op_`` (e.g. round and clip).

    ``x`` must be a fresh intermediate the caller owns: without a graph ``op_`` overwrites it
    (no copy); with one it runs on a detached copy. The two cases apply the same ``op_`` to the
    same numbers, so they agree bit for bit (``tests/test_camera_paths.py`` ties them).
    """
    if x.requires_grad:
        return straight_through(x, op_(x.detach().clone()))
    return op_(x)
