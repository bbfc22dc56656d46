"""Sensor physics: photon transfer, read-noise floor, SNR slope, linearity, full well, sampling."""

import math
from dataclasses import replace

import numpy as np
import pytest
import scipy.stats
import torch

from weakspot.camera import ISP, Camera, Optics, Scene, Sensor
from weakspot.camera.optics import illuminance_per_luminance
from weakspot.camera.scene import PHOTONS_PER_LUX, srgb_to_linear
from weakspot.camera.sensor import aperture_matrix, shot_noise
from weakspot.random import keyed_generator

GREY = 0.5  # sRGB grey of the flat fields
FLAT = torch.full((2, 3, 48, 48), GREY)


def ideal(**kw) -> Camera:
    """A camera whose only noise source is shot noise (no read noise, dark current, CFA, blur)."""
    sensor = dict(
        read_noise_e=0.0,
        dark_current_e_per_s=0.0,
        full_well_e=1e7,
        conversion_gain=1e-3,
        adc_bits=16,
        cfa=None,
        black_level_dn=0.0,
    )
    sensor.update(kw)
    return Camera(optics=Optics(diffraction=False), sensor=Sensor(**sensor))


def expected_photons(cam: Camera, grey: float = GREY) -> np.ndarray:
    """Mean photons per pixel and band from the camera equation, computed independently."""
    lin = float(srgb_to_linear(torch.tensor(grey)))
    lum = lin * cam.scene.mean_luminance_cd_m2 / cam.scene.mid_grey  # cd/m² of the band radiance
    e_lux = math.pi * cam.optics.transmittance * lum / (1 + 4 * cam.optics.f_number**2)
    area = cam.sensor.pixel_size_um**2 * cam.sensor.fill_factor
    return np.array(PHOTONS_PER_LUX) * e_lux * area * cam.sensor.exposure_s


@pytest.mark.parametrize("exposure_s", [2e-5, 2e-4, 2e-3, 2e-2])  # ≈ 3, 30, 300, 3000 e⁻
def test_shot_noise_variance_equals_mean(exposure_s):
    cam = ideal(exposure_s=exposure_s)
    cap = cam.capture(FLAT, generator=3)
    e = cap.electrons[:, 1].double()  # green band, 4608 pixels
    mean, var = float(e.mean()), float(e.var())
    expected = expected_photons(cam)[1] * cam.sensor.qe_rgb[1]
    assert mean == pytest.approx(expected, abs=4 * math.sqrt(expected / e.numel()))
    # var/mean of a Poisson sample has standard error ≈ sqrt(2/N)
    assert var / mean == pytest.approx(1.0, abs=5 * math.sqrt(2 / e.numel()) + 0.02)


def test_read_noise_floor_at_zero_light():
    sensor = Sensor(exposure_s=0.0, dark_current_e_per_s=0.0, read_noise_e=10.0, cfa=None)
    cap = Camera(sensor=sensor).capture(torch.rand(2, 3, 48, 48), generator=0)
    assert float(cap.electrons.abs().max()) == 0.0  # no light, no charge
    assert float(cap.readout_e.std()) == pytest.approx(10.0, rel=0.05)
    # in DN: σ = read noise × conversion gain, plus uniform quantisation noise (1/12 DN²)
    sigma_dn = math.sqrt((10.0 * sensor.conversion_gain) ** 2 + 1 / 12)
    assert float(cap.dn.std()) == pytest.approx(sigma_dn, rel=0.05)
    assert float(cap.dn.mean()) == pytest.approx(sensor.black_level_dn, abs=0.2)


def test_snr_slope_is_half_in_shot_noise_regime_and_one_in_read_noise_regime():
    def slope(exposures, read_noise):
        means, snrs = [], []
        for t in exposures:
            cam = ideal(exposure_s=t, read_noise_e=read_noise)
            cap = cam.capture(FLAT, generator=1)
            mean = float(cap.photons[:, 1].mean()) * cam.sensor.qe_rgb[1]  # noise-free signal, e⁻
            means.append(mean)
            snrs.append(mean / float(cap.readout_e[:, 1].double().std()))
        return np.polyfit(np.log(means), np.log(snrs), 1)[0], means

    k, means = slope([8e-3, 1.6e-2, 3.2e-2, 6.4e-2], read_noise=5.0)  # ≥ 1000 e⁻ ≫ 25 e⁻²
    assert min(means) > 1000
    assert k == pytest.approx(0.5, abs=0.04)
    k_dark, means = slope([2e-5, 4e-5, 8e-5], read_noise=50.0)  # ≈ 3–12 e⁻ ≪ 2500 e⁻²
    assert max(means) < 20
    assert k_dark == pytest.approx(1.0, abs=0.05)


