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

Defocus (wave optics, the default ``defocus_model="wave"``). As ISETCam's
``opticsDefocusCore``, the defocus of a diffraction-limited circular pupil is the wavefront
``W(ρ) = w20 ρ²`` with (Hopkins 1955)::

    w20 = (p² / 2) · D0 · ΔD / (D0 + ΔD)        p = pupil radius = f / (2N), D0 = 1000 / f[mm]

and its OTF at reduced frequency ``ν = f_x · λ N`` (cut-off 1/(λN) at ν = 1) is the
autocorrelation of the pupil, which for a pure ρ² term reduces to one integral
(substituting ``u = cos φ`` in the overlap of the two shifted pupils)::

    H(ν) = (4/π) ∫₀^{acos ν} sin²φ · cos(8π (w20/λ) ν (cos φ − ν)) dφ

(at ``w20 = 0``: ``2/π (acos ν − ν √(1−ν²))``, the diffraction-limited MTF). It is
evaluated per band at the band centre (650/550/450 nm) by Gauss–Legendre quadrature and
applied on the FFT grid of the (reflect-padded) image. ``H`` is real and changes sign
(contrast reversal) beyond its first zero; :meth:`Optics.mtf` returns ``|H|``. At 0–2 D
(0–2 waves for the default lens) it keeps far more contrast than the geometric disk.

Every geometric PSF kernel is built on a 7× supersampled grid (disk ⊛ Airy), integrated over the
input pixels and normalised to sum 1, so blurring conserves energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from weakspot._checks import check_range
from weakspot._fft import spectrum_product
from weakspot.camera.scene import BAND_CENTRES_NM, PHOTONS_PER_LUX
from weakspot.errors import InvalidParameterError

__all__ = [
    "Optics",
    "illuminance_per_luminance",
    "blur_circle_diameter_um",
    "psf_kernels",
    "apply_psf",
    "apply_psf_direct",
    "defocus_w20_um",
    "defocus_otf",
    "DEFOCUS_MODELS",
]

#: How defocus is modelled: Hopkins' diffraction-limited OTF or the geometric blur disk.
DEFOCUS_MODELS = ("wave", "geometric")

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


def defocus_w20_um(focal_length_mm: float, f_number: float, defocus_diopters: float) -> float:
    """Defocus wavefront coefficient ``w20`` in µm: ``(p²/2) · D0 ΔD / (D0 + ΔD)``.

    ``p = f / (2N)`` is the pupil radius and ``D0 = 1000 / f[mm]`` the lens power in diopters
    (Hopkins; ISETCam ``opticsDefocusCore``). The 6 mm f/2.8 lens at 1 D: 0.571 µm (1.04 waves
    at 550 nm).

    >>> round(defocus_w20_um(6.0, 2.8, 1.0), 3)
    0.571
    """
    p_m = focal_length_mm * 1e-3 / (2.0 * f_number)
    d0 = 1000.0 / focal_length_mm
    d = float(defocus_diopters)
    if d0 + d == 0:
        raise InvalidParameterError("defocus_diopters", d, f"anything but -{d0:g} D (minus the lens power)")
    return (p_m**2 / 2.0) * d0 * d / (d0 + d) * 1e6


def _quadrature_nodes(w_waves: float) -> int:
    # the phase 8π w ν (cos φ − ν) spans at most 2π w radians: ~w oscillations to resolve
    return int(48 + 12 * math.ceil(abs(w_waves)))


