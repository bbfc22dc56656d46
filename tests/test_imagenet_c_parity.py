"""Parity of weakspot's ImageNet-C with the reference package (imagecorruptions 1.1.2).

The reference runs inside these tests, on real photos (conftest ``photos``), with its three
crashes on numpy 2 / skimage >= 0.19 patched around each call
(:mod:`weakspot.degrade.imagenet_c.reference`).

* deterministic corruptions: mean absolute error <= 2/255 per severity;
* random ones: mean and std of |corrupted - clean| within 10% of the reference's per
  severity over several seeds, and the radially averaged power spectrum (of the noise
  residual for noise, of the image for blur) within 10% per frequency band;
* where the reference's random draws can be fed with the same numbers ("RNG-matched"),
  the outputs themselves agree to <= 2/255.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import weakspot
from weakspot.random import KeyedBatch, keyed_generator

pytest.importorskip("imagecorruptions")
from weakspot.degrade.imagenet_c.reference import run_reference

MAE_MAX = 2 / 255
REL_TOL = 0.10


@pytest.fixture(scope="session")
def two_photos(photos) -> torch.Tensor:
    """Two real 224² photos on the 8-bit grid (what the reference, which takes uint8, sees)."""
    return torch.round(photos[:2] * 255) / 255


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).double().numpy()


def _ours(x: torch.Tensor, name: str, severity: int, seeds, **params) -> np.ndarray:
    xs = x.repeat(len(seeds), 1, 1, 1)
    gens = [keyed_generator("parity", name, severity, s, i) for s in seeds for i in range(len(x))]
    deg = weakspot.get_degradation(f"imagenet_c/{name}", severity=severity, **params)
    return _hwc(deg(xs, generator=gens))


def _reference(x: torch.Tensor, name: str, severity: int, seeds) -> np.ndarray:
    u8 = _u8(x)
    out = [run_reference(u8[i], name, severity, seed=1000 + s) for s in seeds for i in range(len(u8))]
    return np.stack(out).astype(np.float64) / 255


def radial_power(a: np.ndarray, bands: int = 8) -> np.ndarray:
    """Mean power of ``(N, H, W, C)`` in ``bands`` radial frequency bands up to Nyquist."""
    f = np.abs(np.fft.fft2(a - a.mean((1, 2), keepdims=True), axes=(1, 2))) ** 2
    f = f.mean((0, 3))
    fy = np.fft.fftfreq(f.shape[0])[:, None]
    fx = np.fft.fftfreq(f.shape[1])[None, :]
    r = np.sqrt(fx**2 + fy**2)
    edges = np.linspace(0, 0.5, bands + 1)
    return np.array([f[(r >= edges[i]) & (r < edges[i + 1])].mean() for i in range(bands)])


def _assert_change_stats(ours: np.ndarray, ref: np.ndarray, clean: np.ndarray, what: str) -> None:
    do, dr = np.abs(ours - clean), np.abs(ref - clean)
    assert do.mean() == pytest.approx(dr.mean(), rel=REL_TOL), f"{what}: mean |change|"
    assert do.std() == pytest.approx(dr.std(), rel=REL_TOL), f"{what}: std |change|"


def _assert_spectrum(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    po, pr = radial_power(ours), radial_power(ref)
    np.testing.assert_allclose(po, pr, rtol=REL_TOL, err_msg=f"{what}: radial power spectrum")


# ----------------------------------------------------------------- deterministic

DETERMINISTIC = [
    "brightness",
    "contrast",
    "saturate",
    "jpeg_compression",
    "pixelate",
    "defocus_blur",
    "gaussian_blur",
    "zoom_blur",
]


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_matches_reference(two_photos, name, severity):
    ref = _reference(two_photos, name, severity, seeds=[0])
    ours = _ours(two_photos, name, severity, seeds=[0])
    assert np.abs(ours - ref).mean() <= MAE_MAX


@pytest.mark.parametrize("severity", [1, 5])
def test_differentiable_jpeg_close_to_libjpeg(two_photos, severity):
    ref = _reference(two_photos, "jpeg_compression", severity, seeds=[0])
    ours = _ours(two_photos, "jpeg_compression", severity, seeds=[0], differentiable=True)
    assert np.abs(ours - ref).mean() <= MAE_MAX


@contextlib.contextmanager
def _numpy_uniform_returns(value: float):
    orig = np.random.uniform
    np.random.uniform = lambda *a, **k: value
    try:
        yield
    finally:
        np.random.uniform = orig


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("angle", [-40.0, 17.0])
def test_motion_blur_fixed_kernel_matches_reference(two_photos, severity, angle):
    with _numpy_uniform_returns(angle):
        ref = _reference(two_photos, "motion_blur", severity, seeds=[0])
    ours = _ours(two_photos, "motion_blur", severity, seeds=[0], angle_min_deg=angle, angle_max_deg=angle)
    assert np.abs(ours - ref).mean() <= MAE_MAX


# ----------------------------------------------------------------- random: statistics

NOISE = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", NOISE)
def test_noise_statistics_match_reference(two_photos, name, severity):
    seeds = [0, 1]
    ref = _reference(two_photos, name, severity, seeds)
    ours = _ours(two_photos, name, severity, seeds)
    clean = _hwc(two_photos.repeat(len(seeds), 1, 1, 1))
    _assert_change_stats(ours, ref, clean, name)
    _assert_spectrum(ours - clean, ref - clean, name)


@pytest.mark.parametrize("severity", [1, 3, 5])  # all five: test_glass_blur_with_the_same_steps_*
def test_glass_blur_statistics_match_reference(two_photos, severity):
    # the reference takes ~1.4 s per 224² image: compare on 112² centre crops
    x = two_photos[:, :, 56:168, 56:168].contiguous()
    seeds = [0, 1]
    ref = _reference(x, "glass_blur", severity, seeds)
    ours = _ours(x, "glass_blur", severity, seeds)
    clean = _hwc(x.repeat(len(seeds), 1, 1, 1))
    _assert_change_stats(ours, ref, clean, "glass_blur")
    _assert_spectrum(ours, ref, "glass_blur")


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_motion_blur_random_angle_statistics_match_reference(two_photos, severity):
    seeds = [0, 1, 2]
    ref = _reference(two_photos, "motion_blur", severity, seeds)
    ours = _ours(two_photos, "motion_blur", severity, seeds)
    clean = _hwc(two_photos.repeat(len(seeds), 1, 1, 1))
    _assert_change_stats(ours, ref, clean, "motion_blur")
    po, pr = radial_power(ours), radial_power(ref)
    keep = pr > 1e-3 * pr[0]  # angle-dependent high bands carry almost no power
    np.testing.assert_allclose(po[keep], pr[keep], rtol=REL_TOL)


# (name, seeds): fog and spatter vary a lot from draw to draw, so they get more seeds
WEATHER = [("elastic_transform", 2), ("snow", 3), ("fog", 10), ("spatter", 32)]


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name,n_seeds", WEATHER)
def test_random_corruption_statistics_match_reference(two_photos, name, n_seeds, severity):
    seeds = list(range(n_seeds))
    ref = _reference(two_photos, name, severity, seeds)
    ours = _ours(two_photos, name, severity, seeds)
    clean = _hwc(two_photos.repeat(len(seeds), 1, 1, 1))
    _assert_change_stats(ours, ref, clean, name)


@contextlib.contextmanager
def _reference_frost_texture(index: int):
    """Make the reference pick frost photo ``index`` (its first ``np.random.randint`` call)."""
    orig = np.random.randint
    calls = []

    def pick(*a, **k):
        calls.append(1)
        return index if len(calls) == 1 else orig(*a, **k)

    np.random.randint = pick
    try:
        yield calls
    finally:
        np.random.randint = orig


@pytest.mark.parametrize("severity", [1, 5])
def test_frost_statistics_match_reference(two_photos, severity):
    # averaged over the reference's five frost photos (forced in turn) vs our five tints
    refs, ours = [], []
    u8 = _u8(two_photos)
    for index in range(5):
        for seed in (0, 1):
            for i in range(len(u8)):
                with _reference_frost_texture(index) as calls:
                    refs.append(run_reference(u8[i], "frost", severity, seed=seed))
                    calls.clear()
        ours.append(_ours(two_photos, "frost", severity, [0, 1], texture_index=index))
    ref = np.stack(refs).astype(np.float64) / 255
    clean = _hwc(two_photos.repeat(10, 1, 1, 1))
    _assert_change_stats(np.concatenate(ours), ref, clean, "frost")


# ----------------------------------------------------------------- random: RNG-matched


def _record_draws(monkeypatch) -> list:
    """Record every uniform/normal array weakspot's ImageNet-C code draws, in order."""
    import weakspot.random as R
    from weakspot.degrade.imagenet_c import _common, noise, textures, weather

    draws: list = []

    def recording(orig, kind):
        def wrapped(*a, **k):
            out = orig(*a, **k)
            draws.append((kind, out))
            return out

        return wrapped

    for mod in (_common, noise, textures, weather):
        for fname in ("rand", "randn"):
            if hasattr(mod, fname):
                monkeypatch.setattr(mod, fname, recording(getattr(R, fname), fname))
    return draws


