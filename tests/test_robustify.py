"""Robust training: degradation mixes, strategies, resumable training, the grid, on real digits."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import weakspot
from weakspot.errors import ConfigError, InvalidParameterError, UnknownNameError
from weakspot.random import keyed_generator
from weakspot.robustify import (
    LevelRange,
    RandomDegradation,
    SmallCNN,
    TrainConfig,
    count_flops,
    degraded_share,
    evaluate_grid,
    grid_table,
    load_split,
    parse_condition,
    parse_spec,
    predict,
    replace_head,
    train_classifier,
)
from weakspot.robustify.grid import degrade_test_set

TINY = dict(widths=(8, 16), hidden=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def digits():
    """The bundled 5000 real MNIST digits, stratified 4000/1000 split."""
    return load_split("mnist")


@pytest.fixture(scope="session")
def tiny_models(digits):
    """A tiny clean-trained and a tiny blur-trained SmallCNN, same seed, 126 steps each
    (every third training digit: all classes)."""
    x, y = digits.train_images[::3], digits.train_labels[::3]
    out = {}
    for name, mix in [
        ("clean", RandomDegradation([])),
        ("blur", RandomDegradation([LevelRange("gaussian_blur", "sigma_px", 0.5, 2.5)])),
    ]:
        torch.manual_seed(0)
        m = SmallCNN(1, 10, **TINY)
        cfg = TrainConfig(
            strategy="clean" if name == "clean" else "constant", epochs=3, batch_size=32, lr=5e-3
        )
        out[name] = train_classifier(m, x, y, mix, cfg, progress=False).model
    return out


# ---------------------------------------------------------------- text forms and mixes
def test_parse_spec_forms():
    r = parse_spec("gaussian_noise:variance=0.001..0.05")
    assert (r.name, r.param, r.low, r.high) == ("gaussian_noise", "variance", 0.001, 0.05)
    r = parse_spec("gaussian_blur:sigma_px=1.5")
    assert (r.param, r.low, r.high) == ("sigma_px", 1.5, 1.5)
    sev4 = weakspot.get_spec("gaussian_blur").severities[4]["sigma_px"]
    r = parse_spec("gaussian_blur@4")
    assert r.low == r.high == sev4
    assert parse_spec("clean") is None
    assert parse_condition("clean").range is None
    assert parse_condition("gaussian_blur:sigma_px=0.4..1.0").id == "gaussian_blur+sigma_px=0.4-to-1.0"


@pytest.mark.parametrize(
    "text,exc,match",
    [
        ("gaussian_blur:sigma=1..2", UnknownNameError, "did you mean: sigma_px"),
        ("gaussian_blr", UnknownNameError, "gaussian_blur"),
        ("gaussian_blur:sigma_px=-1..2", InvalidParameterError, r"sigma_px.*\[0, 50\] px"),
        ("gaussian_blur:sigma_px=2..1", InvalidParameterError, "low <= high"),
        ("gaussian_noise:variance=a..b", InvalidParameterError, "LOW..HIGH"),
        ("gaussian_blur@9", InvalidParameterError, "severity"),
    ],
)
def test_parse_spec_errors_name_the_argument(text, exc, match):
    with pytest.raises(exc, match=match):
        parse_spec(text)


def test_mix_levels_follow_the_registry(digits):
    """Each image's output equals the registry degradation at its sampled level, called alone
    with the image's own generator (independent reference, no batching)."""
    x = digits.test_images[:24].float() / 255
    mix = RandomDegradation(
        [
            LevelRange("gaussian_noise", "variance", 0.001, 0.05),
            LevelRange("gaussian_blur", "sigma_px", 0.4, 1.0),
        ],
        p_clean=0.25,
    )
    gens = [keyed_generator(7, i) for i in range(24)]
    choice, value = mix.sample(24, [keyed_generator(7, i) for i in range(24)])
    out = mix(x, gens)
    assert set(choice.tolist()) == {-1, 0, 1}
    for i in range(24):
        g = keyed_generator(7, i)
        mix.sample(1, [g])  # consume the same draws as in the batch
        c, v = int(choice[i]), float(value[i])
        if c < 0:
            assert torch.equal(out[i], x[i])
            continue
        r = mix.ranges[c]
        assert r.low <= v <= r.high and torch.isclose(r.grid(16), torch.tensor(v, dtype=torch.float64)).any()
        ref = weakspot.get_degradation(r.name, **{r.param: v})(x[i : i + 1], [g])
        torch.testing.assert_close(out[i : i + 1], ref, rtol=0, atol=1e-6)


