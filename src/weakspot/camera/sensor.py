"""Sensor stage: photon irradiance → photons → electrons → digital numbers (DN).

Per pixel and exposure (all pure torch functions on ``(B, C, H, W)`` tensors):

1. **Sampling.** The sensor has a fixed physical size (default: the optical image
   of the input photo); pixels of pitch ``pixel_size_um`` tile it from its centre, so a
   larger pixel gives fewer pixels. Each pixel's photodiode is a centred square of
   side ``pixel_size_um · √fill_factor``; it integrates the irradiance over its area
   (exact box overlap with the input grid: a few shifted rows, then columns, per pixel).
2. **Colour filter.** With ``cfa="RGGB"`` (Bayer) each pixel keeps only its band.
3. **Photons → electrons.** ``mean_e = QE_c · photons + dark_current_e_per_s · exposure_s``,
   optional PRNU (gain) and DSNU (offset) fixed patterns keyed by ``fpn_seed`` (the sensor,
   not the image); shot noise is Poisson on the total (:func:`shot_noise`); the well clips
   each channel at ``full_well_e``.
4. **Readout.** Gaussian read noise (``read_noise_e``), conversion to DN with
   ``conversion_gain`` (DN/e⁻) plus ``black_level_dn``, rounding, ADC clip to
   ``[0, 2^adc_bits − 1]``.

Randomness: one key per image (:func:`weakspot.random.batch_keys`), whole-batch draws on the
images' device from the named streams ``camera.shot.poisson``, ``camera.shot.normal`` and
``camera.read_noise``, so an image's noise never depends on its batch (docs/camera.md).

Gradients: Poisson sampling, rounding and both clips are straight-through (their
forward value is exact; the backward pass treats them as identity), so a loss on
the rendered image reaches the input photo. The noise itself carries no gradient.

Defaults follow ISETCam's default APS pixel (``pixelCreate('default')``): 2.8 µm,
fill factor 0.75, conversion gain 100 µV/e⁻ with a 1 V swing (⇒ 10 000 e⁻ well),
1 mV read noise (⇒ 10 e⁻) and 1 mV/s dark voltage (⇒ 10 e⁻/s); a 12-bit ADC whose
range holds the full well (0.4 DN/e⁻), black level 64 DN; per-band QE 0.45/0.60/0.50.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from weakspot._checks import check_range
from weakspot._grad import straight_through, straight_through_
from weakspot.errors import InvalidParameterError
from weakspot.random import GeneratorLike, KeyedBatch, batch_keys, keyed_seed, poisson, randn

__all__ = [
    "Sensor",
    "PIXEL_WELL_DESIGNS",
    "aperture_matrix",
    "bayer_masks",
    "mosaic",
    "shot_noise",
    "straight_through",
    "straight_through_",
]

#: How the well changes with the pixel size in :meth:`Sensor.scaled_to_pixel`.
PIXEL_WELL_DESIGNS = ("fixed", "area")

_CFA_PATTERNS = {"RGGB": "RGGB", "BGGR": "BGGR", "GRBG": "GRBG", "GBRG": "GBRG"}
_CHANNEL = {"R": 0, "G": 1, "B": 2}


@dataclass(frozen=True)
class Sensor:
    """An image sensor with named physical parameters (see module docstring for defaults).

    Attributes:
        pixel_size_um: pixel pitch in µm (square pixels).
        fill_factor: photosensitive fraction of the pixel area, in (0, 1]; kept constant
            when the pixel size changes, so collected light ∝ pixel area.
        exposure_s: integration time in s.
        quantum_efficiency: electrons per photon, one value or ``(R, G, B)``.
        full_well_e: well capacity in electrons (per channel clip).
        read_noise_e: standard deviation of the readout noise in electrons.
        dark_current_e_per_s: mean dark signal in electrons per second.
        conversion_gain: DN per electron of the ADC chain.
        adc_bits: ADC resolution in bits.
        black_level_dn: pedestal added before the ADC, in DN.
        prnu_percent: photo-response non-uniformity, std of the per-pixel gain in %.
        dsnu_e: dark-signal non-uniformity, std of the per-pixel offset in electrons.
        fpn_seed: seed of the fixed-pattern maps (PRNU/DSNU), the same for every image.
        cfa: Bayer pattern (``"RGGB"``, ``"BGGR"``, ``"GRBG"``, ``"GBRG"``) or ``None``
            for a three-layer sensor that records every band at every pixel.
        size_mm: ``(height, width)`` of the sensor in mm, or ``None`` for exactly the
            optical image of the input (``H · sample_pitch_um × W · sample_pitch_um``).
        poisson_exact_below_e: shot noise is sampled exactly (Poisson) below this mean
            count and with the normal approximation above (see :func:`shot_noise`);
            ``float("inf")`` = exact everywhere.
    """

    pixel_size_um: float = 2.8
    fill_factor: float = 0.75
    exposure_s: float = 0.0125
    quantum_efficiency: float | tuple[float, float, float] = (0.45, 0.60, 0.50)
    full_well_e: float = 10_000.0
    read_noise_e: float = 10.0
    dark_current_e_per_s: float = 10.0
    conversion_gain: float = 0.4
    adc_bits: int = 12
    black_level_dn: float = 64.0
    prnu_percent: float = 0.0
    dsnu_e: float = 0.0
    fpn_seed: int = 0
    cfa: str | None = "RGGB"
    size_mm: tuple[float, float] | None = None
    poisson_exact_below_e: float = 100.0

    def __post_init__(self) -> None:
        check_range("pixel_size_um", self.pixel_size_um, 0.0, 1e4, low_inclusive=False, unit="µm")
        check_range("fill_factor", self.fill_factor, 0.0, 1.0, low_inclusive=False)
        check_range("exposure_s", self.exposure_s, 0.0, 3600.0, unit="s")
        qe = self.quantum_efficiency
        qes = tuple(qe) if isinstance(qe, (tuple, list)) else (qe,)
        if len(qes) not in (1, 3):
            raise InvalidParameterError("quantum_efficiency", qe, "one value or three (R, G, B) in [0, 1]")
        for q in qes:
            check_range("quantum_efficiency", q, 0.0, 1.0)
        object.__setattr__(
            self, "quantum_efficiency", tuple(float(q) for q in qes) if len(qes) == 3 else float(qes[0])
        )
        check_range("full_well_e", self.full_well_e, 0.0, 1e9, low_inclusive=False, unit="e⁻")
        check_range("read_noise_e", self.read_noise_e, 0.0, 1e6, unit="e⁻")
        check_range("dark_current_e_per_s", self.dark_current_e_per_s, 0.0, 1e9, unit="e⁻/s")
        check_range("conversion_gain", self.conversion_gain, 0.0, 1e6, low_inclusive=False, unit="DN/e⁻")
        bits = check_range("adc_bits", self.adc_bits, 1, 24)
        if not float(bits).is_integer():
            raise InvalidParameterError("adc_bits", self.adc_bits, "an integer in [1, 24]")
        object.__setattr__(self, "adc_bits", int(bits))
        check_range(
            "black_level_dn", self.black_level_dn, 0.0, self.adc_max_dn, high_inclusive=False, unit="DN"
        )
        check_range("prnu_percent", self.prnu_percent, 0.0, 100.0, unit="%")
        check_range("dsnu_e", self.dsnu_e, 0.0, 1e6, unit="e⁻")
        check_range("poisson_exact_below_e", self.poisson_exact_below_e, 0.0, None, unit="e⁻")
        if self.cfa is not None and str(self.cfa).upper() not in _CFA_PATTERNS:
            raise InvalidParameterError("cfa", self.cfa, "one of RGGB, BGGR, GRBG, GBRG or None")
        if self.cfa is not None:
            object.__setattr__(self, "cfa", str(self.cfa).upper())
        if self.size_mm is not None:
            if not isinstance(self.size_mm, (tuple, list)) or len(self.size_mm) != 2:
                raise InvalidParameterError("size_mm", self.size_mm, "(height_mm, width_mm) or None")
            for v in self.size_mm:
                check_range("size_mm", v, 0.0, 1e3, low_inclusive=False, unit="mm")
            object.__setattr__(self, "size_mm", (float(self.size_mm[0]), float(self.size_mm[1])))

    # ----------------------------------------------------------------- derived values
    @property
    def adc_max_dn(self) -> int:
        """Largest ADC output, ``2^adc_bits − 1``."""
        return 2 ** int(self.adc_bits) - 1

    @property
    def qe_rgb(self) -> tuple[float, float, float]:
        qe = self.quantum_efficiency
        return tuple(qe) if isinstance(qe, tuple) else (qe, qe, qe)  # type: ignore[return-value]

    @property
    def photodiode_area_um2(self) -> float:
        """Light-collecting area of one pixel, ``pixel_size_um² · fill_factor``, in µm²."""
        return self.pixel_size_um**2 * self.fill_factor

    @property
    def white_dn(self) -> float:
        """DN of a full well (or the ADC maximum if that is lower)."""
        return min(self.black_level_dn + self.full_well_e * self.conversion_gain, float(self.adc_max_dn))

    def scaled_to_pixel(self, pixel_size_um: float, well: str = "fixed") -> Sensor:
        """The same sensor design at another pixel pitch (fill factor kept constant).

        ``well="fixed"`` (default; ISETCam's ``'size constant fill factor'``): the voltage swing
        and conversion gain are kept, so the well capacity stays ``full_well_e``; a larger pixel
        collects light ∝ its area into the same well, so at the same exposure the picture
        brightens by the area ratio and clips, channel by channel. ``well="area"``: constant
        charge density, the well scales with the area and the conversion gain inversely, so the
        ADC still spans the full well and brightness is unchanged. Read noise, QE and dark
        current per pixel are kept in both designs.
        """
        check_range("pixel_size_um", pixel_size_um, 0.0, 1e4, low_inclusive=False, unit="µm")
        if well not in PIXEL_WELL_DESIGNS:
            raise InvalidParameterError(
                "well", well, "'fixed' (ISETCam, constant well) or 'area' (well ∝ pixel area)"
            )
        if well == "fixed":
            return replace(self, pixel_size_um=float(pixel_size_um))
        a = (pixel_size_um / self.pixel_size_um) ** 2
        return replace(
            self,
            pixel_size_um=float(pixel_size_um),
            full_well_e=self.full_well_e * a,
            conversion_gain=self.conversion_gain / a,
        )

    def grid(self, h: int, w: int, sample_pitch_um: float) -> tuple[int, int, float, float]:
        """``(rows, cols, height_um, width_um)`` of the sensor for an ``h × w`` input.

        Raises :class:`InvalidParameterError` when the pixel is larger than the sensor or
        the sensor is larger than the optical image.
        """
        img_h, img_w = h * sample_pitch_um, w * sample_pitch_um
        if self.size_mm is None:
            sh, sw = img_h, img_w
        else:
            sh, sw = self.size_mm[0] * 1e3, self.size_mm[1] * 1e3
            if sh > img_h * (1 + 1e-9) or sw > img_w * (1 + 1e-9):
                raise InvalidParameterError(
                    "size_mm",
                    self.size_mm,
                    f"at most the optical image, {img_h / 1e3:.4g} × {img_w / 1e3:.4g} mm for a {h}×{w} input "
                    f"at {sample_pitch_um:g} µm per input pixel",
                    "use size_mm=None to cover the whole image",
                )
        rows, cols = (
            int(math.floor(sh / self.pixel_size_um + 1e-9)),
            int(math.floor(sw / self.pixel_size_um + 1e-9)),
        )
        if rows < 1 or cols < 1:
            raise InvalidParameterError(
                "pixel_size_um",
                self.pixel_size_um,
                f"(0, {min(sh, sw):.4g}] µm: the pixel must fit on the {sh / 1e3:.4g} × {sw / 1e3:.4g} mm sensor",
            )
        return rows, cols, sh, sw

    # ----------------------------------------------------------------- pipeline steps
    def collect(
        self,
        irradiance: torch.Tensor,
        sample_pitch_um: float,
        gain: torch.Tensor | None = None,
        exposure_s: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean photons per pixel and band ``(B, 3, rows, cols)`` over the exposure.

        ``irradiance``: ``(B, 3, H, W)`` photons s⁻¹ µm⁻² on the input grid, optionally times a
        broadcastable ``gain`` (multiplied in the same pass; the camera passes relative
        irradiance and its photometric scale this way). ``exposure_s``: optional per-image
        integration times ``(B,)`` in s instead of :attr:`exposure_s` (same numbers per image).
        """
        _, _, h, w = irradiance.shape
        rows, cols, sh, sw = self.grid(h, w, sample_pitch_um)
        side = self.pixel_size_um * math.sqrt(self.fill_factor)
        _, area_y = _aperture_cached(
            h, float(sample_pitch_um), rows, float(self.pixel_size_um), float(side), float(sh)
        )
        _, area_x = _aperture_cached(
            w, float(sample_pitch_um), cols, float(self.pixel_size_um), float(side), float(sw)
        )
        t_s = self.exposure_s if exposure_s is None else exposure_s.reshape(-1, 1, 1, 1)
        scale = torch.as_tensor(t_s, dtype=irradiance.dtype, device=irradiance.device)
        if gain is not None:
            scale = scale * gain
        if area_y is not None and area_x is not None:  # one input pixel per sensor pixel
            return irradiance * (scale * (area_y * area_x))
        # Ay · irradiance · Axᵀ with banded matrices: each photodiode overlaps only a few input
        # pixels, so it is a short sum of shifted rows (then columns) — K elementwise passes in a
        # fixed order, the same bytes for an image in any batch (a GEMM may block, and so round,
        # differently by batch size) and far less work than the dense product
        iy, wy = _aperture_band(
            h, float(sample_pitch_um), rows, float(self.pixel_size_um), float(side), float(sh)
        )
        ix, wx = _aperture_band(
            w, float(sample_pitch_um), cols, float(self.pixel_size_um), float(side), float(sw)
        )
        out = _band_sum(_band_sum(irradiance, iy, wy, dim=-2), ix, wx, dim=-1)
        return out * scale

    def qe_tensor(self, device, dtype) -> torch.Tensor:
        return torch.tensor(self.qe_rgb, device=device, dtype=dtype).view(1, 3, 1, 1)

    def expose(
        self, photons_rgb: torch.Tensor, generator: GeneratorLike = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Photons per band ``(B, 3, h, w)`` → ``(photons, electrons, readout_e, dn)``.

        With a CFA the outputs are mosaics ``(B, 1, h, w)``: each pixel's own band only.
        ``photons`` is the mean photon count at the photodiode, ``electrons`` the collected
        charge (shot noise, dark current, fixed pattern, full-well clip; integers),
        ``readout_e`` adds read noise (float e⁻) and ``dn`` is the quantised ADC output.
        ``generator``: anything :func:`~weakspot.random.batch_keys` accepts (the camera passes a
        :class:`~weakspot.random.KeyedBatch` of one key per image); all noise is drawn for the
        whole batch from named streams.
        """
        photons = mosaic(photons_rgb, self.cfa) if self.cfa is not None else photons_rgb
        return (photons, *self.expose_photons(photons, generator))

    def expose_photons(
        self, photons: torch.Tensor, generator: GeneratorLike = None, exposure_s: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean photons at each photodiode (``(B, 1, h, w)`` mosaic with a CFA, else
        ``(B, 3, h, w)``) → ``(electrons, readout_e, dn)``; see :meth:`expose`.

        ``exposure_s``: optional per-image integration times ``(B,)`` in s for the dark current
        (the photons already hold their exposure); default :attr:`exposure_s`."""
        b, _, h, w = photons.shape
        dev, dt = photons.device, photons.dtype
        keys = batch_keys(generator, b)  # once: the named streams below all draw from these keys
        if self.cfa is not None:
            signal = photons * _qe_map(self.cfa, self.qe_rgb, h, w).to(device=dev, dtype=dt)
        else:
            signal = photons * self.qe_tensor(dev, dt)
        # One code path with or without a gradient: in-place ops only on tensors created here
        # (autograd records them, and raises if one would corrupt a saved value); the sampled
        # steps are straight-through, whose forward value is exact.
        if exposure_s is None:
            dark_e: float | torch.Tensor = self.dark_current_e_per_s * self.exposure_s
        else:  # per image: the same float64 product as the scalar, rounded to dt the same way
            t_s = exposure_s.to(device=dev, dtype=torch.float64).reshape(-1, 1, 1, 1)
            dark_e = (t_s * self.dark_current_e_per_s).to(dt)
        if self.prnu_percent > 0 or self.dsnu_e > 0:
            gain, offset = _fpn_maps(
                self.fpn_seed, signal.shape[1], h, w, self.prnu_percent, self.dsnu_e, dev
            )
            signal = signal.mul_(gain.to(dt))  # PRNU: per-pixel gain
            mean_e = signal.add_((dark_e + offset.to(dt)).clamp_min(0.0))  # DSNU: per-pixel dark offset
        else:
            mean_e = signal.add_(dark_e)
        mean_e = mean_e.clamp_min_(0.0)
        counts = shot_noise(mean_e.detach(), keys, self.poisson_exact_below_e)
        electrons = straight_through(mean_e, counts.clamp_(max=self.full_well_e))
        if self.read_noise_e > 0:
            z = randn(electrons.shape, keys, dev, dt, stream="camera.read_noise")
            readout = z.mul_(self.read_noise_e).add_(electrons)
        else:
            readout = electrons
        analog = readout.mul(self.conversion_gain).add_(self.black_level_dn)
        adc_max = float(self.adc_max_dn)
        dn = straight_through_(analog, lambda t: t.round_().clamp_(0.0, adc_max))
        return electrons, readout, dn

    def uniform_sampling_area(self, h: int, w: int, sample_pitch_um: float) -> float | None:
        """Photodiode area (µm²) when every sensor pixel sees exactly one input pixel, else ``None``."""
        rows, cols, sh, sw = self.grid(h, w, sample_pitch_um)
        side = self.pixel_size_um * math.sqrt(self.fill_factor)
        _, ay = _aperture_cached(
            h, float(sample_pitch_um), rows, float(self.pixel_size_um), float(side), float(sh)
        )
        _, ax = _aperture_cached(
            w, float(sample_pitch_um), cols, float(self.pixel_size_um), float(side), float(sw)
        )
        return None if ay is None or ax is None else ay * ax


def aperture_matrix(
    n_in: int,
    pitch_in_um: float,
    n_out: int,
    pixel_um: float,
    side_um: float,
    sensor_um: float,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """``(n_out, n_in)`` overlap lengths (µm) of each photodiode with each input pixel, along one axis.

    Input pixel ``j`` spans ``[j, j+1] · pitch_in_um``; the sensor (length ``sensor_um``) is
    centred on the input and its pixel ``i`` has a photodiode of length ``side_um`` centred at
    ``offset + (i + ½) · pixel_um``. The product ``Ay · irradiance · Axᵀ`` integrates the
    irradiance over every photodiode exactly (it is piecewise constant on the input grid).
    """
    m, _ = _aperture_cached(
        n_in, float(pitch_in_um), n_out, float(pixel_um), float(side_um), float(sensor_um)
    )
    return m.to(device=device, dtype=dtype)


@lru_cache(maxsize=64)
def _aperture_cached(
    n_in: int, pitch: float, n_out: int, pixel: float, side: float, sensor: float
) -> tuple[torch.Tensor, float | None]:
    """The overlap matrix and, when it is a multiple of the identity, that multiple (µm)."""
    offset = (n_in * pitch - sensor) / 2.0 + (sensor - n_out * pixel) / 2.0
    centres = offset + (torch.arange(n_out, dtype=torch.float64) + 0.5) * pixel
    lo, hi = (centres - side / 2).view(-1, 1), (centres + side / 2).view(-1, 1)
    edges = torch.arange(n_in + 1, dtype=torch.float64) * pitch
    a, b = edges[:-1].view(1, -1), edges[1:].view(1, -1)
    m = (torch.minimum(hi, b) - torch.maximum(lo, a)).clamp_min(0.0)
    m[m < 1e-12] = 0.0
    uniform = None
    if n_in == n_out:
        d = m.diagonal()
        tol = 1e-9 * max(pitch, pixel)
        if float((m - torch.diag(d)).abs().max()) <= tol and float((d - d.mean()).abs().max()) <= tol:
            uniform = float(d.mean())
    return m, uniform


@lru_cache(maxsize=64)
def _aperture_band(
    n_in: int, pitch: float, n_out: int, pixel: float, side: float, sensor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The overlap matrix (:func:`aperture_matrix`) as bands: ``(index, weight)``, both ``(n_out, K)``,
    with row ``i`` of the matrix = ``Σ_k weight[i, k] · e(index[i, k])`` (K = the widest band;
    padding entries repeat an index with weight 0)."""
    m, _ = _aperture_cached(n_in, pitch, n_out, pixel, side, sensor)
    nz = m > 0
    cols = torch.arange(n_in).expand(n_out, n_in)
    first = torch.where(nz, cols, n_in).amin(1).clamp_(max=n_in - 1)
    last = torch.where(nz, cols, -1).amax(1)
    k = max(int((last - first).max()) + 1, 1)
    index = (first.view(-1, 1) + torch.arange(k).view(1, -1)).clamp_(max=n_in - 1)
    weight = m.gather(1, index)
    weight[first.view(-1, 1) + torch.arange(k).view(1, -1) > n_in - 1] = 0.0  # clamped padding
    return index, weight


def _band_sum(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, dim: int) -> torch.Tensor:
    """``A · x`` along ``dim`` (−2: rows, −1: columns) for a banded ``A`` given as
    :func:`_aperture_band` bands: ``Σ_k weight[:, k] · x[..., index[:, k], ...]``, summed in order k."""
    index = index.to(x.device)
    weight = weight.to(device=x.device, dtype=x.dtype)
    shape = (-1, 1) if dim == -2 else (1, -1)
    out = x.index_select(dim, index[:, 0]) * weight[:, 0].view(shape)
    for k in range(1, index.shape[1]):  # K terms, whatever the batch
        out = out.add_(x.index_select(dim, index[:, k]) * weight[:, k].view(shape))
    return out


@lru_cache(maxsize=64)
def _channel_index(pattern: str, h: int, w: int) -> torch.Tensor:
    idx = torch.zeros(1, 1, h, w, dtype=torch.long)
    for k, ch in enumerate(pattern):
        dy, dx = divmod(k, 2)
        idx[..., dy::2, dx::2] = _CHANNEL[ch]
    return idx


@lru_cache(maxsize=64)
def _qe_map(pattern: str, qe: tuple[float, float, float], h: int, w: int) -> torch.Tensor:
    return torch.tensor(qe, dtype=torch.float64)[_channel_index(pattern, h, w)]


@lru_cache(maxsize=64)
def _bayer_cpu(pattern: str, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(3, h, w, dtype=torch.float64)
    for k, ch in enumerate(pattern):
        dy, dx = divmod(k, 2)
        m[_CHANNEL[ch], dy::2, dx::2] = 1.0
    return m


def bayer_masks(pattern: str, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Indicator masks ``(3, h, w)`` of the R, G, B photosites of a 2×2 Bayer ``pattern``."""
    return _bayer_cpu(pattern.upper(), h, w).to(device=device, dtype=dtype)


def mosaic(rgb: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Sample ``(B, 3, H, W)`` through a Bayer CFA → ``(B, 1, H, W)`` (a gather; differentiable)."""
    b, _, h, w = rgb.shape
    idx = _channel_index(pattern.upper(), h, w).to(rgb.device)
    return torch.gather(rgb, 1, idx.expand(b, 1, h, w))


def shot_noise(mean_e: torch.Tensor, generator: GeneratorLike, exact_below_e: float = 100.0) -> torch.Tensor:
    """Photon/dark-current shot noise: integer samples with mean and variance ``mean_e``.

    Exact Poisson (:func:`weakspot.random.poisson`) where ``mean_e < exact_below_e``; above
    it the normal approximation ``round(λ + √λ·z)`` (skewness 1/√λ ≤ 0.1), as ISETCam's
    ``noiseShot`` does (it switches at 25 e⁻). ``exact_below_e=inf`` samples Poisson everywhere.

    Whole batch, keyed per image (``generator`` is normalised by :func:`~weakspot.random.batch_keys`):
    the Poisson values come from stream ``"camera.shot.poisson"`` and the normal ones from
    ``"camera.shot.normal"``, each at the pixel's own counter, so an image's noise does not
    depend on the batch it is in; the op count does not grow with the batch.
    """
    keys = batch_keys(generator, mean_e.shape[0])
    if math.isinf(exact_below_e):
        return poisson(mean_e, keys, stream="camera.shot.poisson")
    low = mean_e < exact_below_e
    # Poisson only where the mean is low (a zero rate costs nothing: the sampler skips it)
    exact = poisson(torch.where(low, mean_e, torch.zeros_like(mean_e)), keys, stream="camera.shot.poisson")
    z = randn(mean_e.shape, keys, mean_e.device, mean_e.dtype, stream="camera.shot.normal")
    normal = z.mul_(mean_e.sqrt()).add_(mean_e).round_().clamp_min_(0.0)
    return torch.where(low, exact, normal)


@lru_cache(maxsize=16)
def _fpn_maps(
    seed: int, c: int, h: int, w: int, prnu_percent: float, dsnu_e: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Persistent PRNU gain and DSNU offset maps ``(1, c, h, w)`` (float64, on ``device``) for sensor ``seed``.

    Keyed by the sensor, not the image: one key from ``(seed, c, h, w)``, streams
    ``"camera.fpn.prnu"`` and ``"camera.fpn.dsnu"``, drawn on ``device`` (the same values on
    every device up to the last ulp of Box–Muller's ``log``/``cos``), cached per sensor.
    """
    key = KeyedBatch([keyed_seed("weakspot.camera.fpn", int(seed), c, h, w)])
    gain = 1.0 + (prnu_percent / 100.0) * randn(
        (1, c, h, w), key, device, torch.float64, stream="camera.fpn.prnu"
    )
    offset = dsnu_e * randn((1, c, h, w), key, device, torch.float64, stream="camera.fpn.dsnu")
    return gain.clamp_min(0.0), offset
