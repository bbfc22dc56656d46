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

    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
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
    assert torch.equal(p[:, 0, 0], torch.tensor([0.0, 0, 1])) and torch.equal(p[:, 0, 1], torch.tensor([0.0, 1, 0]))

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