def test_mix_is_keyed_per_image_and_reproducible(digits):
    x = digits.test_images[:16].float() / 255
    mix = RandomDegradation([LevelRange("gaussian_noise", "variance", 0.01, 0.05)], p_clean=0.3)
    full = mix(x, [keyed_generator(1, i) for i in range(16)])
    part = mix(x[5:9], [keyed_generator(1, i) for i in range(5, 9)])
    assert torch.equal(full[5:9], part)  # batch composition never changes a sampled value
    assert torch.equal(mix(x, 3), mix(x, 3))
    assert not torch.equal(mix(x, 3), mix(x, 4))
    mask = torch.zeros(16, dtype=torch.bool)
    mask[:4] = True
    masked = mix(x, 3, mask)
    assert torch.equal(masked[4:], x[4:])


def test_pixel_defect_counts_are_drawn_per_image():
    """``dead_pixels:count=1..10``: every integer is on the grid, and each image of a flat grey
    batch has exactly its sampled number of dead (zero) pixels."""
    assert "dead_pixels" in weakspot.list_degradations()
    r = parse_spec("dead_pixels:count=1..10")
    assert r.grid().tolist() == [float(v) for v in range(1, 11)]
    mix = RandomDegradation([r])
    gens = [keyed_generator(2, i) for i in range(12)]
    _, value = mix.sample(12, [keyed_generator(2, i) for i in range(12)])
    out = mix(torch.full((12, 1, 32, 32), 0.5), gens)
    dead = (out == 0).flatten(1).sum(1)
    assert dead.tolist() == [int(v) for v in value.tolist()]
    assert len(set(dead.tolist())) > 3


# ---------------------------------------------------------------- strategies and nets
def test_degraded_share_schedules():
    shares = [degraded_share("incremental", e, 8) for e in range(8)]
    assert shares[0] == pytest.approx(0.05) and shares[-1] == pytest.approx(1.0)
    assert all(b - a == pytest.approx(0.95 / 7) for a, b in itertools.pairwise(shares))
    assert degraded_share("constant", 0, 8) == degraded_share("transfer", 3, 8) == 1.0
    assert degraded_share("clean", 5, 8) == 0.0
    with pytest.raises(InvalidParameterError, match="strategy"):
        degraded_share("sometimes", 0, 8)


