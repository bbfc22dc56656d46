"""The one straight-through helper (weakspot/_grad.py) that the camera and ImageNet-C share:
the forward value is exactly the sampled value, the gradient is the identity."""

from __future__ import annotations

import torch

import weakspot
from weakspot import _grad
from weakspot.camera import sensor
from weakspot.degrade.imagenet_c import _common
from weakspot.random import KeyedBatch


def _old_straight_through(x, y):  # the former ImageNet-C formula, which rounds twice
    return x + (y - x).detach()


def test_one_helper_for_camera_and_imagenet_c():
    assert _common.straight_through is _grad.straight_through
    assert sensor.straight_through is _grad.straight_through
    assert sensor.straight_through_ is _grad.straight_through_


def test_forward_is_bit_exact_where_the_old_formula_rounds():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10_000, generator=g) * 1000  # large x: x + (y − x) loses y's low bits
    y = torch.rand(10_000, generator=g)
    assert not torch.equal(_old_straight_through(x.clone().requires_grad_(True), y).detach(), y)  # the defect
    xg = x.clone().requires_grad_(True)
    out = _common.straight_through(xg, y)
    assert torch.equal(out.detach(), y)
    (out * torch.arange(10_000.0)).sum().backward()
    assert torch.equal(xg.grad, torch.arange(10_000.0))  # identity: the upstream gradient unchanged


def test_imagenet_c_noise_gives_the_same_bytes_with_and_without_a_gradient():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 24, 28, generator=g)
    ids = ["a", "b", "c"]
    for name in ("imagenet_c/shot_noise", "imagenet_c/glass_blur"):
        deg = weakspot.get_degradation(name, severity=3)
        plain = deg(x, generator=KeyedBatch.from_ids(0, ids, "c"))
        leaf = x.clone().requires_grad_(True)
        graded = deg(leaf, generator=KeyedBatch.from_ids(0, ids, "c"))
        assert torch.equal(graded.detach(), plain), name
        graded.sum().backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
