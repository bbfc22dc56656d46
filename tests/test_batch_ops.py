"""Whole-batch degradations: for every registered degradation the number of tensor ops does not
grow with the batch (no per-image loops or per-image generators), and an image's result depends
only on its key, never on the batch it is processed in."""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import weakspot
from weakspot.degrade.registry import get_spec
from weakspot.random import KeyedBatch

ALL = weakspot.list_degradations()

#: ops that are one codec call per image by nature (libjpeg on the CPU; nvJPEG batches on CUDA)
PER_IMAGE_CODEC_OPS = ("image.encode_jpeg", "image.decode_jpeg")


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _build(name: str):
    spec = get_spec(name)
    return (
        weakspot.get_degradation(name, severity=3)
        if spec.severities and 3 in spec.severities
        else weakspot.get_degradation(name)
    )


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(8, 3, 10, 12, generator=g), size=(40, 48), mode="bilinear"
    )
    return (0.7 * smooth + 0.3 * torch.rand(8, 3, 40, 48, generator=g)).clamp(0, 1)


def _count(deg, x: torch.Tensor, keys: KeyedBatch) -> collections.Counter:
    with _OpCounter() as c:
        deg(x, generator=keys)
    return c.ops


@pytest.mark.parametrize("name", ALL)
def test_op_count_does_not_grow_with_the_batch(name, images):
    deg = _build(name)
    ids = [f"img{i}" for i in range(8)]
    deg(images[:3], generator=KeyedBatch.from_ids(0, ids[:3], "warm"))  # fill size-keyed caches first
    if name == "imagenet_c/mixed":
        # mixed groups the images by the corruptions they drew: give every image the same key,
        # so both batches form the same groups; nothing else may loop over images
        key = KeyedBatch.from_ids(0, ["same"], "c").keys
        small, large = KeyedBatch(key.repeat(2)), KeyedBatch(key.repeat(8))
    else:
        small, large = KeyedBatch.from_ids(0, ids[:2], "c"), KeyedBatch.from_ids(0, ids, "c")
    a, b = _count(deg, images[:2], small), _count(deg, images, large)
    for op in PER_IMAGE_CODEC_OPS:
        a.pop(op + ".default", None), b.pop(op + ".default", None)
    assert sum(a.values()) > 0
    assert a == b, {k: (a[k], b[k]) for k in set(a) | set(b) if a[k] != b[k]}


def test_mixed_groups_by_corruption_not_by_image(images):
    """With distinct keys mixed loops once per (corruption, severity) group it drew, never more."""
    deg = weakspot.get_degradation("imagenet_c/mixed", k=1, severity_min=3, severity_max=3)
    ids = [f"img{i}" for i in range(8)]
    keys = KeyedBatch.from_ids(0, ids, "c")
    per_group = {}
    for i in range(8):  # each image alone: the ops of its one group
        per_group[i] = sum(_count(deg, images[i : i + 1], keys.select([i])).values())
    total = sum(_count(deg, images, keys).values())
    assert total < sum(per_group.values())  # images that drew the same corruption share a call


@pytest.fixture
def two_threads():
    """Elementwise kernels split their range between threads at size-dependent points: a kernel
    whose tail rounds differently (torch's vectorised complex multiply) shows up only then."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ALL)
def test_an_image_gets_the_same_result_in_any_batch(name, images, two_threads):
    """Keyed by image id: the same bytes in a batch of 1, 3 or 8, in any order (on 2 threads)."""
    deg = _build(name)
    ids = [f"img{i}" for i in range(8)]
    full = deg(images, generator=KeyedBatch.from_ids(5, ids, "cond"))
    for sub in ([6], [2, 7, 0], [7, 3, 5, 1, 0, 6, 2, 4]):
        part = deg(images[sub], generator=KeyedBatch.from_ids(5, [ids[i] for i in sub], "cond"))
        assert torch.equal(part, full[sub]), sub
    if get_spec(name).random:
        other = deg(images, generator=KeyedBatch.from_ids(6, ids, "cond"))
        assert not torch.equal(other, full)


def test_spectrum_product_is_the_complex_product_and_batch_invariant(two_threads):
    from weakspot._fft import spectrum_product

    g = torch.Generator().manual_seed(1)
    a = torch.complex(torch.randn(9, 3, 45, 23, generator=g), torch.randn(9, 3, 45, 23, generator=g))
    k = torch.complex(torch.randn(9, 1, 45, 23, generator=g), torch.randn(9, 1, 45, 23, generator=g))
    exact = a.to(torch.complex128) * k.to(torch.complex128)
    torch.testing.assert_close(spectrum_product(a, k).to(torch.complex128), exact, rtol=1e-6, atol=1e-6)
    real = k.real
    torch.testing.assert_close(spectrum_product(a, real), a * real)
    sub = [4, 8, 0]
    assert torch.equal(spectrum_product(a, k)[sub], spectrum_product(a[sub], k[sub]))
