"""NIQE, BRISQUE and patch maps against independent references on real photos.

References run inside the tests:
* NIQE — scikit-video's own ``niqe`` (the code the pristine model ships with), with
  the two shims current SciPy/NumPy need (``scipy.misc.imresize`` → Pillow, ``np.int``);
* BRISQUE — OpenCV's C++ ``cv2.quality.QualityBRISQUE`` with the LIVE model of
  Debian's ``opencv-data`` (installed here via apt when missing), and a NumPy/SciPy
  re-derivation of the published algorithm scored by libsvm's own ``svm_predict``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import weakspot.quality as q
from weakspot.errors import InvalidImageError, InvalidParameterError, ModelLoadError

OPENCV_MODEL = "/usr/share/opencv4/quality/brisque_model_live.yml"
OPENCV_RANGE = "/usr/share/opencv4/quality/brisque_range_live.yml"


def _skimage(name: str, h: int, w: int) -> torch.Tensor:
    import skimage.data

    a = getattr(skimage.data, name)()[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round() / 255


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from weakspot.degrade.filters import gaussian_blur2d

    return x if sigma == 0 else gaussian_blur2d(x, sigma)


def _noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for im in x:
        buf = io.BytesIO()
        Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            buf, "JPEG", quality=quality
        )
        out.append(torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.fixture(scope="session")
def nss_photos() -> torch.Tensor:
    """Four real photos, 288×384 (12 NIQE patches each)."""
    names = ("chelsea", "astronaut", "coffee", "rocket")
    return torch.stack([_skimage(n, 288, 384) for n in names])


#: Degradation sets of ``degraded_set``, in order.
SETS = [
    "clean",
    "blur0.5",
    "blur1",
    "blur2",
    "blur3",
    "noise0.02",
    "noise0.05",
    "noise0.1",
    "jpeg30",
    "jpeg8",
]


@pytest.fixture(scope="session")
def degraded_set(nss_photos) -> torch.Tensor:
    """The photos clean, blurred, noisy and JPEG-compressed, 8-bit quantised: (40, 3, 288, 384)."""
    x = nss_photos
    sets = [x] + [_blur(x, s) for s in (0.5, 1.0, 2.0, 3.0)] + [_noise(x, s) for s in (0.02, 0.05, 0.1)]
    sets += [_jpeg(x, 30), _jpeg(x, 8)]
    return _quantise(torch.cat(sets))


def _by_set(scores: np.ndarray, names: list[str]) -> np.ndarray:
    """Scores of the named sets: (len(names), photos)."""
    s = np.asarray(scores).reshape(len(SETS), -1)
    return s[[SETS.index(n) for n in names]]


# ----------------------------------------------------------------------------- NIQE
def _skvideo_niqe():
    """scikit-video's NIQE with the minimal shims for current SciPy/NumPy."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # scipy.misc is deprecated; the reference still uses it
        warnings.simplefilter("ignore", DeprecationWarning)
        import scipy.misc

    def imresize(img, size, interp="bicubic", mode="F"):
        h, w = img.shape
        im = Image.fromarray(np.asarray(img, dtype=np.float32), mode="F")
        return np.asarray(im.resize((int(w * size), int(h * size)), Image.BICUBIC), dtype=np.float32)

    scipy.misc.imresize = imresize
    if not hasattr(np, "int"):
        np.int = int  # removed in NumPy 1.24; the reference uses it as a cast
    import skvideo.measure  # noqa: F401

    return sys.modules["skvideo.measure.niqe"].niqe


@pytest.fixture(scope="session")
def niqe_scores(degraded_set):
    return q.niqe(degraded_set).numpy()


