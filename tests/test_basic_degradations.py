import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import weakspot
from weakspot.random import keyed_generator


def test_gaussian_noise_variance_matches_parameter():
    x = torch.full((4, 3, 128, 128), 0.5)
    for var in (0.0005, 0.002, 0.005):  # small enough that clipping at 0/1 is negligible
        y = weakspot.get_degradation("gaussian_noise", variance=var)(x, generator=1)
        d = (y - x).flatten()
        assert abs(float(d.mean())) < 3 * (var / d.numel()) ** 0.5 + 1e-4
        assert float(d.var()) == pytest.approx(var, rel=0.02)


def test_gaussian_noise_clips_to_unit_range_and_is_seeded():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    deg = weakspot.get_degradation("gaussian_noise", variance=0.5)
    y = deg(x, generator=7)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, deg(x, generator=7))
    assert not torch.equal(y, deg(x, generator=8))


def test_per_image_keyed_noise_ignores_batch_composition():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    deg = weakspot.get_degradation("gaussian_noise", variance=0.01)
    full = deg(x, [keyed_generator(0, f"img{i}", "c") for i in range(4)])
    part = deg(x[2:], [keyed_generator(0, f"img{i}", "c") for i in (2, 3)])
    assert torch.equal(full[2:], part)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.5])
def test_gaussian_blur_matches_scipy(photos, sigma):
    y = weakspot.get_degradation("gaussian_blur", sigma_px=sigma)(photos[:1])
    ref = ndi.gaussian_filter(photos[0].numpy(), sigma=(0, sigma, sigma), mode="mirror", truncate=4.0)
    assert np.abs(y[0].numpy() - ref).max() < 1e-5


def test_gaussian_blur_conserves_mean_and_is_differentiable(photos):
    x = photos[:2].clone().requires_grad_(True)
    y = weakspot.get_degradation("gaussian_blur", sigma_px=1.5)(x)
    assert float((y.detach().mean() - x.detach().mean()).abs()) < 2e-3
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_keyed_seed_is_the_documented_sha256_and_separates_keys():
    import hashlib

    from weakspot.random import keyed_seed

    ref = int.from_bytes(hashlib.sha256(b"0\x1fimg7\x1fcond").digest()[:8], "little") & (2**63 - 1)
    assert keyed_seed(0, "img7", "cond") == ref  # stable across runs, platforms and versions
    x = torch.full((1, 3, 16, 16), 0.5)
    deg = weakspot.get_degradation("gaussian_noise", variance=0.01)
    base = deg(x, [keyed_generator(0, "img7", "cond")])
    assert torch.equal(base, deg(x, [keyed_generator(0, "img7", "cond")]))
    for other in [(1, "img7", "cond"), (0, "img8", "cond"), (0, "img7", "cond2")]:
        assert not torch.equal(base, deg(x, [keyed_generator(*other)])), other


def test_random_bits_are_31_uniform_bits_per_word_and_keyed():
    """Each byte of a ``random_bits`` word must be usable as an independent uniform code
    (glass blur cuts several step codes from every word): chi-square on each of the 31 bits."""
    from weakspot.random import random_bits

    words = random_bits((2, 100_000), 5)
    assert words.dtype == torch.int32 and words.min() >= 0  # bit 31 is never set
    assert torch.equal(words, random_bits((2, 100_000), 5))
    per_image = random_bits((2, 100_000), [keyed_generator(5, 0), keyed_generator(5, 1)])
    assert torch.equal(per_image[1:], random_bits((1, 100_000), [keyed_generator(5, 1)]))
    bits = (words.reshape(-1, 1) >> torch.arange(31, dtype=torch.int32)) & 1
    ones = bits.sum(0).double()
    n = words.numel()
    z = (ones - n / 2) / math.sqrt(n / 4)  # each bit a fair coin
    assert z.abs().max() < 5, z
    assert (words >> 30).any()  # the top usable bit is used


@pytest.mark.slow
def test_keep_freed_memory_stops_page_faults_on_repeated_batches():
    """After ``keep_freed_memory`` a repeated large allocation reuses mapped pages: almost no
    minor page faults, where fresh mmaps fault in every page (glibc only)."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc malloc tuning")
    code = (
        "import resource, sys, torch, weakspot\n"
        "from weakspot.runtime import keep_freed_memory\n"
        "if sys.argv[1] == 'on': assert keep_freed_memory()\n"
        "x = torch.rand(32, 3, 224, 224)\n"
        "deg = weakspot.get_degradation('imagenet_c/shot_noise', severity=3)\n"
        "for _ in range(2): deg(x, generator=0)\n"
        "r = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(3): deg(x, generator=0)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r)\n"
    )
    faults = {
        m: int(
            subprocess.run(
                [sys.executable, "-c", code, m], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for m in ("off", "on")
    }
    batch_pages = 32 * 3 * 224 * 224 * 4 // 4096  # one 19 MB float32 batch
    assert faults["off"] > 3 * batch_pages, faults  # each call faults in several batch-sized buffers
    assert faults["on"] < faults["off"] / 4, faults