def test_mean_signal_proportional_to_area_exposure_and_luminance():
    base = ideal(exposure_s=1e-3)
    ref = base.capture(FLAT, generator=0).photons_rgb.mean((0, 2, 3)).double().numpy()
    np.testing.assert_allclose(ref, expected_photons(base), rtol=1e-4)
    cases = {
        "area ×4": (base.replace(pixel_size_um=5.6), 4.0),  # 48 px · 2.8 µm = 24 pixels of 5.6 µm
        "exposure ×3": (base.replace(exposure_s=3e-3), 3.0),
        "luminance ×2.5": (base.replace(mean_luminance_cd_m2=250.0), 2.5),
        "f/2.8 → f/5.6": (
            base.replace(f_number=5.6),
            illuminance_per_luminance(5.6) / illuminance_per_luminance(2.8),
        ),
    }
    for name, (cam, factor) in cases.items():
        cap = cam.capture(FLAT, generator=0)
        got = cap.photons_rgb.mean((0, 2, 3)).double().numpy()
        np.testing.assert_allclose(got / ref, factor, rtol=1e-4, err_msg=name)
        e = cap.electrons.mean((0, 2, 3)).double().numpy()
        np.testing.assert_allclose(e, got * np.array(cam.sensor.qe_rgb), rtol=0.02, err_msg=name)


def test_nothing_above_full_well_and_adc_range():
    sensor = Sensor(full_well_e=5000.0, conversion_gain=0.8, cfa=None)
    prev = 0.0
    for t in (1e-3, 4e-3, 1.6e-2, 6.4e-2):
        cap = Camera(sensor=replace(sensor, exposure_s=t)).capture(FLAT, generator=0)
        assert float(cap.electrons.max()) <= 5000.0
        assert float(cap.dn.max()) <= sensor.adc_max_dn
        m = float(cap.electrons[:, 1].mean())
        assert m >= prev - 1e-6  # monotone until it saturates
        prev = m
    assert prev == pytest.approx(5000.0, rel=1e-3)  # saturated at the longest exposure


def test_per_channel_clipping_tints_highlights():
    # a warm highlight (R > G > B); overexpose 4× so red clips at the well, green/blue do not
    patch = torch.tensor([1.0, 0.55, 0.4]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    cam = Camera(optics=Optics(diffraction=False), sensor=Sensor(cfa=None, read_noise_e=0.0))
    normal = cam.capture(patch, generator=0)
    over = cam.replace(exposure_s=cam.sensor.exposure_s * 1.6).capture(patch, generator=0)
    e = over.electrons.mean((0, 2, 3))
    assert float(e[0]) == pytest.approx(cam.sensor.full_well_e)  # red channel clipped at the well
    assert float(e[1]) < 0.9 * cam.sensor.full_well_e and float(e[2]) < 0.9 * cam.sensor.full_well_e
    ratio = lambda c: float(c.linear_rgb[:, 0].mean() / c.linear_rgb[:, 1].mean())  # noqa: E731
    scene_ratio = float(srgb_to_linear(torch.tensor(1.0)) / srgb_to_linear(torch.tensor(0.55)))
    assert ratio(normal) == pytest.approx(scene_ratio, rel=0.03)  # unclipped: hue preserved
    assert ratio(over) < 0.8 * scene_ratio  # clipped red: the highlight shifts toward yellow


def test_default_white_is_well_exposed_not_clipped():
    cap = Camera().capture(torch.ones(1, 3, 32, 32), generator=0)
    g = cap.electrons[cap.electrons > 0]
    assert 0.8 * 10_000 < float(cap.electrons.float().mean()) < 10_000
    assert float(g.max()) <= 10_000
    assert float(cap.image.mean()) > 0.9


def test_aperture_matrix_integrates_exactly():
    # 10 input pixels of 3 µm; 4 sensor pixels of 7 µm (side 7 µm, fill factor 1), centred
    a = aperture_matrix(10, 3.0, 4, 7.0, 7.0, 30.0, dtype=torch.float64)
    assert a.sum(1).tolist() == pytest.approx([7.0] * 4)  # each pixel integrates 7 µm of field
    # first pixel spans [1, 8] µm: 2 µm of input pixel 0, 3 of pixel 1, 2 of pixel 2
    assert a[0, :4].tolist() == pytest.approx([2.0, 3.0, 2.0, 0.0])
    # fill factor: a 4 µm photodiode centred in the first pixel spans [2.5, 6.5] µm
    b = aperture_matrix(10, 3.0, 4, 7.0, 4.0, 30.0, dtype=torch.float64)
    assert b[0, :3].tolist() == pytest.approx([0.5, 3.0, 0.5])


def test_larger_pixels_fewer_pixels_lower_resolution_less_noise(photos):
    x = photos[:2, :, :112, :112]
    sizes = {}
    base = Camera().sensor
    for p in (2.8, 5.6, 11.2):
        cam = Camera(sensor=base.scaled_to_pixel(p))
        cap = cam.capture(x, generator=0)
        sizes[p] = cap.image.shape[-1]
        assert cap.image.shape[-2:] == (int(112 * 2.8 / p), int(112 * 2.8 / p))
    assert sizes == {2.8: 112, 5.6: 56, 11.2: 28}
    # flat field: relative noise falls as 1/pixel size (shot noise; well ∝ area so nothing clips)
    rel = []
    for p in (2.8, 5.6):
        cap = Camera(sensor=replace(base.scaled_to_pixel(p, well="area"), cfa=None)).capture(
            FLAT, generator=0
        )
        r = cap.raw[:, 1]
        rel.append(float(r.std() / r.mean()))
    assert rel[1] == pytest.approx(rel[0] / 2, rel=0.15)


def test_pixel_larger_than_sensor_is_an_error():
    from weakspot.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="pixel_size_um"):
        Camera(sensor=Sensor(pixel_size_um=50.0)).capture(torch.rand(1, 3, 16, 16))
    with pytest.raises(InvalidParameterError, match="size_mm"):
        Camera(sensor=Sensor(size_mm=(1.0, 1.0))).capture(torch.rand(1, 3, 16, 16))


