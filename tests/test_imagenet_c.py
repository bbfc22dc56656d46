"""weakspot's ImageNet-C: registry, shapes, seeding, gradients, and the building blocks
checked against independent references (OpenCV, SciPy, scikit-image, Pillow)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import weakspot
from weakspot.cli import main
from weakspot.degrade.imagenet_c import CORRUPTIONS, corrupt, mixed
from weakspot.errors import InvalidParameterError
from weakspot.random import keyed_generator

NAMES = [f"imagenet_c/{n}" for n in CORRUPTIONS]


@pytest.fixture(scope="session")
def small(photos) -> torch.Tensor:
    """Two real photos at 48×40 (non-square, small: fast)."""
    return torch.nn.functional.interpolate(photos[:2], size=(48, 40), mode="area").clamp(0, 1)


# ------------------------------------------------------------------ registry and contract


def test_all_nineteen_and_mixed_are_registered():
    names = weakspot.list_degradations("imagenet_c/*")
    assert sorted(names) == sorted([*NAMES, "imagenet_c/mixed"])
    for spec in weakspot.list_specs("imagenet_c/*"):
        assert spec.family == "imagenet_c"
        assert sorted(spec.severities) == [1, 2, 3, 4, 5]
    assert weakspot.get_degradation("imagenet_c/fog", severity=3).params == {
        "fog_strength": 2.5,
        "wibble_decay": 1.7,
    }
    assert weakspot.get_degradation("imagenet_c/shot_noise", severity=5).params == {"photons": 3.0}


def test_cli_lists_and_applies_them(tmp_path, photo_uint8, capsys):
    assert main(["list", "imagenet_c/*", "--no-severities"]) == 0
    assert "20 degradations" in capsys.readouterr().out
    from PIL import Image

    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(photo_uint8[:64, :64]).save(src)
    assert main(["degrade", str(src), str(dst), "--op", "imagenet_c/glass_blur", "--severity", "2"]) == 0
    assert np.asarray(Image.open(dst)).shape == (64, 64, 3)
    assert main(["degrade", str(src), str(dst), "--op", "imagenet_c/fog", "--severity", "9"]) == 2
    assert "severity" in capsys.readouterr().err


@pytest.mark.parametrize("name", NAMES)
def test_any_size_grey_and_float64(name, small):
    deg = weakspot.get_degradation(name, severity=5)
    for x in (small, small[:1, :1, :33, :37].contiguous(), small.double()):
        y = deg(x, generator=0)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        if not (name.endswith("saturate") and x.shape[1] == 1):  # grey has no saturation (as the reference)
            assert (y - x).abs().mean() > 1e-4  # it does corrupt


@pytest.mark.parametrize("name", [n for n in NAMES if weakspot.get_spec(n).random])
def test_seeding_same_bytes_and_batch_invariance(name, small):
    deg = weakspot.get_degradation(name, severity=3)
    a, b = deg(small, generator=7), deg(small, generator=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, deg(small, generator=8))
    # per-image keyed generators: an image's result does not depend on its batch
    x = torch.cat([small, small.flip(-1)])
    batch = deg(x, generator=[keyed_generator(3, i) for i in range(len(x))])
    for i in range(len(x)):
        alone = deg(x[i : i + 1], generator=[keyed_generator(3, i)])
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=0)


def test_user_mistakes_are_clear_errors(small):
    with pytest.raises(InvalidParameterError, match="severity"):
        weakspot.get_degradation("imagenet_c/snow", severity=0)
    with pytest.raises(InvalidParameterError, match="photons"):
        weakspot.get_degradation("imagenet_c/shot_noise", photons=0)
    with pytest.raises(InvalidParameterError, match="generator"):
        weakspot.get_degradation("imagenet_c/gaussian_noise")(small, generator=[keyed_generator(1)])
    with pytest.raises(InvalidParameterError, match="severity_min"):
        weakspot.get_degradation("imagenet_c/mixed", severity_min=4, severity_max=2)
    with pytest.raises(InvalidParameterError, match="k"):
        weakspot.get_degradation("imagenet_c/mixed", k=5, subset="held_out")


# ------------------------------------------------------------------ gradients


DIFFERENTIABLE = [n for n in NAMES if weakspot.get_spec(n).differentiable]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradients_flow(name, small):
    x = (small * 0.6 + 0.2).clone().requires_grad_(True)
    params = {"differentiable": True} if name.endswith("jpeg_compression") else {}
    y = weakspot.get_degradation(name, severity=2, **params)(x, generator=0)
    y.mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name,params",
    [
        ("contrast", {}),
        ("brightness", {}),
        ("saturate", {}),
        ("defocus_blur", {}),
        ("gaussian_blur", {}),
        ("zoom_blur", {}),
        ("pixelate", {}),
        ("motion_blur", {"angle_min_deg": 20.0, "angle_max_deg": 20.0}),
        ("fog", {}),
    ],
)
def test_gradient_matches_finite_differences(name, params, small):
    """<∇f(x), v> against (f(x + εv) − f(x − εv)) / 2ε, in float64, away from the clip points."""
    jitter = torch.rand(small.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1e-3
    x = small.double() * 0.5 + 0.25 + jitter  # break channel ties (max/min in HSV are kinks)
    deg = weakspot.get_degradation(f"imagenet_c/{name}", severity=1, **params)
    w = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (deg(xg, generator=3) * w).sum().backward()
    eps = 1e-6
    fd = ((deg(x + eps * v, generator=3) - deg(x - eps * v, generator=3)) * w).sum() / (2 * eps)
    assert float((xg.grad * v).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------ building blocks vs references


def test_brightness_and_saturate_equal_the_hsv_round_trip():
    import skimage.color

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)
    x[..., :4, :] = x[:, :1, :4, :]  # grey pixels (hue undefined)
    x[..., 0, 0] = 0.0  # black
    hsv = skimage.color.rgb2hsv(x[0].permute(1, 2, 0).numpy())
    for dv in (0.1, 0.5):
        h = hsv.copy()
        h[..., 2] = np.clip(h[..., 2] + dv, 0, 1)
        ref = skimage.color.hsv2rgb(h)
        ours = weakspot.degrade.imagenet_c.brightness(x, delta_v=dv)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-9)
    for a, b in ((0.1, 0.0), (5.0, 0.1), (20.0, 0.2)):
        h = hsv.copy()
        h[..., 1] = np.clip(h[..., 1] * a + b, 0, 1)
        ref = skimage.color.hsv2rgb(h)
        ours = weakspot.degrade.imagenet_c.saturate(x, saturation_scale=a, saturation_shift=b)
        np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), ref, atol=1e-9)


@pytest.mark.parametrize("size", [(37, 53), (64, 45)])
def test_pixelate_equals_pillow(photo_uint8, size):
    from PIL import Image

    h, w = size
    a = photo_uint8[:h, :w]
    for c in (0.6, 0.25):
        im = Image.fromarray(a)
        ref = np.asarray(im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.NEAREST)) / 255
        x = torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255
        ours = weakspot.degrade.imagenet_c.pixelate(x, scale=c)[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - ref).max() <= 1 / 255 + 1e-9  # Pillow rounds its intermediate to 8 bits


def test_jpeg_exact_is_libjpeg_and_approximation_is_close(photos):
    from PIL import Image

    x = torch.round(photos[:2, :, :64, :80] * 255) / 255
    for q in (25, 7):
        ours = weakspot.degrade.imagenet_c.jpeg_compression(x, quality=q)
        approx = weakspot.degrade.imagenet_c.jpeg_compression(x, quality=q, differentiable=True)
        for i in range(2):
            buf = io.BytesIO()
            Image.fromarray((x[i] * 255).round().byte().permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=q)
            ref = np.asarray(Image.open(buf)).astype(np.float64) / 255
            np.testing.assert_array_equal(
                (ours[i] * 255).round().permute(1, 2, 0).double().numpy(), ref * 255
            )
            assert np.abs(approx[i].permute(1, 2, 0).double().numpy() - ref).mean() <= 2 / 255


def test_poisson_sampler_is_poisson():
    from scipy import stats

    from weakspot.degrade.imagenet_c.noise import poisson_8bit

    for photons, level in ((3.0, 255), (12.0, 77), (60.0, 200)):
        x = torch.full((1, 1, 300, 300), level / 255)
        k = poisson_8bit(x, photons, generator=1).numpy().ravel().astype(int)
        lam = photons * level / 255
        obs = np.bincount(k, minlength=200)[:200]
        exp = stats.poisson.pmf(np.arange(200), lam) * k.size
        keep = exp > 5
        assert stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue > 1e-3
        assert k.mean() == pytest.approx(lam, rel=0.01)


def test_canny_equalize_and_distance_equal_opencv_and_scipy(photo_uint8):
    import cv2
    from scipy import ndimage

    from weakspot.degrade.imagenet_c.weather import _edt_truncated, _equalize_hist_u8, canny

    grey = cv2.cvtColor(photo_uint8, cv2.COLOR_RGB2GRAY)[:120, :150]
    t = torch.from_numpy(grey).float()[None, None]
    edges = canny(t, 50, 150)[0, 0].numpy()
    np.testing.assert_array_equal(edges, cv2.Canny(grey, 50, 150) > 0)
    # a batch: each image's edges on its own (the edge candidates are gathered batch-wide)
    others = [
        np.ascontiguousarray(grey[::-1, ::-1]),
        cv2.cvtColor(photo_uint8, cv2.COLOR_RGB2GRAY)[60:180, 40:190],
    ]
    batch = canny(torch.from_numpy(np.stack([grey, *others])).float()[:, None], 30, 90)
    for i, g in enumerate([grey, *others]):
        np.testing.assert_array_equal(batch[i, 0].numpy(), cv2.Canny(g, 30, 90) > 0)
    np.testing.assert_array_equal(_equalize_hist_u8(t)[0, 0].numpy(), cv2.equalizeHist(grey))
    dist = _edt_truncated(torch.from_numpy(edges)[None, None], 20)[0, 0].numpy()
    ref = np.minimum(ndimage.distance_transform_edt(~edges), 20)
    np.testing.assert_allclose(dist, ref, atol=1e-5)


def test_glass_shuffle_map_equals_the_sequential_scan():
    from weakspot.degrade.imagenet_c.blur import glass_shuffle_map, simulate_glass_shuffle

    for d, iters in ((1, 2), (2, 3), (3, 2), (4, 2), (9, 1)):  # d = 3: P = 8 > 2d; d = 9: int16 codes
        steps = torch.randint(-d, d, (2, iters, 30, 27, 2), generator=torch.Generator().manual_seed(d))
        ours = glass_shuffle_map(steps, d)
        for b in range(2):
            np.testing.assert_array_equal(
                ours[b].numpy(), simulate_glass_shuffle(steps[b].numpy(), d).ravel()
            )


def test_glass_step_codes_are_uniform_steps_and_keyed_per_image():
    """The drawn codes decode to steps uniform on [-d, d)² (chi-square over the 4d² steps, for
    bit-field and base-2d digit extraction) and an image's codes come from its own generator."""
    from weakspot.degrade.imagenet_c.glass import _code_base, glass_step_codes

    for d in (1, 2, 3, 4, 5, 9):  # d = 9: int16 codes
        codes = glass_step_codes((3, 2, 60, 70), d, 11).long()
        base = _code_base(d)
        dy, dx = codes // base - d, codes % base - d
        assert dy.min() == -d and dy.max() == d - 1 and dx.min() == -d and dx.max() == d - 1
        counts = torch.bincount(((dy + d) * 2 * d + dx + d).view(-1), minlength=4 * d * d).double()
        expected = codes.numel() / (4 * d * d)
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        dof = 4 * d * d - 1
        assert chi2 < dof + 6 * (2 * dof) ** 0.5, (d, chi2)
        batch = glass_step_codes((3, 2, 60, 70), d, [keyed_generator(4, i) for i in range(3)])
        assert torch.equal(batch[2], glass_step_codes((1, 2, 60, 70), d, [keyed_generator(4, 2)])[0])
        assert torch.equal(glass_step_codes((2, 1, 9, 9), d, 5), glass_step_codes((2, 1, 9, 9), d, 5))