def defocus_otf(nu: torch.Tensor, w20_waves: float) -> torch.Tensor:
    """Hopkins' OTF of a circular pupil with defocus ``w20_waves`` (in wavelengths).

    ``nu``: reduced spatial frequency ``f · λ N`` (any shape; 1 = the diffraction cut-off);
    returns the real (signed) OTF, 0 for ``|ν| ≥ 1``, in float64. See the module docstring.

    >>> round(float(defocus_otf(torch.tensor(0.0), 1.0)), 9)
    1.0
    """
    import numpy as np

    nu64 = torch.as_tensor(nu, dtype=torch.float64).abs()
    n = _quadrature_nodes(w20_waves)
    nodes, weights = np.polynomial.legendre.leggauss(n)
    t = torch.as_tensor(nodes, dtype=torch.float64)
    wt = torch.as_tensor(weights, dtype=torch.float64)
    flat = nu64.reshape(-1).clamp(max=1.0)
    a = torch.acos(flat).unsqueeze(1)  # upper limit per frequency
    phi = (t.unsqueeze(0) + 1.0) * (a / 2.0)  # Gauss–Legendre nodes mapped to [0, a]
    v = flat.unsqueeze(1)
    integrand = torch.sin(phi) ** 2 * torch.cos(8.0 * math.pi * w20_waves * v * (torch.cos(phi) - v))
    out = (4.0 / math.pi) * (a.squeeze(1) / 2.0) * (integrand * wt).sum(1)
    out = torch.where(flat >= 1.0, torch.zeros_like(out), out)
    return out.reshape(nu64.shape)


