"""Full-reference quality (PSNR, SSIM) against scikit-image's reference implementations on real
photos from scikit-image, degraded by blur, noise and JPEG."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from weakspot.errors import InvalidImageError, InvalidParameterError
from weakspot.quality.reference import lpips_distance, lpips_status, psnr_db, ssim


def _pairs():
    """(degraded, clean) float64 HWC images in [0, 1]: 3 real photos × 3 degradations."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter
    from skimage import data

    rng = np.random.default_rng(0)
    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        im = getattr(data, name)()[:160, :200].astype(np.float64) / 255
        blur = np.stack([gaussian_filter(im[..., c], 1.5) for c in range(3)], -1)
        noise = np.clip(im + rng.normal(0, 0.05, im.shape), 0, 1)
        buf = io.BytesIO()
        Image.fromarray((im * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=15)
        jpeg = np.asarray(Image.open(buf), dtype=np.float64) / 255
        out += [(blur, im), (noise, im), (jpeg, im)]
    return out


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


@pytest.fixture(scope="module")
def pairs():
    return _pairs()


def test_psnr_matches_skimage(pairs):
    from skimage.metrics import peak_signal_noise_ratio

    got = psnr_db(torch.cat([_t(d) for d, _ in pairs]), torch.cat([_t(c) for _, c in pairs]))
    ref = [peak_signal_noise_ratio(c, d, data_range=1.0) for d, c in pairs]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    assert ((got > 10) & (got < 45)).all()  # real degradations, not a degenerate value


def test_ssim_matches_skimage_per_channel_mean(pairs):
    from skimage.metrics import structural_similarity

    got = ssim(torch.cat([_t(d) for d, _ in pairs]), torch.cat([_t(c) for _, c in pairs]))
    ref = [
        structural_similarity(
            c,
            d,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for d, c in pairs
    ]
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-9)
    assert np.ptp(ref) > 0.2  # the set spans a real range of SSIM
    # grey images: one channel
    g = torch.cat([_t(d).mean(1, keepdim=True) for d, _ in pairs[:2]])
    c = torch.cat([_t(c).mean(1, keepdim=True) for _, c in pairs[:2]])
    ref_g = [
        structural_similarity(
            b[0, 0].numpy(),
            a[0, 0].numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for a, b in zip(g.split(1), c.split(1), strict=True)
    ]
    np.testing.assert_allclose(ssim(g, c).numpy(), ref_g, atol=1e-9)


def test_float32_batch_and_identity(pairs):
    d = torch.cat([_t(d) for d, _ in pairs]).float()
    c = torch.cat([_t(c) for _, c in pairs]).float()
    np.testing.assert_allclose(ssim(d, c).numpy(), ssim(d.double(), c.double()).numpy(), atol=1e-4)
    np.testing.assert_allclose(ssim(d[3:5], c[3:5]).numpy(), ssim(d, c)[3:5].numpy(), atol=1e-6)
    assert torch.isinf(psnr_db(c, c)).all()
    np.testing.assert_allclose(ssim(c, c).numpy(), 1.0, atol=1e-5)
    # more blur -> lower PSNR and SSIM (physics, per photo)
    from weakspot.degrade import get_degradation

    blur = [get_degradation("gaussian_blur", sigma_px=s)(c.double()) for s in (0.5, 1.5, 3.0)]
    p = torch.stack([psnr_db(b, c.double()) for b in blur])
    s = torch.stack([ssim(b, c.double()) for b in blur])
    assert (p.diff(dim=0) < 0).all() and (s.diff(dim=0) < 0).all()


def test_user_mistakes_and_lpips_without_weights(tmp_path, monkeypatch):
    a = torch.rand(1, 3, 32, 32)
    with pytest.raises(InvalidImageError, match="same shape"):
        psnr_db(a, torch.rand(1, 3, 32, 31))
    with pytest.raises(InvalidImageError, match="at least 11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(InvalidParameterError):
        psnr_db(a, a, data_range=0)
    # no weights on disk: NaN and a one-line note, nothing downloads
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ok, note = lpips_status()
    assert not ok and "LPIPS not computed" in note and "\n" not in note
    d = lpips_distance(a, a)
    assert d.shape == (1,) and math.isnan(float(d[0]))
    ok, note = lpips_status(tmp_path / "missing.pth")
    assert not ok


def test_lpips_from_a_weights_file_equals_the_lpips_package(pairs, tmp_path, monkeypatch):
    """LPIPS with the backbone read from a file equals the lpips package's own model built on
    torchvision's AlexNet holding the same weights (random here: no ImageNet AlexNet offline)."""
    lpips = pytest.importorskip("lpips")
    import torchvision

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    f = tmp_path / "alexnet.pth"
    torch.save(alex.state_dict(), f)
    d = torch.cat([_t(d) for d, _ in pairs[:4]]).float()
    c = torch.cat([_t(c) for _, c in pairs[:4]]).float()
    got = lpips_distance(d, c, f)
    assert lpips_status(f)[0] and torch.isfinite(got).all() and (got > 0).all()
    np.testing.assert_allclose(lpips_distance(c, c, f).numpy(), 0, atol=1e-7)
    # reference: lpips builds its backbone by calling torchvision.models.alexnet(pretrained=True)
    monkeypatch.setattr(torchvision.models, "alexnet", lambda *a, **k: alex)
    import lpips.pretrained_networks as pn

    monkeypatch.setattr(pn.tv, "alexnet", lambda *a, **k: alex)
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=False, verbose=False).eval()
    with torch.no_grad():
        want = ref(d * 2 - 1, c * 2 - 1).flatten()
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