def test_glass_blur_tiles_do_not_change_a_byte(photos):
    """The CPU pipeline runs in cache-sized tiles of images: one image per tile, a last tile
    shorter than the others, the default and the whole batch in one tile give identical bytes."""
    from weakspot.degrade.imagenet_c.glass import glass_blur_codes, glass_step_codes

    x = torch.nn.functional.interpolate(photos[:3], size=(50, 61), mode="area").clamp(0, 1)
    for sigma, d, iters in ((0.7, 1, 2), (1.0, 2, 3), (1.1, 3, 2)):
        codes = glass_step_codes((3, iters, 50, 61), d, 2)
        whole = glass_blur_codes(x, codes.clone(), sigma, d, tile_bytes=1 << 40)
        assert torch.equal(glass_blur_codes(x, codes.clone(), sigma, d, tile_bytes=1), whole)
        two_images = 2 * x[0].numel() * x.element_size()  # tiles of 2 and 1
        assert torch.equal(glass_blur_codes(x, codes.clone(), sigma, d, tile_bytes=two_images), whole)
        assert torch.equal(glass_blur_codes(x, codes.clone(), sigma, d), whole)


def test_glass_blur_fast_path_matches_the_plain_reference_and_autograd_bytes(photos):
    """The buffered CPU pipeline (blur taps with summed edge weights, the 8-bit scale folded
    into the blur weights, fixed-round pointer jumping) against the plain float64 reference
    (:func:`glass_blur_reference`, whose shuffle map equals the literal sequential scan):
    equal up to float rounding, apart from rare 8-bit truncations that land on the other
    level. With autograd recording the output is the same bytes, and the gradient flows."""
    from weakspot.degrade.imagenet_c.glass import (
        glass_blur_codes,
        glass_blur_reference,
        glass_shuffle_map_reference,
        glass_step_codes,
        simulate_glass_shuffle,
    )

    x = photos[:2, :, 60:124, 50:130].contiguous()
    for sigma, d, iters in ((0.7, 1, 2), (1.5, 4, 2), (1.1, 3, 2)):
        codes = glass_step_codes((2, iters, 64, 80), d, 3)
        fast = glass_blur_codes(x, codes.clone(), sigma, d)
        ref = glass_blur_reference(x, codes.clone(), sigma, d)
        diff = (fast - ref).abs()
        assert (diff > 1e-5).float().mean() < 0.01 and diff.max() < 2 / 255, (sigma, diff.max())
        xg = x.clone().requires_grad_()
        with_grad = glass_blur_codes(xg, codes.clone(), sigma, d)
        assert torch.equal(with_grad.detach(), fast)
        with_grad.sum().backward()
        assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    # the reference's shuffle map is the literal scan (dense codes → (dy, dx) steps)
    from weakspot.degrade.imagenet_c.glass import _code_base

    d = 2
    codes = glass_step_codes((1, 2, 13, 11), d, 9)
    steps = torch.stack(
        [(codes.long() >> (_code_base(d).bit_length() - 1)) - d, (codes.long() & (_code_base(d) - 1)) - d], -1
    )
    np.testing.assert_array_equal(
        glass_shuffle_map_reference(codes, d)[0].numpy(), simulate_glass_shuffle(steps[0].numpy(), d).ravel()
    )