def test_replace_head_adds_256_512_and_keeps_features():
    torch.manual_seed(0)
    m = SmallCNN(1, 10)
    before = {k: v.clone() for k, v in m.features.state_dict().items()}
    replace_head(m)
    linears = [mod for mod in m.head if isinstance(mod, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(128, 256), (256, 512), (512, 10)]
    for k, v in m.features.state_dict().items():
        assert torch.equal(v, before[k])
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_small_cnn_flops_match_the_analytic_count():
    m = SmallCNN(1, 10)
    # 2 FLOPs per multiply-add: conv 1→32 at 28², conv 32→64 at 14², fc 3136→128, head 128→10
    expected = 2 * (9 * 1 * 32 * 28 * 28 + 9 * 32 * 64 * 14 * 14 + 64 * 7 * 7 * 128 + 128 * 10)
    assert count_flops(m, torch.rand(1, 1, 28, 28)) == expected


# ---------------------------------------------------------------- training
def _tiny_train(digits, epochs, ckpt, resume=True, stop_after=None, strategy="incremental"):
    torch.manual_seed(123)  # the global seed must NOT matter: init comes from the state we load
    m = SmallCNN(1, 10, **TINY)
    torch.manual_seed(999)
    mix = RandomDegradation([LevelRange("gaussian_noise", "variance", 0.001, 0.05)])
    cfg = TrainConfig(strategy=strategy, epochs=epochs, batch_size=64, seed=5)

    def stop(rec):
        if stop_after is not None and rec["epoch"] == stop_after:
            raise KeyboardInterrupt

    return m, lambda model=m: train_classifier(
        model,
        digits.train_images[::16],
        digits.train_labels[::16],
        mix,
        cfg,
        checkpoint_dir=ckpt,
        resume=resume,
        progress=False,
        on_epoch=stop,
    )


def test_resume_gives_the_same_weights_bit_for_bit(digits, tmp_path):
    torch.manual_seed(0)
    init = SmallCNN(1, 10, **TINY).state_dict()
    m1, run1 = _tiny_train(digits, 3, tmp_path / "a")
    m1.load_state_dict(init)
    full = run1()
    m2, run2 = _tiny_train(digits, 3, tmp_path / "b", stop_after=2)
    m2.load_state_dict(init)
    with pytest.raises(KeyboardInterrupt):
        run2()
    m3, run3 = _tiny_train(digits, 3, tmp_path / "b")
    m3.load_state_dict(init)
    resumed = run3()
    assert resumed.resumed_from_epoch == 2 and len(resumed.history) == 3
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert [h["share"] for h in resumed.history] == pytest.approx([0.05, 0.525, 1.0])
    # a different configuration refuses the old checkpoint with advice
    m4 = SmallCNN(1, 10, **TINY)
    with pytest.raises(ConfigError, match="--no-resume"):
        train_classifier(
            m4,
            digits.train_images[::16],
            digits.train_labels[::16],
            RandomDegradation([]),
            TrainConfig(epochs=3, seed=5, strategy="clean"),
            checkpoint_dir=tmp_path / "b",
            progress=False,
        )


@pytest.mark.slow
def test_robust_training_beats_clean_training_on_blurred_real_digits(digits, tiny_models):
    x, y = digits.test_images[::2], digits.test_labels[::2]
    blurred = degrade_test_set(x, parse_condition("gaussian_blur:sigma_px=2.0"))
    acc = {k: float((predict(m, blurred) == y).float().mean()) for k, m in tiny_models.items()}
    clean_acc = {k: float((predict(m, x) == y).float().mean()) for k, m in tiny_models.items()}
    assert clean_acc["clean"] > 0.8 and clean_acc["blur"] > 0.8, clean_acc  # both learned the digits
    assert acc["clean"] < clean_acc["clean"] - 0.3, acc  # σ = 2 px blur breaks the clean-trained model
    assert acc["blur"] > acc["clean"] + 0.3, acc  # robust training recovers blurred digits


def test_grid_matches_direct_counts(digits, tiny_models):
    x, y = digits.test_images[::4], digits.test_labels[::4]
    conds = [parse_condition("clean"), parse_condition("gaussian_noise:variance=0.02..0.05")]
    df = evaluate_grid(tiny_models, x, y, conds, class_names=digits.class_names, seed=3)
    noisy = degrade_test_set(x, conds[1], seed=3)
    assert torch.equal(noisy, degrade_test_set(x, conds[1], seed=3, batch_size=7))  # keyed per image
    for name, m in tiny_models.items():
        ok = predict(m, noisy) == y
        row = df[(df.model == name) & (df.test == conds[1].spec) & (df.cls == "all")].iloc[0]
        assert row.correct == int(ok.sum()) and row.n == 250
        per = df[(df.model == name) & (df.test == conds[1].spec) & (df.cls != "all")]
        assert per.n.sum() == 250 and per.correct.sum() == row.correct
        assert int(per[per.cls == "3"].correct.iloc[0]) == int(ok[y == 3].sum())
    t = grid_table(df)
    assert list(t.index) == ["clean", "blur"] and list(t.columns) == [c.spec for c in conds]


def test_robustify_job_fine_tunes_a_loaded_model(tmp_path):
    """``pretrained``: the clean row is the loaded model as it is (checked against its own
    ``predict_proba``), and the strategies fine-tune copies of it."""
    from weakspot.models import bundled
    from weakspot.robustify import robustify_job
    from weakspot.robustify.commands import _loaded_module

    split = load_split("mnist", limit=250)
    net = _loaded_module("mnist_cnn", split)
    s = robustify_job(
        split,
        tmp_path,
        strategies=["constant"],
        train_specs=["gaussian_blur:sigma_px=0.4..2.0"],
        test_specs=["clean", "gaussian_blur:sigma_px=2.0"],
        config=TrainConfig(epochs=1),
        pretrained=net,
        progress=False,
        log=lambda *a: None,
    )
    ref = bundled("mnist_cnn")
    direct = ref.predict_proba(split.test_images.float() / 255).argmax(1)
    assert s["table"].loc["clean", "clean"] == pytest.approx(
        100 * float((direct == split.test_labels).float().mean())
    )
    assert list(s["table"].index) == ["clean", "constant-gaussian_blur"]
    assert not (tmp_path / "models" / "clean").exists()  # nothing trained for the clean row


def test_severity_ranges_draw_registry_rows_with_zero_as_clean(digits):
    from weakspot.robustify.mix import SeverityRange, parse_specs

    r = parse_spec("gaussian_blur@0..5")
    assert isinstance(r, SeverityRange) and r.grid().tolist() == [0, 1, 2, 3, 4, 5]
    x = digits.test_images[:30].float() / 255
    mix = RandomDegradation([r])
    _, sev = mix.sample(30, 4)
    out = mix(x, 4)
    for i, s in enumerate(sev.long().tolist()):
        ref = x[i : i + 1] if s == 0 else weakspot.get_degradation("gaussian_blur", severity=s)(x[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], ref, rtol=0, atol=1e-6)
    assert {0, 5} <= set(sev.long().tolist())
    names = [s.name for s in parse_specs("gaussian_*@1..3")]
    assert names == weakspot.list_degradations("gaussian_*")
    with pytest.raises(InvalidParameterError, match=r"0\.\.5"):
        parse_spec("gaussian_blur@0..9")