def test_exact_poisson_at_low_counts_matches_pmf():
    lam = torch.full((4, 1, 100, 100), 2.5)
    s = shot_noise(lam, 0, exact_below_e=100.0).numpy().ravel()
    assert np.all(s == np.round(s))
    k = np.arange(0, 12)
    freq = np.array([(s == v).mean() for v in k])
    np.testing.assert_allclose(freq, scipy.stats.poisson.pmf(k, 2.5), atol=0.006)


def test_fixed_pattern_noise_is_persistent_per_sensor():
    sensor = Sensor(cfa=None, read_noise_e=0.0, prnu_percent=5.0, fpn_seed=7)
    flat = torch.full((1, 3, 32, 32), 0.6)
    a = Camera(sensor=sensor).capture(flat, generator=1).electrons
    b = Camera(sensor=sensor).capture(flat, generator=2).electrons
    c = (
        Camera(sensor=Sensor(cfa=None, read_noise_e=0.0, prnu_percent=5.0, fpn_seed=8))
        .capture(flat, generator=1)
        .electrons
    )
    # the PRNU pattern dominates shot noise here (5 % vs ~1 %): same sensor ⇒ correlated maps
    corr = lambda u, v: float(np.corrcoef(u[:, 1].flatten().numpy(), v[:, 1].flatten().numpy())[0, 1])  # noqa: E731
    assert corr(a, b) > 0.8
    assert abs(corr(a, c)) < 0.2
    rel = float(a[:, 1].std() / a[:, 1].mean())
    assert rel == pytest.approx(math.sqrt(0.05**2 + 1 / float(a[:, 1].mean())), rel=0.15)