def test_zoom_stack_matrix_equals_scipy_zooms_and_the_resampling_path():
    """The cached sparse zoom matrix (the CPU fast path) against the reference's geometry run
    in SciPy (``ndimage.zoom``, order 1, corner-aligned) and against the per-factor path."""
    from scipy import ndimage

    from weakspot.degrade.imagenet_c.blur import (
        zoom_blur,
        zoom_blur_resampled,
        zoom_factors,
        zoom_stack_matrix,
    )

    gen = torch.Generator().manual_seed(3)
    for (h, w), (stop, step) in (
        ((33, 37), (1.31, 0.03)),
        ((64, 48), (1.16, 0.01)),
        ((40, 40), (1.26, 0.02)),
    ):
        x = torch.rand(2, 3, h, w, generator=gen, dtype=torch.float64)
        factors = tuple(float(z) for z in zoom_factors(stop, step))
        m = zoom_stack_matrix(h, w, factors, torch.float64)
        np.testing.assert_allclose(m.to_dense().sum(1).numpy(), 1.0, atol=1e-12)  # a weighted mean
        ref = x[0, 0].numpy().copy()
        for z in factors:
            ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
            top, left = (h - ch) // 2, (w - cw) // 2
            zoomed = ndimage.zoom(x[0, 0].numpy()[top : top + ch, left : left + cw], z, order=1)[:h, :w]
            zoomed = np.pad(zoomed, ((0, h - zoomed.shape[0]), (0, w - zoomed.shape[1])), mode="edge")
            ref += zoomed
        ref = np.clip(ref / (len(factors) + 1), 0, 1)
        fast = zoom_blur(x, zoom_stop=stop, zoom_step=step)
        np.testing.assert_allclose(fast[0, 0].numpy(), ref, atol=1e-6)
        np.testing.assert_allclose(fast.numpy(), zoom_blur_resampled(x, factors).numpy(), atol=1e-9)


