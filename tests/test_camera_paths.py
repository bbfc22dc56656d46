"""One code path per computation: a capture with a gradient gives the same numbers as without.

The camera has a single implementation of every stage; autograd only records it. These tests
pin that down: for camera settings that exercise each branch (full-well and ADC clipping, low
light where shot and read noise dominate, defocus, several pixel sizes, no CFA with fixed-pattern
noise, per-image scene scaling, both demosaics, linear output), ``capture(x)`` and
``capture(x.requires_grad_())`` must agree bit for bit at every stage, and the gradient must
reach the input with the analytic value of the straight-through chain.
"""

import math

import pytest
import torch

from weakspot.camera import ISP, Camera, Optics, Scene, Sensor
from weakspot.camera.scene import PHOTONS_PER_LUX
from weakspot.camera.sensor import straight_through, straight_through_

_STAGES = ("photons", "electrons", "readout_e", "dn", "linear_rgb", "image")

_CAMERAS = {
    "default": Camera(),
    # 8× the default exposure: the reference white needs ≈ 7× the well, most pixels clip
    "clipping": Camera().replace(exposure_s=0.1),
    # 1/125 of the default exposure: tens of electrons, Poisson (exact) and 10 e⁻ read noise dominate
    "low_light": Camera().replace(exposure_s=1e-4),
    "defocus": Camera(optics=Optics(defocus_diopters=2.0)),
    "pixel_5.6um": Camera(sensor=Sensor().scaled_to_pixel(5.6)),
    "pixel_4.2um_area_well": Camera(sensor=Sensor().scaled_to_pixel(4.2, well="area")),
    "pixel_1.4um": Camera(sensor=Sensor().scaled_to_pixel(1.4)),
    "no_cfa_fpn": Camera(sensor=Sensor(cfa=None, prnu_percent=3.0, dsnu_e=5.0, fpn_seed=7)),
    "per_image_mean_malvar_linear": Camera(
        scene=Scene(per_image_mean=True), isp=ISP(demosaic="malvar", output="linear", digital_gain=1.5)
    ),
}


def _inputs(photos: torch.Tensor, side: int) -> torch.Tensor:
    # 64²: the whole batch goes through one vectorised pow; 30²: image by image (see _pow_per_image)
    return photos[:2, :, 40 : 40 + side, 60 : 60 + side].contiguous()


@pytest.mark.parametrize("side", [64, 30])
@pytest.mark.parametrize("name", sorted(_CAMERAS))
def test_capture_is_identical_with_and_without_gradient(name, side, photos):
    cam = _CAMERAS[name]
    x = _inputs(photos, side)
    plain = cam.capture(x.clone(), generator=3)
    xg = x.clone().requires_grad_(True)
    graded = cam.capture(xg, generator=3)
    for stage in _STAGES:
        a, b = getattr(plain, stage), getattr(graded, stage)
        assert not a.requires_grad
        assert torch.equal(a, b.detach()), f"{name}: '{stage}' differs with a gradient"
    # the graph reaches the input through every differentiable stage
    graded.image.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and float(xg.grad.abs().sum()) > 0
    assert torch.equal(xg.detach(), x)  # the input itself is never written


def test_the_settings_exercise_what_they_claim(photos):
    x = _inputs(photos, 64)
    well = Sensor().full_well_e
    clip = _CAMERAS["clipping"].capture(x, generator=0)
    assert float((clip.electrons == well).float().mean()) > 0.3  # the full-well clip is active
    assert float((clip.linear_rgb == 1).float().mean()) > 0.3  # ... and the ISP's clip to 1
    low = _CAMERAS["low_light"].capture(x, generator=0)
    mean_e = float(low.photons.mean()) * 0.5  # ≈ QE × mean photons
    assert 3 < mean_e < 60  # shot noise √N and 10 e⁻ read noise are comparable with the signal
    assert float((low.readout_e - low.electrons).std()) == pytest.approx(10.0, rel=0.1)
    assert float((low.electrons - low.electrons.round()).abs().max()) == 0  # integer counts
    assert _CAMERAS["defocus"].capture(x, generator=0).psf.shape[-1] > 1
    assert _CAMERAS["pixel_5.6um"].capture(x, generator=0).dn.shape[-1] == 32
    assert _CAMERAS["pixel_1.4um"].capture(x, generator=0).dn.shape[-1] == 128
    fpn = _CAMERAS["no_cfa_fpn"].capture(x, generator=0)
    assert fpn.electrons.shape[1] == 3


