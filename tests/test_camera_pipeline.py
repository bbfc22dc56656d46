"""The whole camera: rendering, ISP, gradients, registered degradations, errors, CLI."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import weakspot
from weakspot.camera import ISP, Camera, Optics, Sensor
from weakspot.camera.isp import demosaic_bilinear, demosaic_malvar
from weakspot.camera.scene import PHOTONS_PER_LUX, linear_to_srgb, srgb_to_linear
from weakspot.camera.sensor import mosaic
from weakspot.errors import InvalidParameterError


def test_srgb_transfer_matches_iec_formula_and_roundtrips():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    xs = x.numpy()
    ref = np.where(xs <= 0.04045, xs / 12.92, ((xs + 0.055) / 1.055) ** 2.4)
    # the standard's two branches meet only to within 3e-8, the mask-free forms differ by that much
    np.testing.assert_allclose(srgb_to_linear(x).numpy(), ref, atol=1e-8)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6)
    ref_enc = np.where(xs <= 0.0031308, 12.92 * xs, 1.055 * xs ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(linear_to_srgb(x).numpy(), ref_enc, atol=1e-7)


def test_default_camera_renders_a_photo_naturally(photos):
    cap = Camera().capture(photos[:2], generator=0)
    assert cap.image.shape == photos[:2].shape
    assert float(cap.image.min()) >= 0 and float(cap.image.max()) <= 1
    assert float((cap.image - photos[:2]).abs().mean()) < 0.05
    assert float(cap.image.mean()) == pytest.approx(float(photos[:2].mean()), abs=0.03)
    assert cap.dn.dtype == cap.image.dtype and torch.equal(cap.dn, cap.dn.round())
    assert cap.photons.shape == cap.electrons.shape == cap.dn.shape == (2, 1, 224, 224)  # Bayer mosaic


def test_fast_in_focus_path_matches_full_chain(photos):
    cap = Camera().capture(photos[:2, :, :64, :64], generator=0)
    assert not cap._cache  # the in-focus default capture took the mosaic-first fast path
    # the lazily computed full chain (linear → irradiance → photons per band) gives the same photons
    assert torch.allclose(cap.photons, mosaic(cap.photons_rgb, "RGGB"), rtol=1e-5)
    # luminance and irradiance follow from each other through the camera equation
    e_lux = cap.luminance_cd_m2 * Camera().optics.illuminance_factor
    assert torch.allclose(cap.irradiance, e_lux * torch.tensor(PHOTONS_PER_LUX).view(1, 3, 1, 1), rtol=1e-5)


def test_exposure_darkens_and_adds_noise_iso_gain_keeps_brightness(photos):
    x = photos[:2, :, :96, :96]
    ref = weakspot.get_degradation("exposure")(x, generator=0)
    dark = weakspot.get_degradation("exposure", severity=4)(x, generator=0)
    iso = weakspot.get_degradation("exposure", severity=4, iso_gain=True)(x, generator=0)
    assert float(dark.mean()) < 0.6 * float(ref.mean())
    assert float(iso.mean()) == pytest.approx(float(ref.mean()), abs=0.04)

    # noise: residual after a median filter grows when fewer photons are amplified
    def resid(im):
        return float((im - torch.from_numpy(ndi.median_filter(im.numpy(), size=(1, 1, 3, 3)))).abs().mean())

    assert resid(iso) > 1.5 * resid(ref)


def test_registered_camera_ops_keep_shape_range_and_are_seeded(photos):
    x = photos[:2, :, :64, :64]
    for name in ("pixel_size", "exposure", "defocus"):
        spec = weakspot.get_spec(name)
        assert spec.family == "camera"
        for sev in (None, 1, 5):
            deg = weakspot.get_degradation(name, severity=sev)
            y = deg(x, generator=1)
            assert y.shape == x.shape and y.dtype == x.dtype
            assert float(y.min()) >= 0 and float(y.max()) <= 1
            assert torch.equal(y, deg(x, generator=1))
        assert not torch.equal(deg(x, generator=1), deg(x, generator=2))
    grey = x[:, :1]
    assert weakspot.get_degradation("defocus", severity=2)(grey, generator=0).shape == grey.shape


def test_camera_ops_per_image_generators_ignore_batch_composition(photos):
    from weakspot.random import keyed_generator

    x = photos[:3, :, :48, :48]
    for name in ("exposure", "pixel_size", "defocus"):
        deg = weakspot.get_degradation(name, severity=3)
        full = deg(x, [keyed_generator(0, f"img{i}", name) for i in range(3)])
        part = deg(x[1:], [keyed_generator(0, f"img{i}", name) for i in (1, 2)])
        assert torch.equal(full[1:], part), name


def test_severities_are_monotone(photos):
    x = photos[:2, :, :112, :112]

    def detail(img):  # energy of fine detail (Laplacian), falls with blur / resolution loss
        lap = (
            img[..., 1:-1, 1:-1] * 4
            - img[..., :-2, 1:-1]
            - img[..., 2:, 1:-1]
            - img[..., 1:-1, :-2]
            - img[..., 1:-1, 2:]
        )
        return float(lap.abs().mean())

    for name in ("defocus", "pixel_size"):
        vals = [detail(weakspot.get_degradation(name, severity=s)(x, generator=0)) for s in (1, 3, 5)]
        assert vals[0] > vals[1] > vals[2], (name, vals)
    means = [
        float(weakspot.get_degradation("exposure", severity=s)(x, generator=0).mean()) for s in (1, 3, 5)
    ]
    assert means[0] > means[1] > means[2]


def test_pixel_size_sweep_grid_resolution(photos):
    x = photos[:1]
    for p, rows in ((2.8, 224), (5.0, 125), (8.0, 78), (11.0, 57)):
        cam = Camera(sensor=Camera().sensor.scaled_to_pixel(p))
        assert cam.capture(x, generator=0).image.shape[-2:] == (rows, rows)


def test_gradients_reach_the_input_through_optics_and_isp(photos):
    x = photos[:1, :, :48, :48].clone().requires_grad_(True)
    cam = Camera(optics=Optics(defocus_diopters=1.0))
    cap = cam.capture(x, generator=0)
    cap.image.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    # the blur spreads the gradient of one output pixel over the PSF's footprint
    x.grad = None
    cam.capture(x, generator=0).image[0, 1, 24, 24].backward()
    support = int((x.grad[0].abs().sum(0) > 0).sum())
    assert support > 20


@pytest.mark.parametrize("name", ["pixel_size", "exposure", "defocus"])
def test_registered_camera_ops_are_differentiable(name, photos):
    x = photos[:1, :, :32, :32].clone().requires_grad_(True)
    weakspot.get_degradation(name, severity=3)(x, generator=0).mean().backward()
    assert weakspot.get_spec(name).differentiable
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_optics_and_isp_gradients_are_exact():
    torch.manual_seed(0)
    k = Optics(defocus_diopters=1.0).psf(2.8, dtype=torch.float64)
    from weakspot.camera.optics import apply_psf

    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: apply_psf(t, k), (x,), fast_mode=True)
    raw = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 0.5 + 0.1
    sensor = Sensor()
    isp = ISP()
    dn = raw * (sensor.white_dn - sensor.black_level_dn) + sensor.black_level_dn
    assert torch.autograd.gradcheck(
        lambda t: isp.process(t, sensor)[1], (dn.requires_grad_(True),), fast_mode=True
    )


def test_demosaic_reproduces_ramps_and_malvar_matches_reference():
    yy, xx = torch.meshgrid(
        torch.arange(24.0, dtype=torch.float64), torch.arange(26.0, dtype=torch.float64), indexing="ij"
    )
    rgb = torch.stack([0.1 + 0.01 * xx, 0.2 + 0.005 * yy + 0.003 * xx, 0.6 - 0.004 * yy])[None]
    for pat in ("RGGB", "BGGR", "GRBG", "GBRG"):
        raw = mosaic(rgb, pat)
        for fn in (demosaic_bilinear, demosaic_malvar):
            out = fn(raw, pat)
            assert float((out - rgb)[..., 2:-2, 2:-2].abs().max()) < 1e-12, (pat, fn.__name__)
            assert torch.equal(mosaic(out, pat), raw)  # known samples are kept
    # Malvar-He-Cutler on a real photo against a direct per-site implementation with scipy
    rng = np.random.default_rng(0)
    img = rng.random((3, 20, 20))
    raw = mosaic(torch.from_numpy(img)[None], "RGGB")[0, 0].numpy()
    g_at = (
        np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]])
        / 8
    )
    row = (
        np.array(
            [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]
        )
        / 8
    )
    opp = (
        np.array(
            [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]
        )
        / 8
    )
    f = {
        n: ndi.correlate(raw, k, mode="mirror")
        for n, k in (("g", g_at), ("row", row), ("col", row.T), ("opp", opp))
    }
    ours = demosaic_malvar(torch.from_numpy(raw)[None, None], "RGGB")[0].numpy()
    y, x = 7, 9  # B site (odd, odd): G = g filter, R = opposite filter
    assert ours[1, y, x] == pytest.approx(f["g"][y, x]) and ours[0, y, x] == pytest.approx(f["opp"][y, x])
    y, x = 6, 9  # G site in an R row: R along the row, B along the column
    assert ours[0, y, x] == pytest.approx(f["row"][y, x]) and ours[2, y, x] == pytest.approx(f["col"][y, x])
    y, x = 7, 8  # G site in a B row: R along the column, B along the row
    assert ours[0, y, x] == pytest.approx(f["col"][y, x]) and ours[2, y, x] == pytest.approx(f["row"][y, x])


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG", None])
@pytest.mark.parametrize("demosaic", ["bilinear", "malvar"])
def test_fused_isp_matches_step_by_step_reference(cfa, demosaic):
    sensor = Sensor(cfa=cfa)
    isp = ISP(
        demosaic=demosaic, color_matrix=(1.2, -0.1, -0.1, -0.2, 1.3, -0.1, 0.0, -0.3, 1.3), digital_gain=1.1
    )
    g = torch.Generator().manual_seed(0)
    dn = (torch.rand(2, 1 if cfa else 3, 15, 18, generator=g, dtype=torch.float64) * 4000 + 64).round()
    lin, img = isp.process(dn, sensor)
    _raw, lin_ref, img_ref = isp.process_reference(dn, sensor)
    assert torch.allclose(lin, lin_ref, atol=1e-12) and torch.allclose(img, img_ref, atol=1e-12)
    assert float((lin_ref > 0).double().mean()) > 0.2  # not a trivially clipped image


def test_isp_linear_raw_switch():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cam = Camera(sensor=Sensor(cfa=None), isp=ISP.linear_raw())
    cap = cam.capture(x, generator=0)
    assert torch.allclose(cap.image, cap.raw.clamp(0, 1))
    assert ISP.linear_raw().is_linear_raw and not ISP().is_linear_raw
    # the sRGB ISP encodes its white-balanced linear image
    cap2 = Camera(sensor=Sensor(cfa=None)).capture(x, generator=0)
    assert torch.allclose(cap2.image, linear_to_srgb(cap2.linear_rgb), atol=1e-6)


def test_camera_replace_routes_parameters_and_rejects_unknown():
    cam = Camera().replace(exposure_s=0.002, f_number=4.0, output="linear")
    assert cam.sensor.exposure_s == 0.002 and cam.optics.f_number == 4.0 and cam.isp.output == "linear"
    with pytest.raises(weakspot.errors.UnknownNameError, match="exposure_s"):
        Camera().replace(exposure=0.1)


def test_bad_inputs_and_parameters_give_clear_errors():
    from weakspot.errors import InvalidImageError

    with pytest.raises(InvalidImageError):
        Camera().capture(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(InvalidImageError):
        Camera().capture(torch.rand(1, 4, 8, 8))
    with pytest.raises(InvalidParameterError, match="exposure_s"):
        weakspot.get_degradation("exposure", exposure_s=-1)
    with pytest.raises(InvalidParameterError, match="defocus_diopters"):
        weakspot.get_degradation("defocus", defocus_diopters=-2)
    with pytest.raises(InvalidParameterError, match="pixel_size_um"):  # above the registered range
        weakspot.get_degradation("pixel_size", pixel_size_um=200.0)
    with pytest.raises(InvalidParameterError, match="pixel_size_um"):  # larger than a 0.05 mm wide sensor
        weakspot.get_degradation("camera", pixel_size_um=80.0, field_width_mm=0.05)(torch.rand(1, 3, 16, 16))


def test_cli_degrade_with_camera_op_and_bad_parameter(tmp_path, photo_uint8):
    from PIL import Image

    from weakspot.cli import main

    src = tmp_path / "in.png"
    Image.fromarray(photo_uint8[:64, :64]).save(src)
    assert main(["degrade", str(src), str(tmp_path / "out.png"), "--op", "defocus", "--severity", "2"]) == 0
    assert Image.open(tmp_path / "out.png").size == (64, 64)
    assert (
        main(["degrade", str(src), str(tmp_path / "bad.png"), "--op", "exposure", "--param", "exposure_s=-1"])
        == 2
    )


def test_contact_sheet_writes_a_labelled_grid(tmp_path, photo_uint8):
    from PIL import Image

    from weakspot.camera.contact_sheet import camera_contact_sheet

    img = torch.from_numpy(photo_uint8).permute(2, 0, 1).float() / 255
    sweeps = (
        ("Defocus", "defocus", "defocus_diopters", (0.0, 3.0), {}),
        ("Pixel size", "pixel_size", "pixel_size_um", (2.8, 8.0), {}),
    )
    out = camera_contact_sheet(
        img, tmp_path / "sheet" / "cam.png", size=64, sweeps=sweeps, title=None, dpi=60
    )
    a = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert a.shape[0] > 100 and a.shape[1] > 100
    assert a.std() > 20  # a picture, not a blank canvas
    with pytest.raises(InvalidParameterError, match="image"):
        camera_contact_sheet(torch.rand(2, 3, 8, 8), tmp_path / "x.png")


@pytest.mark.parametrize("kind", ["bilinear", "malvar"])
def test_demosaic_of_integer_dn_is_exact_in_float32_in_any_batch(kind):
    """The demosaic weights are multiples of 1/16, so on integer DN up to 18 bits float32 gives the
    exact (float64) result whatever the convolution algorithm — the same bytes in any batch."""
    from weakspot.camera.isp import _demosaic

    g = torch.Generator().manual_seed(0)
    dn = torch.randint(0, 2**18, (8, 1, 34, 46), generator=g).float()
    full = _demosaic(dn, "GRBG", kind)
    assert torch.equal(full.double(), _demosaic(dn.double(), "GRBG", kind))
    for sub in ([5], [2, 7, 0]):
        assert torch.equal(_demosaic(dn[sub], "GRBG", kind), full[sub])