def test_filters_agree_with_direct_convolution():
    from weakspot.degrade.filters import (
        fast_gaussian_blur2d,
        fft_filter2d,
        filter2d,
        gaussian_blur2d,
        shift_filter2d,
    )
    from weakspot.degrade.imagenet_c._common import fft_correlate, motion_kernel, next_fast_len

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 50, generator=g, dtype=torch.float64)
    k = torch.rand(2, 7, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fft_filter2d(x, k, "replicate"), filter2d(x, k, "replicate"))
    torch.testing.assert_close(
        shift_filter2d(x, k[0, :5, :3], "reflect"), filter2d(x, k[0, :5, :3], "reflect")
    )
    for sigma in (0.7, 3.0, 6.0):  # shifted sums and band-matrix products
        for border in ("replicate", "reflect"):
            torch.testing.assert_close(
                fast_gaussian_blur2d(x, sigma, border=border), gaussian_blur2d(x, sigma, border=border)
            )
    mk = motion_kernel(6, 3.0, torch.tensor([-40.0, 10.0]), 40, 50, torch.float64)
    torch.testing.assert_close(fft_correlate(x, mk), filter2d(x, mk, "replicate"))
    assert [next_fast_len(n) for n in (7, 224, 257, 301)] == [8, 225, 270, 320]


