import numpy as np
import pytest
import torch
from PIL import Image

from weakspot.data.imageio import load_image, save_image
from weakspot.errors import InvalidImageError


def test_rgb_roundtrip(tmp_path, photo_uint8):
    Image.fromarray(photo_uint8).save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    assert t.shape == (3, *photo_uint8.shape[:2]) and t.dtype == torch.float32
    assert np.array_equal((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), photo_uint8)
    save_image(t, tmp_path / "b.png")
    assert torch.equal(load_image(tmp_path / "b.png"), t)


def test_conversion_rules(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (3, 8, 8) and torch.equal(g[0], g[2])
    assert load_image(tmp_path / "g.png", channels=1).shape == (1, 8, 8)

    g16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(g16).save(tmp_path / "g16.png")
    t16 = load_image(tmp_path / "g16.png", channels=1)
    assert torch.allclose(t16[0], torch.from_numpy(g16.astype(np.float32) / 65535), atol=1e-6)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, alpha 0 on the left half, 255 on the right
    rgba[:, 2:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png")
    assert torch.allclose(a[:, :, :2], torch.ones(3, 4, 2))  # transparent → white
    assert torch.allclose(a[:, :, 2:], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 4, 2))

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "p.png")
    p = load_image(tmp_path / "p.png")
    assert torch.equal(p[:, 0, 0], torch.tensor([0.0, 0, 1])) and torch.equal(
        p[:, 0, 1], torch.tensor([0.0, 1, 0])
    )

    Image.fromarray(np.full((4, 4, 4), 128, np.uint8), mode="CMYK").save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").shape == (3, 4, 4)


def test_corrupt_files_are_clear_errors(tmp_path, photo_uint8):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load_image(tmp_path / "x.png")
    Image.fromarray(photo_uint8).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidImageError):
        load_image(tmp_path / "trunc.jpg")
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_exif_orientation_is_applied(tmp_path, photo_uint8):
    """A camera JPEG stored landscape with EXIF Orientation = 6 ("rotate 90° clockwise to
    display") loads portrait: the stored pixels (decoded by Pillow, no transpose) rotated
    clockwise, exactly."""
    img = Image.fromarray(photo_uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "o6.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "o6.jpg") as raw:
        assert raw.getexif()[0x0112] == 6
        stored = np.asarray(raw.convert("RGB"))
    t = load_image(tmp_path / "o6.jpg")
    h, w = photo_uint8.shape[:2]
    assert t.shape == (3, w, h)  # portrait
    want = np.rot90(stored, -1)  # clockwise
    assert np.array_equal((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), want)
    # top-left of the displayed image is the stored bottom-left
    assert np.array_equal(want[0, 0], stored[-1, 0])


def test_16_bit_gray_keeps_every_level(tmp_path):
    """A 16-bit gray PNG whose levels differ by 1/65535 keeps them (÷ 65535, not ÷ 257 then
    8-bit): neighbouring values stay distinct and exact."""
    g16 = np.arange(256, dtype=np.uint16).reshape(16, 16) + 30000  # 30000 … 30255: one 8-bit step
    Image.fromarray(g16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
    t = load_image(tmp_path / "g16.png", channels=1)[0].double().numpy()
    np.testing.assert_allclose(t * 65535, g16, atol=1e-3)  # float32 holds 16 bits exactly
    assert len(np.unique(t)) == 256


@pytest.mark.parametrize("writer", ["cv2_png", "cv2_tiff", "tifffile"])
def test_16_bit_rgb_keeps_its_precision(tmp_path, writer):
    """16-bit RGB written by OpenCV (PNG, TIFF) and tifffile loads to 1/65535 (Pillow alone
    would give 8-bit values), channels in RGB order."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, size=(12, 10, 3), dtype=np.uint16)
    a[0, 0] = (65535, 0, 1)  # red, distinguishes RGB from BGR; 1 is below one 8-bit step
    if writer == "tifffile":
        tifffile = pytest.importorskip("tifffile")
        path = tmp_path / "rgb16.tif"
        tifffile.imwrite(path, a, photometric="rgb")
    else:
        cv2 = pytest.importorskip("cv2")
        path = tmp_path / ("rgb16.png" if writer == "cv2_png" else "rgb16.tif")
        assert cv2.imwrite(str(path), a[..., ::-1])  # OpenCV writes BGR
    t = load_image(path)
    assert t.shape == (3, 12, 10) and t.dtype == torch.float32
    got = t.permute(1, 2, 0).double().numpy() * 65535
    np.testing.assert_allclose(got, a, atol=1e-2)
    assert got[0, 0, 2] == pytest.approx(1.0, abs=1e-2)


def test_16_bit_rgba_alpha_and_orientation(tmp_path):
    """16-bit RGBA composites over white like 8-bit; an EXIF orientation in a 16-bit TIFF is
    applied (tag 274 = 8: rotate 90° counter-clockwise to display)."""
    cv2 = pytest.importorskip("cv2")
    tifffile = pytest.importorskip("tifffile")
    a = np.zeros((4, 6, 4), np.uint16)
    a[..., 0] = 65535
    a[:, 3:, 3] = 65535  # opaque right half, transparent left
    a[:, :3, 3] = 0
    assert cv2.imwrite(str(tmp_path / "rgba16.png"), a[..., [2, 1, 0, 3]])
    t = load_image(tmp_path / "rgba16.png")
    assert torch.allclose(t[:, :, :3], torch.ones(3, 4, 3))
    assert torch.allclose(t[:, :, 3:], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 4, 3))
    b = np.arange(4 * 6 * 3, dtype=np.uint16).reshape(4, 6, 3) * 700
    tifffile.imwrite(tmp_path / "o8.tif", b, photometric="rgb", extratags=[(274, "H", 1, 8, True)])
    with Image.open(tmp_path / "o8.tif") as im:
        assert im.getexif().get(0x0112) == 8
    t = load_image(tmp_path / "o8.tif")
    np.testing.assert_allclose(t.permute(1, 2, 0).double().numpy() * 65535, np.rot90(b, 1), atol=1e-2)


def test_32_bit_tiff_is_scaled_by_its_own_range(tmp_path):
    """A 32-bit integer TIFF ('I' mode): unsigned ÷ (2³² − 1), signed ÷ (2³¹ − 1) with
    negatives clipped, from the file's SampleFormat; values above 65535 are not clipped."""
    tifffile = pytest.importorskip("tifffile")
    u = (np.arange(64, dtype=np.uint64).reshape(8, 8) * 60_000_000).astype(np.uint32)
    tifffile.imwrite(tmp_path / "u32.tif", u)
    with Image.open(tmp_path / "u32.tif") as im:
        assert im.mode == "I"
    t = load_image(tmp_path / "u32.tif", channels=1)[0].double().numpy()
    np.testing.assert_allclose(t, u / (2.0**32 - 1), rtol=1e-6, atol=1e-9)
    s = (np.arange(64, dtype=np.int64).reshape(8, 8) * 30_000_000 - 10).astype(np.int32)
    Image.fromarray(s, mode="I").save(tmp_path / "s32.tif")  # Pillow writes SampleFormat = signed
    t = load_image(tmp_path / "s32.tif", channels=1)[0].double().numpy()
    np.testing.assert_allclose(t, np.clip(s, 0, None) / (2.0**31 - 1), rtol=1e-6, atol=1e-9)
    assert t[0, 0] == 0 and t.max() > 0.8