@pytest.mark.slow
def test_niqe_matches_scikit_video(degraded_set, niqe_scores):
    ref_niqe = _skvideo_niqe()
    x = degraded_set
    w = np.array([0.2989, 0.5870, 0.1140])
    luma = np.einsum("bchw,c->bhw", x.double().numpy(), w) * 255
    ref = np.array([ref_niqe(y.astype(np.float32))[0] for y in luma])
    assert spearmanr(niqe_scores, ref).statistic >= 0.99
    n = SETS.index("jpeg30") * len(x) // len(SETS)
    # same algorithm: within 1 % (the reference runs in float32) ...
    np.testing.assert_allclose(niqe_scores[:n], ref[:n], rtol=0.01)
    # ... except on JPEG, whose flat 8×8 blocks give MSCN values of ±0 whose sign (left or
    # right AGGD side) depends on float rounding
    np.testing.assert_allclose(niqe_scores[n:], ref[n:], rtol=0.12)


def test_niqe_monotone_in_blur_and_noise(niqe_scores):
    blur = _by_set(niqe_scores, ["clean", "blur0.5", "blur1"])
    noise = _by_set(niqe_scores, ["clean", "noise0.02", "noise0.05", "noise0.1"])
    # blur: monotone per photo up to σ = 1 px; NIQE saturates beyond ~1.5 px at this size
    assert (np.diff(blur, axis=0) > 0).all(), blur
    # noise: monotone on average; per photo every level is worse than clean (scikit-video's
    # reference gives the same non-monotone steps, see the test above)
    assert (np.diff(noise.mean(1)) > 0).all(), noise
    assert (noise[1:] > noise[:1]).all(), noise


@pytest.mark.filterwarnings("ignore:NIQE of a 192")
def test_niqe_batch_invariant_and_gray(nss_photos):
    x = nss_photos[:2, :, :192, :192]
    both = q.niqe(x)
    one = torch.cat([q.niqe(x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(both, one)
    # one channel is used as luma directly: the same image as gray gives the same score
    w = torch.tensor([0.2989, 0.5870, 0.1140], dtype=torch.float64).view(1, 3, 1, 1)
    gray = (x.double() * w).sum(1, keepdim=True)
    torch.testing.assert_close(q.niqe(gray), both, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------- BRISQUE
@pytest.fixture(scope="session")
def opencv_brisque():
    """cv2.quality's BRISQUE with Debian's LIVE model files (apt-installed when missing)."""
    import cv2

    if not hasattr(getattr(cv2, "quality", None), "QualityBRISQUE_create"):
        pytest.fail(
            "cv2.quality.QualityBRISQUE is missing: opencv-python(-headless) shadows the contrib build; "
            "run 'pip install --force-reinstall --no-deps opencv-contrib-python-headless' (make install does)"
        )
    if not os.path.exists(OPENCV_MODEL) and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "opencv-data"], capture_output=True, timeout=300)
    if not os.path.exists(OPENCV_MODEL):
        pytest.skip("Debian package opencv-data (BRISQUE LIVE model) is not installed and cannot be here")
    return cv2.quality.QualityBRISQUE_create(OPENCV_MODEL, OPENCV_RANGE)


@pytest.fixture(scope="session")
def brisque_scores(degraded_set):
    return q.brisque(degraded_set).numpy()


@pytest.mark.slow
def test_brisque_rank_agrees_with_opencv(degraded_set, brisque_scores, opencv_brisque):
    ref = []
    for im in degraded_set:
        bgr = np.ascontiguousarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[:, :, ::-1])
        ref.append(opencv_brisque.compute(bgr)[0])
    rho = spearmanr(brisque_scores, np.array(ref)).statistic
    assert rho >= 0.95, rho


def _ref_brisque_features(gray: np.ndarray) -> np.ndarray:
    """The published BRISQUE features, re-derived with NumPy/SciPy/OpenCV (gray on 0…255)."""
    import cv2
    from scipy.ndimage import correlate
    from scipy.special import gamma as G

    alphas = np.arange(0.2, 10, 0.001)
    r_aggd = G(2 / alphas) ** 2 / (G(1 / alphas) * G(3 / alphas))
    r_ggd = G(1 / alphas) * G(3 / alphas) / G(2 / alphas) ** 2
    t = np.arange(-3, 4)
    k1 = np.exp(-(t**2) / (2 * (7 / 6) ** 2))
    win = np.outer(k1, k1) / np.outer(k1, k1).sum()

    def aggd(v):
        ls, rs = np.sqrt(np.mean(v[v < 0] ** 2)), np.sqrt(np.mean(v[v > 0] ** 2))
        g = ls / rs
        rhat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
        rn = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
        a = alphas[np.argmin((r_aggd - rn) ** 2)]
        mean = (rs - ls) * (G(2 / a) / G(1 / a)) * np.sqrt(G(1 / a) / G(3 / a))
        return [a, mean, ls**2, rs**2]

    feats = []
    im = gray
    for _ in range(2):
        mu = correlate(im, win, mode="constant")
        sd = np.sqrt(np.abs(correlate(im * im, win, mode="constant") - mu * mu))
        s = (im - mu) / (sd + 1)
        v = s.ravel()
        feats += [
            alphas[np.argmin(np.abs(v.dot(v) / v.size / np.mean(np.abs(v)) ** 2 - r_ggd))],
            np.mean(v * v),
        ]
        for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            feats += aggd((s * np.roll(s, (dy, dx), axis=(0, 1))).ravel())
        im = cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_CUBIC)
    return np.array(feats)