def test_plasma_fractal_range_and_roughness():
    from weakspot.degrade.imagenet_c.textures import plasma_fractal

    rough = plasma_fractal(4, 64, 1.4, generator=0)
    smooth = plasma_fractal(4, 64, 3.0, generator=0)
    for m in (rough, smooth):
        assert float(m.amin()) == 0.0 and float(m.amax()) == 1.0
    # a smaller decay keeps more fine-scale energy: larger neighbour differences
    assert (rough.diff(dim=-1).abs().mean() / rough.std()) > (smooth.diff(dim=-1).abs().mean() / smooth.std())
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(1, 100)


# ------------------------------------------------------------------ mixed


def test_mixed_applies_k_registered_corruptions_per_image(small):
    # held-out subset, k = 1, severity 3: every image must equal one of the four corruptions;
    # the deterministic two (gaussian_blur, saturate) can be recognised exactly
    x = small.repeat(8, 1, 1, 1)
    out = mixed(
        x,
        generator=[keyed_generator("mix", i) for i in range(len(x))],
        k=1,
        severity_min=3,
        severity_max=3,
        subset="held_out",
    )
    det = [corrupt(x, "gaussian_blur", 3), corrupt(x, "saturate", 3)]
    hits = sum(int(any(torch.allclose(out[i], d[i], atol=1e-6) for d in det)) for i in range(len(x)))
    assert 2 <= hits <= 14  # ~half of 16
    assert all((out[i] - x[i]).abs().mean() > 1e-4 for i in range(len(x)))


def test_mixed_is_registered_and_batch_invariant(small):
    deg = weakspot.get_degradation("imagenet_c/mixed", k=2)
    gens = lambda: [keyed_generator("m", i) for i in range(2)]  # noqa: E731
    both = deg(small, generator=gens())
    one = deg(small[1:], generator=gens()[1:])
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=0)
    assert torch.equal(deg(small, generator=5), deg(small, generator=5))
