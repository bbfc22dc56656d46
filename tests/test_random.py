"""The keyed, whole-batch generator (weakspot.random) against independent references:
SplitMix64's published output, scipy's distributions and statistical tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from weakspot.errors import InvalidParameterError
from weakspot.random import (
    KeyedBatch,
    as_generators,
    batch_keys,
    counter_words,
    keyed_generator,
    poisson,
    poisson_quantile,
    rand,
    randint,
    randn,
    random_bits,
)

P_MIN = 1e-4  # fixed keys make every test deterministic; a sound generator passes at this level


def _kb(n: int, cond: str = "test") -> KeyedBatch:
    return KeyedBatch.from_ids(11, [f"img{i}" for i in range(n)], cond)


def test_counter_words_are_splitmix64():
    """Word j of a key is SplitMix64's j-th output from state = key: the published sequence for
    seed 1234567 (Vigna's splitmix64.c) and a pure-Python SplitMix64 for random keys."""
    published = [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    words = counter_words(torch.tensor([1234567]), 5)[0].tolist()
    assert [w & (2**64 - 1) for w in words] == published

    def splitmix(state: int, n: int) -> list[int]:
        out, mask = [], 2**64 - 1
        for _ in range(n):
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            out.append(z ^ (z >> 31))
        return out

    keys = [-(2**63), -1, 0, 2**63 - 1, -7046029254386353131]
    got = counter_words(torch.tensor(keys), 9)
    for k, row in zip(keys, got.tolist(), strict=True):
        assert [w & (2**64 - 1) for w in row] == splitmix(k & (2**64 - 1), 9)


def test_uniform_bins_chi_square():
    """float32 and float64 uniforms fill 256 bins evenly (chi-square) and lie in [0, 1)."""
    for dtype in (torch.float32, torch.float64):
        u = rand((8, 40_000), _kb(8), dtype=dtype, stream="chi")
        assert u.dtype == dtype and float(u.min()) >= 0.0 and float(u.max()) < 1.0
        counts = torch.bincount((u.flatten() * 256).long(), minlength=256).numpy()
        assert st.chisquare(counts).pvalue > P_MIN
    # every one of the 64 bits is a fair coin (binomial z-score)
    w = counter_words(_kb(4).stream_keys("bits"), 50_000).flatten()
    n = w.numel()
    for bit in range(64):
        ones = int(((w >> bit) & 1).sum())
        assert abs(ones - n / 2) / math.sqrt(n / 4) < 5, bit


def test_pairs_of_draws_fill_the_unit_square():
    """Consecutive uniforms are independent: 32×32 bins of (u_n, u_{n+1}) are even (chi-square)."""
    u = rand((1, 400_001), _kb(1), dtype=torch.float64, stream="pairs")[0]
    cell = (u[:-1] * 32).long() * 32 + (u[1:] * 32).long()
    assert st.chisquare(torch.bincount(cell, minlength=1024).numpy()).pvalue > P_MIN


def test_streams_images_and_counters_are_uncorrelated():
    """Correlations between two streams of one image, between adjacent image keys, and between
    adjacent counters stay within 5 standard errors of 0."""
    n = 200_000
    kb = KeyedBatch.from_ids(3, ["0", "1"], "c")
    a = rand((2, n), kb, dtype=torch.float64, stream="a")
    b = rand((2, n), kb, dtype=torch.float64, stream="b")
    limit = 5 / math.sqrt(n)
    pairs = [(a[0], b[0]), (a[0], a[1]), (a[0, :-1], a[0, 1:])]
    # adjacent raw integer keys (the worst case for a weak mixer)
    raw = KeyedBatch(torch.tensor([1000, 1001]))
    r = rand((2, n), raw, dtype=torch.float64, stream="x")
    pairs.append((r[0], r[1]))
    for x, y in pairs:
        assert abs(np.corrcoef(x.numpy(), y.numpy())[0, 1]) < limit


def test_box_muller_is_standard_normal():
    """Normals pass a Kolmogorov–Smirnov test against N(0, 1), with mean 0, variance 1."""
    for dtype in (torch.float32, torch.float64):
        z = randn((4, 50_000), _kb(4), dtype=dtype, stream="bm").flatten().double().numpy()
        assert st.kstest(z, "norm").pvalue > P_MIN
        assert abs(z.mean()) < 5 / math.sqrt(z.size)
        assert abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
        assert np.isfinite(z).all() and np.abs(z).max() < 6.8


def test_randint_and_random_bits_are_uniform():
    k = randint(-3, 4, (4, 30_000), _kb(4), stream="ri")
    assert k.dtype == torch.int64 and int(k.min()) == -3 and int(k.max()) == 3
    assert st.chisquare(torch.bincount((k + 3).flatten(), minlength=7).numpy()).pvalue > P_MIN
    bits = random_bits((4, 30_000), _kb(4), stream="rb")
    assert bits.dtype == torch.int32 and int(bits.min()) >= 0
    assert st.chisquare(torch.bincount((bits >> 23).flatten(), minlength=256).numpy()).pvalue > P_MIN


def test_poisson_quantile_equals_scipy_ppf():
    """The inverse-CDF sampler returns exactly scipy's Poisson quantile for 20 000 uniforms
    at rates from 0.001 to 10⁷ (central quantiles; the fixed correction reaches ±6 counts)."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(20_000, generator=g, dtype=torch.float64) * (1 - 2e-9) + 1e-9
    for lam in (0.001, 0.5, 1.0, 3.0, 9.5, 20.0, 99.0, 1000.0, 12345.6, 1e7):
        got = poisson_quantile(torch.full_like(u, lam), u).numpy()
        assert np.array_equal(got, st.poisson.ppf(u.numpy(), lam)), lam
    assert poisson_quantile(torch.zeros(3, dtype=torch.float64), torch.tensor([0.1, 0.5, 0.9])).tolist() == [
        0,
        0,
        0,
    ]


@pytest.mark.parametrize(
    "lam,fallback",
    [
        (0.5, False),
        (3.0, False),
        (9.99, False),
        (10.0, False),
        (20.0, False),
        (1000.0, False),
        (3.0, True),
        (20.0, True),
    ],
)
def test_poisson_mean_variance_and_goodness_of_fit(lam, fallback, monkeypatch):
    """Samples have mean and variance λ (within 5 standard errors) and follow scipy's pmf
    (chi-square over the bins with ≥ 20 expected counts, the tails pooled), on both sides of
    the inversion/PTRS switch at λ = 10; ``fallback``: with too few inversion steps and no
    PTRS round every value goes to the exact inverse-CDF fallback, which must fit as well."""
    import weakspot.random as R

    if fallback:
        monkeypatch.setattr(R, "POISSON_INVERSION_STEPS", 1)
        monkeypatch.setattr(R, "POISSON_PTRS_ROUNDS", 0)
    n_img, per = 4, 50_000
    x = (
        poisson(torch.full((n_img, per), lam, dtype=torch.float64), _kb(n_img), stream="pois")
        .flatten()
        .numpy()
    )
    n = x.size
    assert abs(x.mean() - lam) < 5 * math.sqrt(lam / n)
    var_se = math.sqrt((2 * lam**2 + lam) / n)  # var of the sample variance: (μ4 − σ⁴)/n, μ4 = 3λ² + λ
    assert abs(x.var() - lam) < 5 * var_se
    lo, hi = int(st.poisson.ppf(1e-4, lam)), int(st.poisson.ppf(1 - 1e-4, lam))
    ks = np.arange(lo, hi + 1)
    expected = st.poisson.pmf(ks, lam) * n
    expected[0] += st.poisson.cdf(lo - 1, lam) * n
    expected[-1] += st.poisson.sf(hi, lam) * n
    observed = np.bincount(np.clip(x.astype(int), lo, hi) - lo, minlength=ks.size).astype(float)
    # pool bins until each expects ≥ 20
    obs_p, exp_p, o, e = [], [], 0.0, 0.0
    for oi, ei in zip(observed, expected, strict=True):
        o, e = o + oi, e + ei
        if e >= 20:
            obs_p.append(o)
            exp_p.append(e)
            o = e = 0.0
    obs_p[-1] += o
    exp_p[-1] += e
    obs_p, exp_p = np.array(obs_p), np.array(exp_p)
    exp_p *= obs_p.sum() / exp_p.sum()
    assert st.chisquare(obs_p, exp_p).pvalue > P_MIN


def test_draws_are_contiguous_with_the_requested_shape_and_dtype():
    """Odd element counts per image (the half-word layout drops one value) still give plain
    contiguous tensors, for every generator form."""
    for shape in [(1, 3, 5, 7), (2, 3, 5, 7), (3, 1, 4, 4), (2, 5)]:
        for g in (0, torch.Generator().manual_seed(0), _kb(shape[0])):
            for out in (
                rand(shape, g),
                randn(shape, g),
                rand(shape, g, dtype=torch.float64),
                randn(shape, g, dtype=torch.float16),
                random_bits(shape, g),
                randint(0, 3, shape, g),
            ):
                assert out.shape == shape and out.is_contiguous()
                out.view(-1)


def test_poisson_mixed_rates_are_keyed_per_image():
    """Rates that change per element (zeros, both samplers) give each image the same counts in
    any batch; zero rates give zero; the mean follows the rates."""
    g = torch.Generator().manual_seed(0)
    rates = torch.rand(3, 2, 40, 50, generator=g, dtype=torch.float64) * 60
    rates[:, :, :5] = 0
    ids = ["p", "q", "r"]
    full = poisson(rates, KeyedBatch.from_ids(1, ids, "c"), stream="s")
    assert torch.equal(
        poisson(rates[[2, 0]], KeyedBatch.from_ids(1, ["r", "p"], "c"), stream="s"), full[[2, 0]]
    )
    assert float(full[:, :, :5].abs().sum()) == 0 and torch.equal(full, full.round())
    resid = (full - rates)[:, :, 5:] / rates[:, :, 5:].clamp(min=1e-9).sqrt()
    assert abs(float(resid.mean())) < 5 / math.sqrt(resid.numel()) and abs(float(resid.var()) - 1) < 0.05


def test_values_depend_only_on_key_stream_and_counter():
    """An image's draws are the same in a batch of 1, 3 or 8, in any order."""
    ids = [f"im{i}" for i in range(8)]
    full = randn((8, 5, 7), KeyedBatch.from_ids(0, ids, "c"), stream="s")
    for sub in ([3], [5, 0, 2], [7, 6, 5, 4, 3, 2, 1, 0]):
        part = randn((len(sub), 5, 7), KeyedBatch.from_ids(0, [ids[i] for i in sub], "c"), stream="s")
        assert torch.equal(part, full[sub])
    # select keeps keys; a different stream, condition or seed gives different values
    assert torch.equal(
        randn((2, 5, 7), KeyedBatch.from_ids(0, ids, "c").select([4, 1]), stream="s"), full[[4, 1]]
    )
    assert not torch.equal(randn((8, 5, 7), KeyedBatch.from_ids(0, ids, "c"), stream="t"), full)
    assert not torch.equal(randn((8, 5, 7), KeyedBatch.from_ids(0, ids, "d"), stream="s"), full)
    assert not torch.equal(randn((8, 5, 7), KeyedBatch.from_ids(1, ids, "c"), stream="s"), full)


def test_unnamed_draws_advance_like_a_generator():
    """Without a stream name successive draws differ (an automatic per-image call counter),
    and replaying the same sequence of calls replays the values."""

    def seq():
        kb = _kb(2)
        return [rand((2, 100), kb) for _ in range(3)]

    a, b = seq(), seq()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert abs(np.corrcoef(a[0].flatten().numpy(), a[1].flatten().numpy())[0, 1]) < 0.3


def test_legacy_per_image_generator_patterns_stay_keyed():
    """Code written for a list of per-image generators keeps working on a KeyedBatch:
    iterating gives single-image children whose draws depend only on that image's key, that
    accept any shape, and that do not repeat the parent's automatic streams; a list of
    children is a KeyedBatch again."""
    ids = [f"i{k}" for k in range(4)]
    big, small = KeyedBatch.from_ids(2, ids, "c"), KeyedBatch.from_ids(2, ids[2:], "c")
    gens = as_generators(big, 4)
    assert isinstance(gens, KeyedBatch)
    z_parent = randn((4, 50), gens)
    kids_big = [randn((13,), g) for g in gens]  # a flat shape: all of one image's elements
    randn((2, 50), small)
    kids_small = [randn((13,), g) for g in small]
    assert torch.equal(kids_big[2], kids_small[0]) and torch.equal(kids_big[3], kids_small[1])
    assert not torch.equal(kids_big[0][:13], z_parent[0, :13])
    # a list of single-image children concatenates into one batch of their keys
    again = as_generators([big[3], big[1]], 2)
    assert isinstance(again, KeyedBatch) and torch.equal(
        again.keys, torch.stack([big[3].keys[0], big[1].keys[0]])
    )
    with pytest.raises(InvalidParameterError, match="generator"):
        rand((3, 4), big)


@pytest.mark.parametrize("bad", [[1, 2], ["ab", "cd"], "ab", [torch.Generator(), 3], True])
def test_a_generator_of_the_wrong_kind_is_an_invalid_parameter(bad):
    """A list that is not one torch.Generator (or single-image keys) per image, a string or a
    bool is the user's mistake: InvalidParameterError naming ``generator``, both where a draw
    normalises it and where a degradation threads it through several draws."""
    for normalise in (lambda g: rand((2, 3), g), lambda g: as_generators(g, 2)):
        with pytest.raises(InvalidParameterError, match="generator"):
            normalise(bad)
    # the kinds it accepts still work: a list of torch generators gives each image its own key
    g = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    assert torch.equal(rand((2, 3), g)[1], rand((1, 3), [torch.Generator().manual_seed(2)])[0])


def test_int_seed_and_torch_generator():
    """An int seed maps to keys per batch position (device-independent, same first image in a
    batch of 1 or 3); a torch.Generator yields a new key per call (stateful) and replays."""
    assert torch.equal(rand((1, 9), 5, stream="s"), rand((3, 9), 5, stream="s")[:1])
    assert not torch.equal(rand((1, 9), 5, stream="s"), rand((1, 9), 6, stream="s"))
    # an int is shorthand for a freshly seeded generator (its first key)
    assert torch.equal(rand((3, 9), 5), rand((3, 9), torch.Generator().manual_seed(5)))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a1, a2 = rand((2, 9), g1), rand((2, 9), g1)
    assert torch.equal(a1, rand((2, 9), g2)) and torch.equal(a2, rand((2, 9), g2))
    assert not torch.equal(a1, a2)
    # legacy: a list of per-image CPU generators, one key each
    legacy = batch_keys([keyed_generator("x", i) for i in range(3)], 3)
    assert len(legacy) == 3 and legacy.keys.unique().numel() == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare against the CPU")
def test_same_values_on_cpu_and_gpu():
    kb = _kb(3)
    for fn in (
        lambda d: rand((3, 1000), kb, d, stream="u"),
        lambda d: random_bits((3, 1000), kb, d, stream="b"),
        lambda d: randint(0, 7, (3, 1000), kb, d, stream="i"),
    ):
        assert torch.equal(fn("cpu"), fn("cuda").cpu())
    zc, zg = (
        randn((3, 1000), kb, "cpu", torch.float64, stream="n"),
        randn((3, 1000), kb, "cuda", torch.float64, stream="n"),
    )
    torch.testing.assert_close(zc, zg.cpu(), rtol=1e-14, atol=1e-14)
    rate = torch.rand(3, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 50
    assert torch.equal(poisson(rate, kb, stream="p"), poisson(rate.cuda(), kb, stream="p").cpu())
