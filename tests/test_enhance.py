"""The enhancement front-end: the warp against a per-image reference, identity start,
noise estimate against its law, FLOPs against the analytic count, training effect on real
digits, and the CLI commands."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from weakspot.cli import main
from weakspot.robustify import (
    EnhanceConfig,
    EnhancedClassifier,
    EnhanceNet,
    LevelRange,
    RandomDegradation,
    SmallCNN,
    TrainConfig,
    apply_enhancement,
    count_flops,
    estimate_noise_sigma,
    load_split,
    parse_condition,
    predict,
    train_classifier,
    train_enhancer,
)
from weakspot.robustify.enhance import apply_enhancement_reference
from weakspot.robustify.grid import degrade_test_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_photos(photos):
    return F.interpolate(photos, size=(40, 40), mode="bilinear", antialias=True, align_corners=False).clamp(
        0, 1
    )


def _random_params(b, c, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.eye(c) + 0.2 * torch.randn(b, c, c, generator=g)
    t = 0.05 * torch.randn(b, c, generator=g)
    r = 0.1 * torch.randn(b, k, k, generator=g)
    kern = r - r.mean(dim=(1, 2), keepdim=True)
    kern[:, k // 2, k // 2] += 1
    return m, t, kern


def test_warp_matches_the_per_image_reference(small_photos):
    m, t, k = _random_params(4, 3, 5)
    out = apply_enhancement(small_photos, m, t, k)
    ref = apply_enhancement_reference(small_photos, m, t, k)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    from weakspot.robustify.enhance import _filter_unfold  # the path used when exporting (tracing)

    y = torch.einsum("bij,bjhw->bihw", m, small_photos) + t[:, :, None, None]
    torch.testing.assert_close(_filter_unfold(y, k).clamp(0, 1), ref, rtol=1e-5, atol=1e-6)
    # a single-image call gives the same as inside the batch (no cross-talk between samples)
    torch.testing.assert_close(apply_enhancement(small_photos[2:3], m[2:3], t[2:3], k[2:3]), out[2:3])


def test_warp_is_differentiable_in_every_argument():
    g = torch.Generator().manual_seed(1)
    x = (0.3 + 0.4 * torch.rand(2, 3, 6, 6, generator=g)).double().requires_grad_()
    m, t, k = (p.double().requires_grad_() for p in _random_params(2, 3, 3, seed=2))
    m.data = torch.eye(3, dtype=torch.double) + 0.05 * (m.data - torch.eye(3, dtype=torch.double))
    t.data *= 0.1  # keep the output inside (0, 1) so the clamp is smooth here
    assert torch.autograd.gradcheck(apply_enhancement, (x, m, t, k), eps=1e-6, atol=1e-5)


def test_untrained_front_end_is_the_identity(small_photos, photos):
    net = EnhanceNet(channels=3, kernel_size=5)
    assert torch.equal(net.enhance(small_photos), small_photos)
    assert torch.equal(net.enhance(photos[:1]), photos[:1])  # 224² goes through the 64² analysis path
    _m, _t, k = net(small_photos)
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(4))


def test_noise_estimate_follows_immerkaer_law(photos):
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 1, 128, 128), 0.5)
    for sigma in (0.01, 0.05, 0.1):
        noisy = flat + sigma * torch.randn(flat.shape, generator=g)
        est = float(estimate_noise_sigma(noisy))
        assert est == pytest.approx(sigma, rel=0.05)
    # on a real photo the estimate grows with the added noise
    gray = photos[:1].mean(1, keepdim=True)
    ests = [
        float(estimate_noise_sigma(gray + s * torch.randn(gray.shape, generator=g))) for s in (0.0, 0.03, 0.1)
    ]
    assert ests[0] < ests[1] < ests[2]
    assert ests[2] == pytest.approx(0.1, rel=0.15)


def test_flops_count_matches_the_analytic_formula_and_front_end_is_small():
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    assert count_flops(conv, torch.rand(1, 3, 32, 32)) == 2 * 3 * 8 * 9 * 16 * 16
    x = torch.rand(1, 1, 28, 28)
    fe = count_flops(EnhanceNet(channels=1, kernel_size=5).enhance, x)
    cls = count_flops(SmallCNN(1, 10), x)
    # the front-end's 5×5 filtering alone: 2·25 FLOPs per pixel
    assert fe > 2 * 25 * 28 * 28
    assert fe < 0.15 * cls


@pytest.fixture(scope="module")
def digits():
    return load_split("mnist")


@pytest.mark.slow
def test_front_end_recovers_noisy_digits_and_keeps_the_classifier_frozen(digits):
    x, y = digits.train_images[::3], digits.train_labels[::3]
    torch.manual_seed(0)
    clf = SmallCNN(1, 10, widths=(8, 16), hidden=32)
    train_classifier(
        clf,
        x,
        y,
        RandomDegradation([]),
        TrainConfig(strategy="clean", epochs=3, batch_size=32, lr=5e-3),
        progress=False,
    )
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    mix = RandomDegradation([LevelRange("gaussian_noise", "variance", 0.02, 0.15)])
    res = train_enhancer(
        clf, x, y, mix, EnhanceConfig(epochs=2, batch_size=32, lr=5e-3, p_clean=0.25), progress=False
    )
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k]), f"classifier changed: {k}"
    assert all(p.requires_grad for p in clf.parameters())  # restored afterwards
    assert len(res.history) == 2 and res.history[-1]["consistency"] >= 0
    xt, yt = digits.test_images[::2], digits.test_labels[::2]
    noisy = degrade_test_set(xt, parse_condition("gaussian_noise:variance=0.1"))
    with_fe = EnhancedClassifier(res.front_end, clf)
    acc = lambda m, im: float((predict(m, im) == yt).float().mean())  # noqa: E731
    assert acc(with_fe, noisy) > acc(clf, noisy) + 0.1, (acc(with_fe, noisy), acc(clf, noisy))
    assert acc(with_fe, xt) > acc(clf, xt) - 0.03


def test_cli_robustify_and_enhance_end_to_end(tmp_path, capsys):
    out = tmp_path / "rb"
    args = [
        "robustify",
        "--out",
        str(out),
        "--limit",
        "200",
        "--epochs",
        "1",
        "--strategy",
        "constant",
        "--strategy",
        "transfer",
        "--mix-only",
        "--no-progress",
        "--test",
        "clean",
        "--test",
        "gaussian_blur@4",
    ]
    assert main(args) == 0
    grid = (out / "grid.md").read_text()
    for row in ("| clean |", "| constant-mix |", "| transfer-mix |"):
        assert row in grid
    assert main(args) == 0  # resumes: nothing to retrain, same table
    assert "resumed from 1" in capsys.readouterr().out
    assert (out / "grid.md").read_text() == grid
    assert (
        main(
            [
                "enhance",
                "--out",
                str(out),
                "--limit",
                "200",
                "--epochs",
                "1",
                "--classifier-epochs",
                "1",
                "--no-progress",
                "--test",
                "clean",
                "--test",
                "gaussian_noise:variance=0.1",
            ]
        )
        == 0
    )
    text = (out / "enhance.md").read_text()
    assert "with front-end" in text and "FLOPs per image" in text
    assert (out / "front_end.pt").is_file()


@pytest.mark.parametrize(
    "args,match",
    [
        (["robustify", "--strategy", "sometimes"], "strategy"),
        (["robustify", "--degrade", "gaussian_blur:sigma=1..2"], "sigma_px"),
        (["enhance", "--kernel-size", "4"], "kernel_size"),
        (["enhance", "--classifier", "no_such_model"], "no_such_model"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys, args, match):
    rc = main(
        [
            *args[:1],
            "--out",
            str(tmp_path / "x"),
            "--limit",
            "50",
            "--epochs",
            "1",
            "--no-progress",
            *args[1:],
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err
