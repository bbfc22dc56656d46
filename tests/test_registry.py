import pytest
import torch

import weakspot
from weakspot.cli import main
from weakspot.errors import InvalidImageError, InvalidParameterError, UnknownNameError


def test_list_and_pattern():
    names = weakspot.list_degradations()
    assert "gaussian_noise" in names and "gaussian_blur" in names
    assert names == sorted(names)
    assert weakspot.list_degradations("gaussian_b*") == ["gaussian_blur"]


def test_every_entry_has_units_doc_and_five_severities():
    for spec in weakspot.list_specs():
        assert spec.summary, spec.name
        assert sorted(spec.severities) == [1, 2, 3, 4, 5], spec.name
        for p in spec.params:
            assert p.doc, f"{spec.name}.{p.name} has no doc"


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean: gaussian_blur"):
        weakspot.get_degradation("gaussian_blr")


def test_severity_and_override():
    d = weakspot.get_degradation("gaussian_blur", severity=4)
    assert d.params == {"sigma_px": 2.0}
    d = weakspot.get_degradation("gaussian_blur", severity=4, sigma_px="0.5")
    assert d.params == {"sigma_px": 0.5}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sigma_px": -1}, r"sigma_px.*\[0, 50\] px"),
        ({"sigma_px": "abc"}, "a number"),
        ({"severity": 6}, "severity"),
        ({"sigma": 1}, "unknown parameter"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, match):
    with pytest.raises((InvalidParameterError, UnknownNameError), match=match):
        weakspot.get_degradation("gaussian_blur", **kwargs)


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.rand(3, 8, 8), r"\(B, C, H, W\)"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        (torch.rand(1, 3, 8, 8) * 255, r"\[0, 1\]"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float"),
        (torch.rand(1, 4, 8, 8), "channels"),
    ],
)
def test_bad_images_are_clear_errors(images, match):
    with pytest.raises(InvalidImageError, match=match):
        weakspot.get_degradation("gaussian_noise")(images)


def test_compose_is_seeded_and_ordered():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    chain = weakspot.compose(
        [("gaussian_blur", {"sigma_px": 1.0}), {"name": "gaussian_noise", "variance": 0.01}]
    )
    a, b = chain(x, generator=3), chain(x, generator=3)
    assert torch.equal(a, b)
    # step j > 0 draws from the batch's keys folded with ("compose", j)
    from weakspot.random import batch_keys

    noise = weakspot.get_degradation("gaussian_noise", variance=0.01)
    manual = noise(
        weakspot.get_degradation("gaussian_blur", sigma_px=1.0)(x),
        generator=batch_keys(3, 2).fold("compose", 1),
    )
    assert torch.equal(a, manual)
    # so the same noise twice in a chain is two independent draws, variance 2·0.01
    flat = torch.full((2, 3, 64, 64), 0.5)
    twice = weakspot.compose([("gaussian_noise", {"variance": 0.01})] * 2)(flat, generator=3) - 0.5
    once = noise(flat, generator=3) - 0.5
    assert abs(float(twice.var()) - 0.02) < 0.002 and abs(float(once.var()) - 0.01) < 0.001
    assert torch.equal(
        weakspot.compose([("gaussian_noise", {"variance": 0.01})])(flat, generator=3) - 0.5, once
    )


def test_cli_list_and_user_errors(tmp_path, capsys, photo_uint8):
    from PIL import Image

    assert main(["list", "gaussian_*"]) == 0
    assert "sigma_px" in capsys.readouterr().out
    src = tmp_path / "in.png"
    Image.fromarray(photo_uint8).save(src)
    assert (
        main(
            ["degrade", str(src), str(tmp_path / "out.png"), "--op", "gaussian_blur", "--param", "sigma_px=2"]
        )
        == 0
    )
    assert (tmp_path / "out.png").is_file()
    # user mistakes: exit code 2, one clear message, no traceback
    assert main(["degrade", str(src), str(tmp_path / "o.png"), "--op", "nope"]) == 2
    assert (
        main(
            ["degrade", str(src), str(tmp_path / "o.png"), "--op", "gaussian_blur", "--param", "sigma_px=-3"]
        )
        == 2
    )
    assert (
        main(["degrade", str(tmp_path / "missing.png"), str(tmp_path / "o.png"), "--op", "gaussian_blur"])
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown degradation" in err and "not found" in err