@contextlib.contextmanager
def _numpy_draws_from(draws: list):
    """Feed the reference's ``np.random.normal/uniform`` with the arrays weakspot drew (recorded
    by :func:`_record_draws`), in order, converting weakspot's channels-first layout."""
    o_normal, o_uniform = np.random.normal, np.random.uniform
    feed = iter(draws)

    def normal(loc=0.0, scale=1.0, size=None):
        size = tuple(np.atleast_1d(size))
        kind, z = next(feed)
        assert kind == "randn"
        z = z[0]  # one image
        z = z.permute(1, 2, 0) if len(size) == 3 else z.reshape(size)  # (C, H, W) → (H, W, C)
        return loc + scale * z.double().numpy()

    def uniform(low=0.0, high=1.0, size=None):
        kind, u = next(feed)
        assert kind == "rand"
        u = u[0].double().reshape((1,) if size is None else tuple(np.atleast_1d(size))).numpy()
        out = low + (high - low) * u
        return float(out[0]) if size is None else out

    np.random.normal, np.random.uniform = normal, uniform
    try:
        yield
        assert next(feed, None) is None, "the reference used fewer random arrays than weakspot drew"
    finally:
        np.random.normal, np.random.uniform = o_normal, o_uniform


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise", "fog", "snow", "motion_blur"])
def test_same_random_numbers_give_the_reference_output(two_photos, name, severity, monkeypatch):
    u8 = _u8(two_photos)
    for i in range(len(u8)):
        draws = _record_draws(monkeypatch)
        keys = KeyedBatch.from_ids(100, [f"photo{i}"], "parity")
        ours = weakspot.get_degradation(f"imagenet_c/{name}", severity=severity)(
            two_photos[i : i + 1], generator=keys
        )
        with _numpy_draws_from(draws):
            ref = run_reference(u8[i], name, severity).astype(np.float64) / 255
        assert np.abs(_hwc(ours)[0] - ref).mean() <= MAE_MAX, name