def _srgb_decoding_derivative(x: torch.Tensor) -> torch.Tensor:
    """d/dx of the IEC 61966-2-1 sRGB decoding, written from the standard."""
    return torch.where(
        x <= 0.04045, torch.full_like(x, 1 / 12.92), (2.4 / 1.055) * ((x + 0.055) / 1.055) ** 1.4
    )


@pytest.mark.parametrize("exposure_s", [0.0125, 0.1])
def test_straight_through_gradient_of_electrons_and_dn_is_the_analytic_one(exposure_s, photos):
    """Shot noise, the well and the ADC are straight-through: d(electrons)/dx is the derivative of
    the mean photo-electron count, QE_c · photons-per-unit_c · sRGB'(x), even where the well clips,
    and d(dn)/dx is that times the conversion gain (rounding and ADC clip pass the gradient on)."""
    cam = Camera().replace(exposure_s=exposure_s)
    s = cam.sensor
    x = _inputs(photos, 30).to(torch.float64).requires_grad_(True)
    cap = cam.capture(x, generator=1)
    (de,) = torch.autograd.grad(cap.electrons.sum(), x, retain_graph=True)
    (ddn,) = torch.autograd.grad(cap.dn.sum(), x)
    # photons per unit linear value: scene white (mean_luminance / mid_grey) cd/m² → lux on the
    # sensor (camera equation π T / (1 + 4N²), as ISETCam) → photons s⁻¹ µm⁻² per band → × area × t
    lux = (
        cam.scene.mean_luminance_cd_m2
        / cam.scene.mid_grey
        * math.pi
        * cam.optics.transmittance
        / (1 + 4 * cam.optics.f_number**2)
    )
    area_um2 = s.pixel_size_um**2 * s.fill_factor
    per_band = torch.tensor(
        [lux * p * q * area_um2 * exposure_s for p, q in zip(PHOTONS_PER_LUX, s.qe_rgb, strict=True)],
        dtype=torch.float64,
    )
    h, w = x.shape[-2:]
    band = torch.zeros(3, h, w, dtype=torch.float64)  # RGGB: which band each pixel records
    band[0, 0::2, 0::2] = 1
    band[1, 0::2, 1::2] = band[1, 1::2, 0::2] = 1
    band[2, 1::2, 1::2] = 1
    expected = band * per_band.view(3, 1, 1) * _srgb_decoding_derivative(x.detach())
    torch.testing.assert_close(de, expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(ddn, expected * s.conversion_gain, rtol=1e-9, atol=0)
    if exposure_s > 0.05:
        assert float((cap.electrons == s.full_well_e).float().mean()) > 0.3  # clipped pixels keep a gradient


def test_straight_through_forward_is_exact_and_gradient_is_identity():
    g = torch.Generator().manual_seed(0)
    x = 10 ** (torch.rand(10_000, generator=g) * 8 - 3)  # 1e-3 … 1e5
    value = torch.rand(10_000, generator=g)  # fine bits far below x's ulp: x + (value − x) would round
    xg = x.clone().requires_grad_(True)
    out = straight_through(xg, value)
    assert torch.equal(out.detach(), value)
    out.sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))
    assert straight_through(x, value) is value  # no graph: the value itself


def test_in_place_straight_through_agrees_with_and_without_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 33, 35, generator=g) * 3000 + 1000

    def op_(t):
        return t.round_().clamp_(0.0, 4095.0)

    reference = x.round().clamp(0.0, 4095.0)
    plain_in = x.clone()
    plain = straight_through_(plain_in, op_)
    leaf = x.clone().requires_grad_(True)
    graded = straight_through_(leaf * 1.0, op_)
    assert torch.equal(plain, reference) and torch.equal(graded.detach(), reference)
    assert plain.data_ptr() == plain_in.data_ptr()  # without a graph: in place, no copy
    graded.sum().backward()
    assert torch.equal(leaf.detach(), x) and torch.equal(leaf.grad, torch.ones_like(x))