@dataclass(frozen=True)
class Optics:
    """A thin lens with defocus and (optionally) diffraction.

    Attributes:
        f_number: focal length / aperture diameter (dimensionless), > 0.
        focal_length_mm: focal length in mm. With ``f_number`` it sets the blur per diopter.
        defocus_diopters: focus error ΔD = |1/u0 − 1/u| in diopters (1/m); 0 = in focus.
        diffraction: in focus, blur with the diffraction-limited pupil (Airy pattern) per band.
            A defocused ``"wave"`` lens always includes the pupil's diffraction (it is part of
            Hopkins' OTF); a defocused ``"geometric"`` lens adds the Airy pattern only if set.
        transmittance: fraction of light the lens passes, in (0, 1].
        defocus_model: ``"wave"`` (default; Hopkins' diffraction-limited defocus OTF per band,
            as ISETCam) or ``"geometric"`` (the uniform blur circle ``f² |ΔD| / N``, the
            large-defocus limit).

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
    defocus_model: str = "wave"

    def __post_init__(self) -> None:
        if self.defocus_model not in DEFOCUS_MODELS:
            raise InvalidParameterError("defocus_model", self.defocus_model, "'wave' or 'geometric'")
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
    def w20_um(self) -> float:
        """Defocus wavefront coefficient in µm (:func:`defocus_w20_um`)."""
        return defocus_w20_um(self.focal_length_mm, self.f_number, self.defocus_diopters)

    @property
    def blurs(self) -> bool:
        """Whether the lens changes the image at all (``False``: in focus, no diffraction)."""
        return self.diffraction or self.defocus_diopters != 0.0

    def otf(self, freq_cyc_per_mm: torch.Tensor, wavelength_nm: float = 550.0) -> torch.Tensor:
        """Signed radial OTF of the optics alone (no pixel) at ``freq_cyc_per_mm`` (float64).

        ``"wave"``: Hopkins' defocused diffraction-limited OTF (:func:`defocus_otf`);
        ``"geometric"``: the blur disk's ``2 J₁(πbf)/(πbf)``, times the diffraction-limited
        OTF when ``diffraction`` is set. An in-focus lens without diffraction returns 1.
        """
        f = torch.as_tensor(freq_cyc_per_mm, dtype=torch.float64).abs()
        lam_n_mm = wavelength_nm * 1e-6 * self.f_number
        if self.defocus_model == "wave":
            if not self.blurs:
                return torch.ones_like(f)
            return defocus_otf(f * lam_n_mm, self.w20_um * 1e3 / wavelength_nm)
        b_mm = self.blur_diameter_um * 1e-3
        x = math.pi * b_mm * f
        disk = torch.where(x > 1e-12, 2 * torch.special.bessel_j1(x) / x.clamp_min(1e-12), torch.ones_like(x))
        if self.diffraction:
            disk = disk * defocus_otf(f * lam_n_mm, 0.0)
        return disk

    def mtf(self, freq_cyc_per_mm: torch.Tensor, wavelength_nm: float = 550.0) -> torch.Tensor:
        """Radial MTF ``|OTF|`` of the optics alone (no pixel aperture), the shape of the frequencies.

        >>> round(float(Optics(defocus_diopters=1.0).mtf(torch.tensor(89.0))), 2)
        0.17
        """
        f = torch.as_tensor(freq_cyc_per_mm)
        dtype = f.dtype if f.is_floating_point() else torch.get_default_dtype()
        return self.otf(f, wavelength_nm).abs().to(dtype)

    @property
    def illuminance_factor(self) -> float:
        """Image-plane illuminance (lux) per scene luminance (cd/m²)."""
        return illuminance_per_luminance(self.f_number, self.transmittance)

    def _wave_key(self) -> tuple:
        return (float(self.f_number), float(self.focal_length_mm), float(self.defocus_diopters))

    def _pad_px(self, pitch_um: float) -> int:
        """Border (px) the wave PSF needs: the blur circle plus 4 first-zero Airy radii."""
        airy = 4 * 1.22 * max(BAND_CENTRES_NM) * 1e-3 * self.f_number
        return int(math.ceil((self.blur_diameter_um / 2 + airy) / pitch_um)) + 1

    def irradiance(self, band_luminance: torch.Tensor) -> torch.Tensor:
        """Band luminance ``(B, 3, H, W)`` in cd/m² → unblurred photon irradiance, photons s⁻¹ µm⁻²."""
        ppl = torch.tensor(PHOTONS_PER_LUX, device=band_luminance.device, dtype=band_luminance.dtype)
        return band_luminance * (self.illuminance_factor * ppl).view(1, 3, 1, 1)

    def psf(self, pitch_um: float, device=None, dtype=torch.float32) -> torch.Tensor:
        """PSF kernels ``(3, k, k)`` (R, G, B bands) on a grid of ``pitch_um``; each sums to 1.

        For the wave model the kernel is the inverse FFT of the OTF sampled on a ``k × k`` grid
        (``k`` covers the geometric blur circle and 4 Airy radii); it may carry small negative
        side lobes from the band limit. A ``1 × 1`` kernel means no blur.
        """
        if self.defocus_model == "wave":
            if not self.blurs:
                return torch.ones(3, 1, 1, device=device, dtype=dtype)
            return _wave_psf_cached(self._wave_key(), float(pitch_um)).to(device=device, dtype=dtype)
        k = _psf_cached(
            float(self.f_number),
            float(self.focal_length_mm),
            float(self.defocus_diopters),
            bool(self.diffraction),
            float(pitch_um),
        )
        return k.to(device=device, dtype=dtype)

    def blur(self, irradiance: torch.Tensor, pitch_um: float) -> torch.Tensor:
        """Convolve ``(B, 3, H, W)`` irradiance on a grid of ``pitch_um`` µm with the PSF.

        Wave model: multiplication by the OTF on the FFT grid of the reflect-padded image.
        """
        if self.defocus_model == "wave":
            if not self.blurs:
                return irradiance
            return apply_otf(irradiance, self, pitch_um)
        return apply_psf(irradiance, self.psf(pitch_um, irradiance.device, irradiance.dtype))


_OTF_TABLE = 4097  # samples of the OTF over 0 ≤ ν ≤ 1 (linearly interpolated)


@lru_cache(maxsize=64)
def _otf_table(f_number: float, focal_mm: float, diopters: float) -> torch.Tensor:
    """``(3, _OTF_TABLE)`` float64 OTF per band over ν ∈ [0, 1] (reduced frequency f λN)."""
    nu = torch.linspace(0.0, 1.0, _OTF_TABLE, dtype=torch.float64)
    w20 = defocus_w20_um(focal_mm, f_number, diopters)
    return torch.stack([defocus_otf(nu, w20 * 1e3 / wl) for wl in BAND_CENTRES_NM])


def _otf_grid(key: tuple, pitch_um: float, h: int, w: int, real: bool) -> torch.Tensor:
    """OTF per band on an ``h × w`` FFT grid of pitch ``pitch_um`` (``rfft`` half-width if ``real``)."""
    f_number = key[0]
    table = _otf_table(*key)
    fy = torch.fft.fftfreq(h, d=pitch_um * 1e-3, dtype=torch.float64)  # cyc/mm
    fx = (torch.fft.rfftfreq if real else torch.fft.fftfreq)(w, d=pitch_um * 1e-3, dtype=torch.float64)
    fr = torch.sqrt(fy.view(-1, 1) ** 2 + fx.view(1, -1) ** 2)
    out = []
    for c, wl in enumerate(BAND_CENTRES_NM):
        pos = (fr * (wl * 1e-6 * f_number)).clamp(max=1.0) * (_OTF_TABLE - 1)
        i0 = pos.floor().long().clamp(max=_OTF_TABLE - 2)
        t = pos - i0
        out.append(table[c][i0] * (1 - t) + table[c][i0 + 1] * t)
    return torch.stack(out)


@lru_cache(maxsize=16)  # 3 × H × (W/2+1) float64 each: ≈ 3 MB at 512²
def _otf_grid_cached(key: tuple, pitch_um: float, h: int, w: int) -> torch.Tensor:
    return _otf_grid(key, pitch_um, h, w, real=True)


@lru_cache(maxsize=64)
def _wave_psf_cached(key: tuple, pitch_um: float) -> torch.Tensor:
    optics = Optics(f_number=key[0], focal_length_mm=key[1], defocus_diopters=key[2], diffraction=True)
    r = optics._pad_px(pitch_um)
    k = 2 * r + 1
    otf = _otf_grid(key, pitch_um, k, k, real=False)
    psf = torch.fft.fftshift(torch.fft.ifft2(otf).real, dim=(-2, -1))
    return psf / psf.sum(dim=(-2, -1), keepdim=True)


def apply_otf(images: torch.Tensor, optics: Optics, pitch_um: float) -> torch.Tensor:
    """Filter ``(B, 3, H, W)`` on a grid of ``pitch_um`` µm with the wave-optics OTF per band.

    The image is reflect-padded by the PSF's reach to an FFT-friendly size, multiplied by the
    OTF (radial, linearly interpolated from a fine table) and cropped; a flat field is kept
    exactly (OTF(0) = 1). Differentiable in ``images``.
    """
    _, c, h, w = images.shape
    r = optics._pad_px(pitch_um)
    size = (_fast_len(h + 2 * r), _fast_len(w + 2 * r))
    pad = (r, size[1] - w - r, r, size[0] - h - r)
    mode = "reflect" if max(pad) < min(h, w) else "replicate"
    x = F.pad(images, pad, mode=mode)
    otf = _otf_grid_cached(optics._wave_key(), float(pitch_um), size[0], size[1])
    otf = otf[:c].to(device=images.device, dtype=images.dtype)
    y = torch.fft.irfft2(spectrum_product(torch.fft.rfft2(x), otf.unsqueeze(0)), s=size)
    return y[..., r : r + h, r : r + w]


def _fine_coords(radius_px: int, s: int) -> torch.Tensor:
    n = (2 * radius_px + 1) * s
    return (torch.arange(n, dtype=torch.float64) + 0.5) / s - (radius_px + 0.5)


def _bin(fine: torch.Tensor, s: int) -> torch.Tensor:
    n = fine.shape[-1] // s
    return fine.reshape(*fine.shape[:-2], n, s, n, s).sum(dim=(-3, -1))


@lru_cache(maxsize=128)
def _psf_cached(
    f_number: float, focal_mm: float, diopters: float, diffraction: bool, pitch_um: float
) -> torch.Tensor:
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
    airy_r = (
        [_AIRY_TRUNCATE * (wl * 1e-3) * f_number / pitch_um for wl in BAND_CENTRES_NM]
        if diffraction
        else [0.0]
    )
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
        airy = torch.where(
            xr > 1e-8, (2 * torch.special.bessel_j1(xr) / xr.clamp_min(1e-8)) ** 2, torch.ones_like(xr)
        )
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
    _, c, h, w = images.shape
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
    y = torch.fft.irfft2(spectrum_product(torch.fft.rfft2(x), kf.unsqueeze(0)), s=size)
    return y[..., 2 * r : 2 * r + h, 2 * r : 2 * r + w]


def apply_psf_direct(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Reference implementation of :func:`apply_psf`: a direct depthwise convolution."""
    c = images.shape[1]
    r = kernels.shape[-1] // 2
    mode = "reflect" if r < min(images.shape[-2:]) else "replicate"
    x = F.pad(images, (r, r, r, r), mode=mode) if r else images
    return F.conv2d(x, kernels[:c].flip(-1, -2).unsqueeze(1).to(images.dtype), groups=c)