def test_glass_blur_with_the_same_steps_gives_the_reference_output(two_photos):
    """Feed the reference's per-pixel ``randint`` from the steps weakspot draws: same image."""
    from weakspot.degrade.imagenet_c.blur import glass_blur_from_steps

    x = two_photos[:1, :, 80:144, 80:144].contiguous()  # 64² keeps the reference fast
    u8 = _u8(x)[0]
    for severity, d, iters in [(1, 1, 2), (3, 2, 3), (5, 4, 2)]:
        g = torch.Generator().manual_seed(severity)
        steps = torch.randint(-d, d, (1, iters, 64, 64, 2), generator=g)
        order = [
            (it, h, w) for it in range(iters) for h in range(64 - d, d, -1) for w in range(64 - d, d, -1)
        ]
        feed = iter(order)
        orig = np.random.randint

        def randint(low, high=None, size=None, dtype=int, feed=feed, steps=steps):
            it, h, w = next(feed)
            dy, dx = steps[0, it, h, w].tolist()
            return np.array([dx, dy])  # the reference unpacks (dx, dy)

        np.random.randint = randint
        try:
            ref = run_reference(u8, "glass_blur", severity).astype(np.float64) / 255
        finally:
            np.random.randint = orig
        params = weakspot.get_spec("imagenet_c/glass_blur").resolve(severity)
        ours = glass_blur_from_steps(x, steps, params["sigma_px"], d)
        assert np.abs(_hwc(ours)[0] - ref).mean() <= MAE_MAX, severity
