"""Wave-optics defocus: Hopkins' OTF against a numerical pupil autocorrelation, the analytic
diffraction-limited MTF, and the contrast of a captured sinusoidal grating."""

import math

import numpy as np
import pytest
import torch

from weakspot.camera import Camera, Optics, Scene, Sensor
from weakspot.camera.scene import linear_to_srgb


def pupil_autocorrelation_otf(
    w20_waves: float, radius_samples: int = 100, n: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """OTF along one axis as the FFT of |FFT(P · exp(i 2π w20 ρ²))|² for a sampled circular pupil.

    Returns ``(nu, otf)`` with ``nu`` the shift as a fraction of the pupil diameter (1 = cut-off).
    """
    y, x = np.mgrid[:n, :n] - n // 2
    rho2 = (x**2 + y**2) / radius_samples**2
    pupil = (rho2 <= 1.0) * np.exp(1j * 2 * np.pi * w20_waves * rho2)
    psf = np.abs(np.fft.fft2(pupil)) ** 2
    otf = np.fft.ifft2(psf).real  # autocorrelation of the pupil, zero shift at index 0
    otf = otf / otf[0, 0]
    k = np.arange(0, 2 * radius_samples)
    return k / (2.0 * radius_samples), otf[0, k]


@pytest.mark.parametrize("diopters", [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
def test_wave_otf_matches_pupil_autocorrelation(diopters):
    lens = Optics(defocus_diopters=diopters, diffraction=True)
    wl_nm = 550.0
    w20_waves = lens.w20_um * 1e3 / wl_nm
    nu, ref = pupil_autocorrelation_otf(w20_waves)
    freq = torch.as_tensor(nu / (wl_nm * 1e-6 * lens.f_number))  # cyc/mm
    got = lens.otf(freq, wl_nm).numpy()
    np.testing.assert_allclose(got, ref, atol=0.012)
    np.testing.assert_allclose(lens.mtf(freq, wl_nm).numpy(), np.abs(ref), atol=0.012)


def test_w20_matches_hopkins_formula_and_geometric_blur_limit():
    lens = Optics(defocus_diopters=1.0)
    p = 6e-3 / 2.8 / 2
    d0 = 1000 / 6
    assert lens.w20_um == pytest.approx(p**2 / 2 * d0 * 1.0 / (d0 + 1.0) * 1e6, rel=1e-12)
    # ray optics: the transverse ray error at the pupil edge, f · dW/dr = 2 w20 f / p, is the blur
    # radius; it agrees with the geometric blur circle f² ΔD / N to first order in ΔD / D0
    assert 4 * lens.w20_um * 6e-3 / p == pytest.approx(lens.blur_diameter_um, rel=2.5 / d0)


def test_in_focus_mtf_is_the_analytic_diffraction_limit():
    lens = Optics(diffraction=True)
    for wl in (450.0, 550.0, 650.0):
        cutoff = 1.0 / (wl * 1e-6 * lens.f_number)
        nu = np.linspace(0, 1, 41)
        ref = 2 / np.pi * (np.arccos(nu) - nu * np.sqrt(1 - nu**2))
        got = lens.mtf(torch.as_tensor(nu * cutoff, dtype=torch.float64), wl).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-9)
    assert float(lens.mtf(torch.tensor([2 * cutoff]))[0]) == 0.0


def test_wave_defocus_keeps_more_contrast_than_the_geometric_disk_at_one_diopter():
    f = torch.tensor([89.0])
    wave, geo = (
        Optics(defocus_diopters=1.0).mtf(f),
        Optics(defocus_diopters=1.0, defocus_model="geometric").mtf(f),
    )
    assert float(wave) == pytest.approx(0.17, abs=0.01) and float(geo) == pytest.approx(0.054, abs=0.005)
    assert Optics().mtf(f).shape == f.shape and float(Optics().mtf(f)) == 1.0  # in focus, no diffraction


@pytest.mark.parametrize("diopters", [0.5, 1.0, 2.0])
def test_captured_grating_contrast_is_optics_mtf_times_pixel_mtf(diopters):
    # fine input grid (0.35 µm), 2.8 µm pixels with fill factor 1 (a 2.8 µm box aperture), no CFA;
    # ``photons`` is the mean photon count before any noise
    pitch, px, period_um = 0.35, 2.8, 11.2
    f_mm = 1000.0 / period_um  # 89.3 cyc/mm
    w = 1024
    x_um = (torch.arange(w, dtype=torch.float64) + 0.5) * pitch
    lin = 0.5 + 0.4 * torch.cos(2 * math.pi * x_um / period_um)
    img = linear_to_srgb(lin.view(1, 1, 1, w).expand(1, 3, 64, w).clone())
    cam = Camera(
        scene=Scene(sample_pitch_um=pitch),
        optics=Optics(defocus_diopters=diopters),
        sensor=Sensor(pixel_size_um=px, fill_factor=1.0, cfa=None),
    )
    photons = cam.capture(img.float().double(), generator=0).photons[0, 1, 4].numpy()  # green, one row
    seg = photons[32:96]  # 64 pixels = 16 whole periods away from the borders
    xs = np.arange(32, 96) + 0.5
    phase = np.exp(-2j * np.pi * xs * px / period_um)
    contrast = 2 * abs((seg * phase).sum()) / seg.sum()
    otf = float(cam.optics.otf(torch.tensor(f_mm), 550.0))
    pixel_mtf = np.sinc(f_mm * px * 1e-3)
    assert contrast == pytest.approx(0.8 * abs(otf) * pixel_mtf, rel=0.02, abs=2e-3)
