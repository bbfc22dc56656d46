"""Optics stage: scene luminance → image-plane photon irradiance, blurred by the lens PSF.

Radiometry (camera equation, on-axis, object at infinity; ISETCam ``oiCalculateIrradiance``)::

    E_image [lux] = π · T · L [cd/m²] / (1 + 4 N²)

with ``N`` the f-number and ``T`` the lens transmittance (cos⁴ fall-off ignored).

Defocus (geometric optics). A lens of focal length ``f`` and aperture diameter
``A = f / N`` focused at distance ``u0`` images a point at ``u`` as a uniform disk
(the blur circle). With vergences ``1/u`` and ``1/u0`` in diopters and the sensor at
``v0 ≈ f``, similar triangles give the blur-circle diameter on the sensor::

    b = A · v0 · |1/u0 − 1/u| ≈ (f² / N) · |ΔD|        →  b [µm] = f[mm]² · |ΔD| / N

(e.g. Smith & Atchison, *The Eye and Visual Optical Instruments*, 1997, §33: the
angular blur diameter is the pupil diameter times the defocus in diopters.) ISETCam
expresses the same defocus as the Zernike coefficient ``c₂⁰ = ΔD · r_pupil² / (4√3)``;
the geometric disk is the large-defocus limit of that wave-optics PSF (valid once the
blur circle is wider than the Airy disk, which the optional diffraction term adds).

Diffraction: the Airy pattern ``I(r) = (2 J₁(x)/x)²``, ``x = π r / (λ N)``, first zero at
``1.22 λ N``, evaluated at each band's centre wavelength and truncated at radius
``8 λ N`` (the lost tail energy, ≈ 2.5 %, is renormalised into the kernel).

Every PSF kernel is built on a 7× supersampled grid (disk ⊛ Airy), integrated over the
input pixels and normalised to sum 1, so blurring conserves energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from weakspot._checks import check_range
from weakspot.camera.scene import BAND_CENTRES_NM, PHOTONS_PER_LUX
from weakspot.errors import InvalidParameterError

__all__ = [
    "Optics",
    "illuminance_per_luminance",
    "blur_circle_diameter_um",
    "psf_kernels",
    "apply_psf",
    "apply_psf_direct",
]

_SUPERSAMPLE = 7
_AIRY_TRUNCATE = 8.0  # in units of λN


def illuminance_per_luminance(f_number: float, transmittance: float = 1.0) -> float:
    """Image-plane illuminance (lux) per scene luminance (cd/m²): ``π T / (1 + 4 N²)``."""
    return math.pi * transmittance / (1.0 + 4.0 * f_number**2)


def blur_circle_diameter_um(focal_length_mm: float, f_number: float, defocus_diopters: float) -> float:
    """Geometric blur-circle diameter on the sensor in µm: ``f[mm]² · |ΔD| / N``.

    >>> round(blur_circle_diameter_um(6.0, 2.8, 1.0), 2)
    12.86
    """
    return focal_length_mm**2 * abs(defocus_diopters) / f_number


@dataclass(frozen=True)
class Optics:
    """A thin lens with defocus and (optionally) diffraction.

    Attributes:
        f_number: focal length / aperture diameter (dimensionless), > 0.
        focal_length_mm: focal length in mm. With ``f_number`` it sets the blur per diopter.
        defocus_diopters: focus error ΔD = |1/u0 − 1/u| in diopters (1/m); 0 = in focus.
        diffraction: add the Airy pattern of the circular aperture per band.
        transmittance: fraction of light the lens passes, in (0, 1].

    Defaults: a 6 mm f/2.8 lens (a typical 1/3-inch machine-vision / webcam lens): the
    blur circle grows by 12.9 µm (4.6 default pixels) per diopter of defocus. Diffraction is
    off by default: the input photo already carries its own lens blur, and at f/2.8 the Airy
    disk (first-zero radius 1.22 λN = 1.9 µm at 550 nm) is smaller than a 2.8 µm pixel, so an
    in-focus default capture needs no convolution at all (the FFT would double its cost).
    Switch it on for f-number studies (at f/16 the Airy disk spans 4 pixels).
    """

    f_number: float = 2.8
    focal_length_mm: float = 6.0
    defocus_diopters: float = 0.0
    diffraction: bool = False
    transmittance: float = 1.0

    def __post_init__(self) -> None:
        check_range("f_number", self.f_number, 0.0, 1000.0, low_inclusive=False)
        check_range("focal_length_mm", self.focal_length_mm, 0.0, 1e5, low_inclusive=False, unit="mm")
        check_range("defocus_diopters", self.defocus_diopters, -1000.0, 1000.0, unit="D")
        check_range("transmittance", self.transmittance, 0.0, 1.0, low_inclusive=False)
        if not isinstance(self.diffraction, bool):
            raise InvalidParameterError("diffraction", self.diffraction, "true or false")

    @property
    def blur_diameter_um(self) -> float:
        """Geometric blur-circle diameter on the sensor in µm."""
        return blur_circle_diameter_um(self.focal_length_mm, self.f_number, self.defocus_diopters)

    @property
    def illuminance_factor(self) -> float:
        """Image-plane illuminance (lux) per scene luminance (cd/m²)."""
        return illuminance_per_luminance(self.f_number, self.transmittance)

    def irradiance(self, band_luminance: torch.Tensor) -> torch.Tensor:
        """Band luminance ``(B, 3, H, W)`` in cd/m² → unblurred photon irradiance, photons s⁻¹ µm⁻²."""
        ppl = torch.tensor(PHOTONS_PER_LUX, device=band_luminance.device, dtype=band_luminance.dtype)
        return band_luminance * (self.illuminance_factor * ppl).view(1, 3, 1, 1)

    def psf(self, pitch_um: float, device=None, dtype=torch.float32) -> torch.Tensor:
        """PSF kernels ``(3, k, k)`` (R, G, B bands) on a grid of ``pitch_um``; each sums to 1."""
        k = _psf_cached(
            float(self.f_number), float(self.focal_length_mm), float(self.defocus_diopters),
            bool(self.diffraction), float(pitch_um),
        )
        return k.to(device=device, dtype=dtype)

    def blur(self, irradiance: torch.Tensor, pitch_um: float) -> torch.Tensor:
        """Convolve ``(B, 3, H, W)`` irradiance on a grid of ``pitch_um`` µm with the PSF."""
        return apply_psf(irradiance, self.psf(pitch_um, irradiance.device, irradiance.dtype))


def _fine_coords(radius_px: int, s: int) -> torch.Tensor:
    n = (2 * radius_px + 1) * s
    return (torch.arange(n, dtype=torch.float64) + 0.5) / s - (radius_px + 0.5)


def _bin(fine: torch.Tensor, s: int) -> torch.Tensor:
    n = fine.shape[-1] // s
    return fine.reshape(*fine.shape[:-2], n, s, n, s).sum(dim=(-3, -1))


@lru_cache(maxsize=128)
def _psf_cached(f_number: float, focal_mm: float, diopters: float, diffraction: bool, pitch_um: float) -> torch.Tensor:
    return psf_kernels(f_number, focal_mm, diopters, diffraction, pitch_um)


def psf_kernels(
    f_number: float, focal_length_mm: float, defocus_diopters: float, diffraction: bool, pitch_um: float
) -> torch.Tensor:
    """Pixel-integrated PSF ``(3, k, k)`` float64 (bands R, G, B), each normalised to sum 1.

    The defocus disk has diameter :func:`blur_circle_diameter_um`; with ``diffraction``
    it is convolved with the band's Airy pattern. A kernel of side 1 means "no blur".
    """
    s = _SUPERSAMPLE
    rho = blur_circle_diameter_um(focal_length_mm, f_number, defocus_diopters) / 2.0 / pitch_um  # px
    airy_r = [_AIRY_TRUNCATE * (wl * 1e-3) * f_number / pitch_um for wl in BAND_CENTRES_NM] if diffraction else [0.0]
    radius = int(math.ceil(rho + max(airy_r) + 0.5))
    if radius == 0 or (rho * s < 0.5 and max(airy_r) * s < 0.5):
        return torch.ones(3, 1, 1, dtype=torch.float64)
    x = _fine_coords(radius, s)
    r = torch.sqrt(x.view(-1, 1) ** 2 + x.view(1, -1) ** 2)  # fine-grid radius in px
    disk = (r <= rho).double() if rho * s >= 0.5 else (r == r.min()).double()
    disk = disk / disk.sum()
    if not diffraction:
        k = _bin(disk, s)
        return (k / k.sum()).expand(3, -1, -1).clone()
    n = disk.shape[-1]
    out = []
    for wl in BAND_CENTRES_NM:
        lam_n_px = (wl * 1e-3) * f_number / pitch_um  # λN in px
        xr = math.pi * r / lam_n_px
        airy = torch.where(xr > 1e-8, (2 * torch.special.bessel_j1(xr) / xr.clamp_min(1e-8)) ** 2, torch.ones_like(xr))
        airy = airy * (r <= _AIRY_TRUNCATE * lam_n_px)
        airy = airy / airy.sum()
        if rho * s < 0.5:  # in focus: the PSF is the Airy pattern alone
            fine = airy
        else:
            m = _fast_len(2 * n)
            conv = torch.fft.irfft2(torch.fft.rfft2(disk, (m, m)) * torch.fft.rfft2(airy, (m, m)), (m, m))
            c = n // 2  # full linear convolution of two centred n×n arrays is centred at n-1 (odd n)
            fine = conv[c : c + n, c : c + n]
        k = _bin(fine.clamp_min(0), s)
        out.append(k / k.sum())
    return torch.stack(out)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer ≥ ``n`` (an FFT-friendly length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def apply_psf(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each channel of ``(B, C, H, W)`` with its kernel ``(C, k, k)`` (reflect borders).

    One real FFT product per image (padded to an FFT-friendly size); differentiable in
    ``images``. A ``1 × 1`` kernel is a plain multiplication.
    """
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    if k == 1:  # no blur (kernels are normalised, so the single tap is 1)
        return images
    r = k // 2
    size = (_fast_len(h + 2 * r), _fast_len(w + 2 * r))
    # reflect-pad straight to the FFT size (the extra rows/columns beyond r are never read back)
    extra_h, extra_w = size[0] - h - 2 * r, size[1] - w - 2 * r
    if r + extra_h < h and r + extra_w < w:
        x = F.pad(images, (r, r + extra_w, r, r + extra_h), mode="reflect")
    else:
        x = F.pad(images, (r, r + extra_w, r, r + extra_h), mode="replicate")
    kf = torch.fft.rfft2(kernels[:c], s=size)  # kernel at the origin: output shifted by r
    y = torch.fft.irfft2(torch.fft.rfft2(x) * kf.unsqueeze(0), s=size)
    return y[..., 2 * r : 2 * r + h, 2 * r : 2 * r + w]


def apply_psf_direct(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Reference implementation of :func:`apply_psf`: a direct depthwise convolution."""
    c = images.shape[1]
    r = kernels.shape[-1] // 2
    mode = "reflect" if r < min(images.shape[-2:]) else "replicate"
    x = F.pad(images, (r, r, r, r), mode=mode) if r else images
    return F.conv2d(x, kernels[:c].flip(-1, -2).unsqueeze(1).to(images.dtype), groups=c)