def test_brisque_equals_numpy_rederivation_scored_by_libsvm(degraded_set, brisque_scores):
    import pickle
    from importlib.resources import files

    from libsvm import svmutil

    # clean, blurred and noisy images (not JPEG: the sign of its flat blocks' ±0 MSCN
    # values, hence the left/right AGGD split, depends on float rounding)
    idx = list(range(0, SETS.index("jpeg30") * len(degraded_set) // len(SETS), 3))
    x = degraded_set[idx].double().numpy()
    luma = np.einsum("bchw,c->bhw", x, np.array([0.2989, 0.5870, 0.1140])) * 255
    feats = np.stack([_ref_brisque_features(y) for y in luma])
    np.testing.assert_allclose(q.brisque_features(degraded_set[idx]).numpy(), feats, rtol=2e-3, atol=2e-4)

    base = files("brisque") / "models"
    rng = pickle.loads((base / "normalize.pickle").read_bytes())
    lo, hi = np.array(rng["min_"]), np.array(rng["max_"])
    scaled = -1 + 2 * (feats - lo) / (hi - lo)
    model = svmutil.svm_load_model(str(base / "svm.txt"))
    ref, _, _ = svmutil.svm_predict([0.0] * len(scaled), [list(map(float, r)) for r in scaled], model, "-q")
    np.testing.assert_allclose(brisque_scores[idx], np.array(ref), atol=0.5)


def test_brisque_monotone_in_blur_and_noise(brisque_scores):
    blur = _by_set(brisque_scores, ["clean", "blur0.5", "blur1", "blur2", "blur3"])
    noise = _by_set(brisque_scores, ["clean", "noise0.02", "noise0.05", "noise0.1"])
    assert (np.diff(blur, axis=0) > 0).all(), blur  # per photo, up to σ = 3 px
    assert (np.diff(noise.mean(1)) > 0).all(), noise
    assert (noise[2:] > noise[:1]).all(), noise
    jpeg = _by_set(brisque_scores, ["clean", "jpeg30", "jpeg8"])
    assert (jpeg[2] > jpeg[1]).all() and (jpeg[2] > jpeg[0]).all(), jpeg


# ----------------------------------------------------------------------------- maps
def test_maps_localise_blur(nss_photos):
    """Right half blurred: its cells score worse than the sharp left half's, per photo."""
    x = nss_photos[:4, :, :192, :384]
    y = x.clone()
    y[..., 192:] = _blur(x, 2.5)[..., 192:]
    for fn in (q.brisque_map, q.niqe_map):
        m = fn(y, grid=(3, 6))
        assert m.shape == (4, 3, 6)
        left, right = m[..., :3].mean((1, 2)), m[..., 3:].mean((1, 2))
        assert (right > left).all(), (fn.__name__, m)


def test_brisque_map_cell_tracks_whole_measure_on_cell(nss_photos):
    """A map cell's score ranks like BRISQUE of that cell cropped out as an image."""
    x = torch.cat([nss_photos[:2, :, :192, :192], _blur(nss_photos[:2, :, :192, :192], 1.5)])
    m = q.brisque_map(x, grid=(2, 2))
    crops = torch.stack(
        [x[:, :, r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] for r in (0, 1) for c in (0, 1)], 1
    )
    whole = q.brisque(crops.reshape(-1, 3, 96, 96)).reshape(4, 2, 2)
    assert spearmanr(m.flatten().numpy(), whole.flatten().numpy()).statistic > 0.8


def test_grid_pool_matches_cell_means():
    sal = torch.arange(2 * 100 * 130, dtype=torch.float32).reshape(2, 100, 130)
    ch, cw = q.grid_box(100, 130, (3, 4))
    assert (ch, cw) == (32, 32)
    pooled = q.grid_pool(sal, (3, 4))
    assert torch.allclose(pooled[1, 2, 3], sal[1, 64:96, 96:128].mean())


def test_user_mistakes_raise_clear_errors():
    with pytest.raises(InvalidImageError, match="at least two 96"):
        q.niqe(torch.rand(1, 3, 100, 100))
    with pytest.warns(UserWarning, match="rests on 4 patches.*erratic"):
        q.niqe(torch.rand(1, 3, 224, 224))
    with pytest.raises(InvalidImageError, match="at least 32"):
        q.brisque(torch.rand(1, 3, 20, 40))
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        q.brisque(torch.rand(1, 3, 64, 64) * 255)
    with pytest.raises(InvalidParameterError, match="grid"):
        q.quality_map(torch.rand(1, 3, 64, 64), "brisque", grid=(8, 8))
    with pytest.raises(InvalidParameterError, match=r"measure.*PaQ-2-PiQ needs a weights file"):
        q.quality_map(torch.rand(1, 3, 64, 64), "paq2piq")


# -------------------------------------------------------------------------- PaQ-2-PiQ
def test_paq2piq_without_weights_says_so(monkeypatch):
    monkeypatch.delenv(q.paq2piq.WEIGHTS_ENV, raising=False)
    with pytest.raises(ModelLoadError, match=r"not bundled.*WEAKSPOT_PAQ2PIQ_WEIGHTS"):
        q.load_paq2piq()


def test_paq2piq_loads_weights_and_roi_path_matches_plain_pooling(tmp_path):
    torch.manual_seed(0)
    net = q.PaQ2PiQ().eval()
    for m in net.modules():  # non-trivial batch-norm statistics, as trained weights have
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "p2p.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = q.load_paq2piq(path)
    x = torch.rand(2, 3, 224, 224)
    out = loaded.predict(x, grid=(4, 4))
    assert out.score.shape == (2,) and out.local_map.shape == (2, 4, 4)

    # independent path: RoI max pooling written out for a 7×7 feature map. torchvision's
    # RoIPool (as the original model) rounds box ends to feature cells and includes the end
    # cell: the whole image (0…224 px → cells 0…7) splits into bins [0, 4) and [4, 7); the
    # top-left 56-px cell (cells 0…2) into the overlapping bins [0, 2) and [1, 3).
    def pooled(f, bins):
        return torch.stack(
            [torch.stack([f[:, :, r0:r1, c0:c1].amax((-2, -1)) for c0, c1 in bins], -1) for r0, r1 in bins],
            -2,
        )

    with torch.no_grad():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        f = net.body((x - mean) / std)
        assert f.shape[-2:] == (7, 7)
        ref = net.head(pooled(f, [(0, 4), (4, 7)])).view(-1)
        ref_cell = net.head(pooled(f, [(0, 2), (1, 3)])).view(-1)
    torch.testing.assert_close(out.score, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.local_map[:, 0, 0], ref_cell, rtol=1e-4, atol=1e-4)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(ModelLoadError, match="not a PaQ-2-PiQ"):
        q.load_paq2piq(bad)
