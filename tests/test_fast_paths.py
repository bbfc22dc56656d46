"""CPU fast paths of the ImageNet-C corruptions (OpenCV / Pillow, chosen inside the public function).

Every fast-pathed corruption runs the same batch through both paths — the fast one (CPU, no
gradient wanted) and the torch reference (the same call on an input that requires a gradient)
— and the two must agree within a stated float tolerance; a spy checks which path ran, so the
comparison cannot silently compare the torch path with itself. The fast filters are also checked
against SciPy's ``ndimage`` (an independent implementation of the same convolution and borders).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import weakspot
from weakspot.degrade.imagenet_c import _cpu, blur, digital

pytest.importorskip("cv2")
ndimage = pytest.importorskip("scipy.ndimage")

#: fast path vs torch path, float32, values in [0, 1]: float rounding of different summation orders
TOL_FILTER = 2e-6
#: saturate: OpenCV's float32 HSV round trip (hue in degrees) vs the closed form (measured ≤ 2.1e-5, at scale 20).
#: A near-grey pixel's hue (V − min < 10⁻³, never on the 8-bit grid: there V − min ≥ 1/255) is
#: ill-conditioned in float32 (OpenCV computes it from differences of nearly equal values), so
#: those pixels get ≤ 1/255 instead
TOL_HSV = 1e-4
NEAR_GREY = 1e-3


def _assert_hsv_close(out: np.ndarray, want: np.ndarray, x: torch.Tensor, channel_axis: int) -> None:
    chroma = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)).numpy()
    if channel_axis == -1:
        chroma = chroma.transpose(0, 2, 3, 1)
    diff = np.abs(out - want)
    assert diff[np.broadcast_to(chroma >= NEAR_GREY, diff.shape)].max() <= TOL_HSV
    assert diff.max() <= 1 / 255


#: elastic: the field differs by float rounding (~1e-7 px), the bilinear samples by ~gradient × that
TOL_ELASTIC = 1e-4

#: (corruption, the _cpu helper its fast path calls, tolerance)
FAST = [
    ("gaussian_blur", "sep_filter_planes", TOL_FILTER),
    ("pixelate", "pil_pixelate_planes", TOL_FILTER),
    ("saturate", "hsv_saturate_images", TOL_HSV),
    ("elastic_transform", "sep_filter_planes", TOL_ELASTIC),
]


@pytest.fixture(scope="module")
def batch(photos) -> torch.Tensor:
    """Three real photos, one of them made grey, with a black and a white patch (edge cases)."""
    x = photos[:3].clone()
    x[2] = x[2].mean(0, keepdim=True)
    x[:, :, :12, :12] = 0.0
    x[:, :, -12:, -12:] = 1.0
    return x


class _Spy:
    def __init__(self, monkeypatch, name: str):
        self.calls = 0
        real = getattr(_cpu, name)

        def spy(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(_cpu, name, spy)


def _both_paths(name: str, severity: int, x: torch.Tensor, helper: str, monkeypatch):
    deg = weakspot.get_degradation(f"imagenet_c/{name}", severity=severity)
    spy = _Spy(monkeypatch, helper)
    fast = deg(x, generator=7)
    assert spy.calls == 1, "the fast path did not run"
    xg = x.clone().requires_grad_(True)
    ref = deg(xg, generator=7)
    assert spy.calls == 1, "the torch path called the fast helper"
    assert ref.requires_grad
    return fast, ref.detach()


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name,helper,tol", FAST)
def test_fast_path_matches_torch_path(name, helper, tol, severity, batch, monkeypatch):
    fast, ref = _both_paths(name, severity, batch, helper, monkeypatch)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    if name == "saturate":
        _assert_hsv_close(fast.numpy(), ref.numpy(), batch, channel_axis=1)
    else:
        assert (fast - ref).abs().max().item() <= tol
    assert fast.min() >= 0 and fast.max() <= 1


@pytest.mark.parametrize("name,helper,tol", FAST)
def test_fast_path_single_channel_and_strided_input(name, helper, tol, batch, monkeypatch):
    """A 1-channel batch (saturate: the identity, no fast path) and a non-contiguous view (a crop)
    take the fast path and still agree."""
    for x in (batch[:, :1], batch[:, :, 5:205, 7:190])[name == "saturate" :]:
        fast, ref = _both_paths(name, 3, x, helper, monkeypatch)
        if name == "saturate":
            _assert_hsv_close(fast.numpy(), ref.numpy(), x, channel_axis=1)
        else:
            assert (fast - ref).abs().max().item() <= tol


def test_float64_filters_match_torch_path(batch, monkeypatch):
    fast, ref = _both_paths("gaussian_blur", 4, batch.double(), "sep_filter_planes", monkeypatch)
    assert fast.dtype == torch.float64
    assert (fast - ref).abs().max().item() <= 1e-12


def test_gradients_take_the_torch_path(batch):
    """An input that wants a gradient gets one, through the differentiable torch path."""
    for name in ("gaussian_blur", "pixelate", "elastic_transform", "saturate"):
        x = batch[:1].clone().requires_grad_(True)
        weakspot.get_degradation(f"imagenet_c/{name}", severity=3)(x, generator=1).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, name


def test_small_images_fall_back_to_torch(monkeypatch):
    """Images smaller than the mirrored border the filter needs use the torch path (its border rule)."""
    spy = _Spy(monkeypatch, "sep_filter_planes")
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    out = digital.elastic_transform(x, generator=0, sigma_frac=0.5)  # σ = 3 px: 19 taps on 6×6
    assert spy.calls == 0 and out.shape == x.shape


@pytest.mark.parametrize("sigma_px", [1.0, 3.0, 6.0])
def test_fast_gaussian_blur_matches_scipy(sigma_px, batch):
    """skimage's (the reference's) Gaussian: scipy.ndimage.gaussian_filter, mode 'nearest', truncate 4;
    at these σ its radius ⌊4σ + 0.5⌋ equals weakspot's ⌈4σ⌉."""
    x = batch.double()
    out = blur.gaussian_blur(x, sigma_px=sigma_px)
    want = np.stack(
        [
            [ndimage.gaussian_filter(p, sigma_px, mode="nearest", truncate=4.0) for p in img]
            for img in x.numpy()
        ]
    )
    np.testing.assert_allclose(out.numpy(), np.clip(want, 0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("radius_px,alias_blur_px", [(3, 0.1), (6, 0.5), (10, 0.5)])
def test_defocus_matches_scipy_correlate(radius_px, alias_blur_px, batch):
    """The reference's cv2.filter2D (BORDER_REFLECT_101) is ndimage.correlate with mode 'mirror'
    (defocus has no fast path: OpenCV's filter2D measured no faster than the batched FFT)."""
    x = batch.double()
    k = blur.disk_kernel(radius_px, alias_blur_px).numpy()
    out = blur.defocus_blur(x, radius_px=radius_px, alias_blur_px=alias_blur_px)
    want = np.stack([[ndimage.correlate(p, k, mode="mirror") for p in img] for img in x.numpy()])
    np.testing.assert_allclose(out.numpy(), np.clip(want, 0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.6, 0.4, 0.25])
def test_fast_pixelate_is_pillows_box_then_nearest(scale, batch):
    """On 8-bit images Pillow's own uint8 BOX/NEAREST resize (the reference's) differs from the float
    fast path only by Pillow's fixed-point 8-bit arithmetic on the small image (≤ 1 level, rarely)."""
    from PIL import Image

    x = torch.round(batch * 255) / 255
    out = digital.pixelate(x, scale=scale)
    h, w = x.shape[-2:]
    small = (int(w * scale), int(h * scale))
    u8 = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    want = (
        np.stack(
            [
                np.asarray(
                    Image.fromarray(a)
                    .resize(small, Image.Resampling.BOX)
                    .resize((w, h), Image.Resampling.NEAREST)
                )
                for a in u8
            ]
        ).astype(np.float64)
        / 255
    )
    diff = np.abs(out.permute(0, 2, 3, 1).double().numpy() - want)
    assert diff.max() <= 1 / 255 + 1e-6
    assert diff.mean() < 0.5 / 255  # rounding (measured ≤ 0.38/255); OpenCV's AREA/NEAREST grid: ≥ 5/255


def test_fast_path_predicate():
    x = torch.zeros(1, 3, 8, 8)
    assert _cpu.fast_path_ok(x)
    assert not _cpu.fast_path_ok(x.half())
    assert not _cpu.fast_path_ok(x.clone().requires_grad_(True))
    with torch.no_grad():
        assert _cpu.fast_path_ok(x.clone().requires_grad_(True))
    assert not _cpu.fast_path_ok(x, min_side=9)
    assert _cpu.fast_path_ok(x, needs_cv2=True) == _cpu.have_cv2()


def test_nearest_index_is_pillows_at_every_size():
    """The torch path's NEAREST grid equals Pillow's (the reference's upsampling) for all sizes,
    including the ties its running-sum arithmetic decides (4 -> 7: output 3 reads input 1)."""
    from PIL import Image

    for n_out in range(1, 260):
        for frac in (0.6, 0.5, 0.4, 0.37, 0.3, 0.25):
            n_in = max(1, int(n_out * frac))
            row = np.arange(n_in, dtype=np.float32)[None].repeat(2, 0)
            want = np.asarray(Image.fromarray(row).resize((n_out, 2), Image.Resampling.NEAREST))[0]
            assert np.array_equal(digital._pil_nearest_index(n_in, n_out).numpy(), want.astype(np.int64)), (
                n_in,
                n_out,
            )


@pytest.mark.parametrize("scale,shift", [(0.3, 0.0), (2.0, 0.0), (20.0, 0.2)])
def test_fast_saturate_is_skimages_hsv_round_trip(scale, shift, batch):
    """The reference's saturate: skimage's rgb2hsv, S·scale + shift clipped, hsv2rgb (float64)."""
    from skimage.color import hsv2rgb, rgb2hsv

    out = digital.saturate(batch, saturation_scale=scale, saturation_shift=shift)
    hsv = rgb2hsv(batch.permute(0, 2, 3, 1).double().numpy(), channel_axis=-1)
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    want = np.clip(hsv2rgb(hsv, channel_axis=-1), 0, 1)
    _assert_hsv_close(out.permute(0, 2, 3, 1).numpy(), want, batch, channel_axis=-1)


def test_fast_gaussian_blur_on_images_smaller_than_its_kernel(monkeypatch):
    """Replicated borders need no minimum size: a 5×7 image under a 25-tap kernel agrees too."""
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    fast, ref = _both_paths("gaussian_blur", 3, x, "sep_filter_planes", monkeypatch)
    assert (fast - ref).abs().max().item() <= TOL_FILTER
