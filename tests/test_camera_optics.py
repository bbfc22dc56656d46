"""Optics: defocus PSF geometry, diffraction, energy conservation, convolution correctness."""

import itertools
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.optimize
import scipy.special
import torch

from weakspot.camera import Camera, Optics, Sensor
from weakspot.camera.optics import apply_psf, apply_psf_direct, blur_circle_diameter_um, psf_kernels

PITCH = 2.8


def radius_from_second_moment(k: torch.Tensor) -> float:
    """Radius of the uniform disk with the same second moment: E[r²] = ρ²/2 (+ 2·1/12 px² of pixel box)."""
    n = k.shape[-1]
    x = torch.arange(n, dtype=torch.float64) - n // 2
    r2 = x.view(-1, 1) ** 2 + x.view(1, -1) ** 2
    m2 = float((k * r2).sum()) - 2 / 12  # remove the pixel-integration variance
    return math.sqrt(2 * max(m2, 0.0))


@pytest.mark.parametrize("diffraction", [False, True])
@pytest.mark.parametrize("diopters", [0.0, 0.5, 2.0, 4.0])
def test_psf_sums_to_one_and_is_nonnegative(diopters, diffraction):
    k = psf_kernels(2.8, 6.0, diopters, diffraction, PITCH)
    assert k.shape[0] == 3
    assert torch.allclose(k.sum((-1, -2)), torch.ones(3, dtype=k.dtype), atol=1e-12)
    assert float(k.min()) >= 0.0


def test_blur_circle_formula():
    # f = 6 mm, N = 2.8: aperture 2.143 mm; 1 D of defocus ⇒ angular blur 2.143 mrad ⇒ 12.86 µm at f
    aperture_m = 6e-3 / 2.8
    assert blur_circle_diameter_um(6.0, 2.8, 1.0) == pytest.approx(aperture_m * 1.0 * 6e-3 * 1e6)
    assert blur_circle_diameter_um(6.0, 2.8, -2.0) == pytest.approx(
        2 * blur_circle_diameter_um(6.0, 2.8, 1.0)
    )
    assert blur_circle_diameter_um(12.0, 2.8, 1.0) == pytest.approx(
        4 * blur_circle_diameter_um(6.0, 2.8, 1.0)
    )
    assert blur_circle_diameter_um(6.0, 5.6, 1.0) == pytest.approx(blur_circle_diameter_um(6.0, 2.8, 1.0) / 2)


def test_blur_radius_grows_linearly_with_diopters():
    ds = [1.0, 2.0, 3.0, 4.0]
    radii = [radius_from_second_moment(psf_kernels(2.8, 6.0, d, False, PITCH)[1]) for d in ds]
    expected = [blur_circle_diameter_um(6.0, 2.8, d) / 2 / PITCH for d in ds]
    np.testing.assert_allclose(radii, expected, rtol=0.03)
    slope, intercept = np.polyfit(ds, radii, 1)
    assert slope == pytest.approx(6.0**2 / 2.8 / 2 / PITCH, rel=0.02)
    assert abs(intercept) < 0.1


def edge_width_10_90(row: np.ndarray) -> float:
    """10–90 % rise distance (px) of a monotone edge profile, by linear interpolation."""
    lo, hi = row.min(), row.max()
    t = (row - lo) / (hi - lo)
    x = np.arange(len(t))
    return float(np.interp(0.9, t, x) - np.interp(0.1, t, x))


def test_zero_diopters_leaves_an_edge_sharp_and_defocus_widens_it():
    assert Optics().diffraction is False  # the default lens is diffraction-free: 0 D is the identity
    edge = torch.zeros(1, 3, 32, 64)
    edge[..., 32:] = 1.0
    sharp = Optics(diffraction=False).blur(edge, PITCH)
    assert torch.equal(sharp, edge)  # 0 D without diffraction is the identity
    with_diff = Optics(diffraction=True).blur(edge, PITCH)[0, 1, 16].numpy()
    assert edge_width_10_90(with_diff) < 1.5  # the f/2.8 Airy disk is sub-pixel at 2.8 µm
    widths = [
        edge_width_10_90(
            Optics(defocus_diopters=d, defocus_model="geometric").blur(edge, PITCH)[0, 1, 16].numpy()
        )
        for d in (1.0, 2.0, 4.0)
    ]
    # a uniform disk of radius ρ: the fraction of its area left of x is
    # F(x) = ½ + (u√(1−u²) + asin u)/π with u = x/ρ, so the 10–90 % width is 2·u₉₀·ρ
    u90 = scipy.optimize.brentq(
        lambda u: 0.5 + (u * math.sqrt(1 - u * u) + math.asin(u)) / math.pi - 0.9, 0, 1
    )
    for d, w in zip((1.0, 2.0, 4.0), widths, strict=True):
        rho = blur_circle_diameter_um(6.0, 2.8, d) / 2 / PITCH
        assert w == pytest.approx(2 * u90 * rho, rel=0.08)


def test_airy_pattern_matches_bessel_formula():
    # fine sampling (0.5 µm) of an f/8 lens: λN = 4.4 µm for green ⇒ first zero at 1.22 λN = 10.7 px
    pitch, n_f = 0.5, 8.0
    k = psf_kernels(n_f, 6.0, 0.0, True, pitch)[1].numpy()
    c = k.shape[-1] // 2
    r = np.arange(0, 20)
    profile = k[c, c : c + 20]
    x = np.pi * r * pitch / (0.55 * n_f)
    ref = np.where(x > 0, (2 * scipy.special.j1(np.maximum(x, 1e-9)) / np.maximum(x, 1e-9)) ** 2, 1.0)
    np.testing.assert_allclose(profile / profile[0], ref, atol=0.01)
    first_zero = 1.22 * 0.55 * n_f / pitch
    assert abs(int(np.argmin(profile[5:15])) + 5 - first_zero) <= 1


def test_fft_convolution_matches_direct_and_scipy(photos):
    x = photos[:1, :, :50, :60].double()
    k = psf_kernels(2.8, 6.0, 2.0, True, PITCH).double()
    fast, direct = apply_psf(x, k), apply_psf_direct(x, k)
    assert float((fast - direct).abs().max()) < 1e-10
    ref = ndi.convolve(x[0, 1].numpy(), k[1].numpy(), mode="mirror")
    np.testing.assert_allclose(fast[0, 1].numpy(), ref, atol=1e-10)


def test_blur_conserves_energy():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k = psf_kernels(2.8, 6.0, 1.5, True, PITCH).double()
    # circular boundary conditions conserve the sum exactly; reflect borders conserve the mean of a flat field
    flat = torch.full((1, 3, 40, 40), 0.7, dtype=torch.float64)
    assert torch.allclose(apply_psf(flat, k), flat, atol=1e-12)
    y = apply_psf(x, k)
    assert float((y.mean() - x.mean()).abs()) < 2e-3


def test_camera_defocus_blurs_the_captured_photo(photos):
    x = photos[:1, :, :96, :96]

    def sharpness(img):
        return float((img[..., 1:, :] - img[..., :-1, :]).abs().mean())

    vals = [
        sharpness(
            Camera(optics=Optics(defocus_diopters=d), sensor=Sensor(read_noise_e=0.0)).capture(x, 0).image
        )
        for d in (0.0, 1.0, 2.0, 4.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(vals))