def test_determinism_and_per_image_generators(photos):
    x = photos[:3, :, :40, :40]
    cam = Camera()
    a, b, c = (cam.capture(x, generator=s).image for s in (5, 5, 6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    full = cam.capture(x, [keyed_generator(0, i) for i in range(3)]).dn
    part = cam.capture(x[1:], [keyed_generator(0, i) for i in (1, 2)]).dn
    assert torch.equal(full[1:], part)


def test_bad_sensor_parameters_raise_clear_errors():
    from weakspot.errors import InvalidParameterError

    bad = [
        ({"exposure_s": -0.01}, "exposure_s"),
        ({"fill_factor": 1.2}, "fill_factor"),
        ({"fill_factor": 0.0}, "fill_factor"),
        ({"pixel_size_um": 0.0}, "pixel_size_um"),
        ({"full_well_e": -5}, "full_well_e"),
        ({"quantum_efficiency": 1.5}, "quantum_efficiency"),
        ({"adc_bits": 10.5}, "adc_bits"),
        ({"cfa": "RGBW"}, "cfa"),
        ({"read_noise_e": float("nan")}, "read_noise_e"),
    ]
    for kw, name in bad:
        with pytest.raises(InvalidParameterError, match=name) as err:
            Sensor(**kw)
        assert "valid" in str(err.value)
    for kw, name in [({"f_number": 0.0}, "f_number"), ({"focal_length_mm": -1}, "focal_length_mm")]:
        with pytest.raises(InvalidParameterError, match=name):
            Optics(**kw)
    with pytest.raises(InvalidParameterError, match="mean_luminance_cd_m2"):
        Scene(mean_luminance_cd_m2=-1)
    with pytest.raises(InvalidParameterError, match="output"):
        ISP(output="jpeg")


@pytest.mark.parametrize("exact_below_e", [100.0, float("inf")])
def test_shot_noise_follows_the_poisson_law_at_low_counts(exact_below_e):
    """P(0) = e^-λ and var = mean at λ = 0.5 and 3 e⁻, on both sampling paths."""
    for lam in (0.5, 3.0):
        mean = torch.full((2, 1, 200, 200), lam)
        s = shot_noise(mean, torch.Generator().manual_seed(1), exact_below_e=exact_below_e)
        assert torch.equal(s, s.round()) and float(s.min()) >= 0
        assert float((s == 0).float().mean()) == pytest.approx(math.exp(-lam), abs=0.01)
        assert float(s.mean()) == pytest.approx(lam, rel=0.02)
        assert float(s.var()) == pytest.approx(lam, rel=0.03)


def test_whole_batch_noise_is_per_image_and_fixed_pattern_per_sensor():
    """One batch, one key per image: the PRNU map is the sensor's (the same in every image), the shot
    noise is each image's own (independent between images: var(a − b) = 2·mean, the Poisson law),
    and an image's electrons do not depend on the batch it is captured in."""
    from weakspot.random import KeyedBatch

    sensor = Sensor(cfa=None, read_noise_e=0.0, dark_current_e_per_s=0.0, prnu_percent=5.0, fpn_seed=3)
    cam = Camera(sensor=sensor)
    flat = torch.full((4, 3, 96, 96), 0.6)  # 9216 pixels: the variance is known to ±1.5 %
    ids = ["a", "b", "c", "d"]
    e = cam.capture(flat, KeyedBatch.from_ids(0, ids, "fpn")).electrons[:, 1].double()
    mean = float(e.mean())
    pattern = e.mean(0)  # the PRNU map (plus shot noise / 4)
    for i in range(1, 4):  # every image shows the same fixed pattern
        assert float(np.corrcoef(e[0].flatten().numpy(), e[i].flatten().numpy())[0, 1]) > 0.8
    diff = (e[0] - e[1]).flatten()
    assert float(diff.var()) == pytest.approx(2 * mean, rel=0.1)  # independent shot noise only
    assert float(pattern.std() / pattern.mean()) == pytest.approx(
        math.sqrt(0.05**2 + 1 / (4 * mean)), rel=0.15
    )
    alone = cam.capture(flat[:1], KeyedBatch.from_ids(0, ["c"], "fpn")).electrons[:, 1].double()
    assert torch.equal(alone[0], e[2])


@pytest.mark.parametrize(
    ("n_in", "pitch_um", "pixel_um", "fill"),
    [
        (512, 1.225, 2.8, 0.75),  # 512² input onto 224² default pixels
        (224, 2.8, 8.0, 0.75),
        (224, 2.8, 100.0, 0.75),  # wide bands (≈ 31 input pixels per photodiode)
        (40, 15.68, 6.5, 0.75),  # more sensor pixels than input pixels
        (64, 2.8, 2.8, 0.5),
    ],
)
def test_banded_collect_equals_the_dense_aperture_product(n_in, pitch_um, pixel_um, fill):
    """The banded pixel integration in Sensor.collect is the reference Ay · irradiance · Axᵀ."""
    s = Sensor(pixel_size_um=pixel_um, fill_factor=fill)
    x = torch.rand(2, 3, n_in, n_in + 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows, cols, sh, sw = s.grid(n_in, n_in + 8, pitch_um)
    side = pixel_um * math.sqrt(fill)
    ay = aperture_matrix(n_in, pitch_um, rows, pixel_um, side, sh, dtype=torch.float64)
    ax = aperture_matrix(n_in + 8, pitch_um, cols, pixel_um, side, sw, dtype=torch.float64)
    torch.testing.assert_close(s.collect(x, pitch_um), ay @ x @ ax.T * s.exposure_s, rtol=1e-12, atol=0)
