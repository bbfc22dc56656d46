"""Robust-training study: thread-independent training, strategies that must actually learn,
level kinds, paired verdicts (Newcombe, McNemar, Holm) and label-free targets."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats

from weakspot.errors import ConfigError, InvalidParameterError
from weakspot.robustify import (
    EnhanceConfig,
    EnhancedClassifier,
    LevelRange,
    RandomDegradation,
    SmallCNN,
    TrainConfig,
    load_split,
    parse_condition,
    predict,
    train_classifier,
    train_enhancer,
)
from weakspot.robustify.enhance import clean_soft_targets, distillation_loss
from weakspot.robustify.grid import degrade_test_set
from weakspot.robustify.mix import parse_specs
from weakspot.robustify.study import STUDY_TESTS, STUDY_TRAIN, level_kind, pairwise_table, verdict_table

TINY = {"widths": (8, 16), "hidden": 32}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_split("mnist")


def _tiny(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(1, 10, **TINY)


@pytest.fixture(scope="module")
def clean_tiny(digits):
    """A tiny SmallCNN trained on clean digits (every third training digit, 2 epochs)."""
    m = _tiny()
    train_classifier(
        m,
        digits.train_images[::3],
        digits.train_labels[::3],
        RandomDegradation([]),
        TrainConfig(strategy="clean", epochs=2, batch_size=32, lr=5e-3),
        progress=False,
    )
    return m


# ------------------------------------------------------------------ determinism
def test_weights_do_not_depend_on_the_callers_thread_count(digits, tmp_path):
    x, y = digits.train_images[::20], digits.train_labels[::20]
    mix = RandomDegradation([LevelRange("gaussian_blur", "sigma_px", 0.4, 1.0)])
    cfg = TrainConfig(strategy="constant", epochs=1, batch_size=32, seed=3)
    out = []
    for n in (1, 3):
        torch.set_num_threads(n)
        m = _tiny()
        train_classifier(m, x, y, mix, cfg, progress=False)
        assert torch.get_num_threads() == n  # the caller's setting is restored
        out.append(m.state_dict())
    for k in out[0]:
        assert torch.equal(out[0][k], out[1][k]), k
    # the training thread count is part of the fingerprint: a 2-thread checkpoint is not resumed as 1-thread
    train_classifier(
        _tiny(), x, y, mix, cfg.model_copy(update={"threads": 2}), checkpoint_dir=tmp_path, progress=False
    )
    with pytest.raises(ConfigError, match="different configuration"):
        train_classifier(_tiny(), x, y, mix, cfg, checkpoint_dir=tmp_path, progress=False)


# ------------------------------------------------------------------ strategies that must learn
class _Recorder(torch.nn.Module):
    """Wraps a model and records, per forward call, the share of images that are not clean
    8-bit digits (a clean digit is k/255 in every pixel; Gaussian noise never is)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.shares = inner, []

    def forward(self, x):
        if self.training:
            off = ((x * 255 - (x * 255).round()).abs() > 1e-3).flatten(1).any(1)
            self.shares.append(float(off.float().mean()))
        return self.inner(x)


def test_incremental_training_images_are_degraded_more_at_later_epochs(digits):
    x, y = digits.train_images[::8], digits.train_labels[::8]  # 500 digits, 16 batches of 32
    mix = RandomDegradation([LevelRange("gaussian_noise", "variance", 0.001, 0.05)])
    rec = _Recorder(_tiny())
    res = train_classifier(
        rec, x, y, mix, TrainConfig(strategy="incremental", epochs=3, batch_size=32), progress=False
    )
    steps = math.ceil(len(y) / 32)
    per_epoch = [float(np.mean(rec.shares[e * steps : (e + 1) * steps])) for e in range(3)]
    # the measured degraded share follows the schedule 5 % → 52.5 % → 100 % (rounding per batch)
    assert per_epoch == pytest.approx([0.05, 0.525, 1.0], abs=0.04), per_epoch
    assert [h["share"] for h in res.history] == pytest.approx([0.05, 0.525, 1.0])


def test_transfer_changes_the_weights_and_recovers_blurred_digits(digits, clean_tiny):
    x, y = digits.train_images[::3], digits.train_labels[::3]
    clean = clean_tiny
    model = copy.deepcopy(clean)
    mix = RandomDegradation([LevelRange("gaussian_blur", "sigma_px", 1.0, 2.5)])
    train_classifier(
        model, x, y, mix, TrainConfig(strategy="transfer", epochs=2, batch_size=32, lr=5e-3), progress=False
    )
    # the feature extractor was fine-tuned, not only a new head bolted on
    moved = [
        k
        for k, v in clean.state_dict().items()
        if "features" in k and v.is_floating_point() and not torch.equal(v, model.state_dict()[k])
    ]
    assert moved
    xt, yt = digits.test_images[::2], digits.test_labels[::2]
    blurred = degrade_test_set(xt, parse_condition("gaussian_blur:sigma_px=2.0"))
    acc = {
        k: float((predict(m, blurred) == yt).float().mean())
        for k, m in (("clean", clean), ("transfer", model))
    }
    assert acc["transfer"] > acc["clean"] + 0.2, acc


# ------------------------------------------------------------------ where a test level sits
def test_level_kinds_against_the_training_grid():
    ranges = [r for s in STUDY_TRAIN for r in parse_specs(s)]

    def kind(s):
        return level_kind(parse_condition(s), ranges)

    step = (0.05 - 0.001) / 15  # 16 evenly spaced noise levels
    assert kind("clean") == "clean"
    assert kind("gaussian_noise:variance=0.05") == "within range"
    assert kind(f"gaussian_noise:variance={0.001 + 4 * step!r}") == "within range"
    assert kind(f"gaussian_noise:variance={0.001 + 4.5 * step!r}") == "between levels"
    assert kind("gaussian_blur:sigma_px=0.7") == "between levels"  # grid 0.4, 0.44, …, 0.68, 0.72, …
    assert kind("gaussian_blur:sigma_px=0.72") == "within range"
    assert kind("gaussian_blur:sigma_px=3.0") == "beyond range"
    assert kind("hot_pixels:density=0.1") == "beyond range"
    assert kind("hot_pixels:density=0.05,map_seed=9") == "within range, other map_seed"
    assert kind("exposure@3") == "not trained"
    sev = [r for s in ("imagenet_c/fog@1..3", "defocus@2..5") for r in parse_specs(s)]
    assert level_kind(parse_condition("imagenet_c/fog@3"), sev) == "within range"
    assert level_kind(parse_condition("imagenet_c/fog@5"), sev) == "beyond range"
    assert level_kind(parse_condition("defocus@1"), sev) == "beyond range"
    assert level_kind(parse_condition("imagenet_c/snow@3"), sev) == "not trained"
    # a test *range* of severities: inside the trained severities or not (was "not trained"), and
    # against a trained parameter range it is not trained (used to raise AttributeError on .param)
    assert level_kind(parse_condition("imagenet_c/fog@1..2"), sev) == "within range"
    assert level_kind(parse_condition("imagenet_c/fog@0..5"), sev) == "beyond range"
    assert level_kind(parse_condition("gaussian_blur@0..3"), ranges) == "not trained"
    kinds = {s: kind(s) for s in STUDY_TESTS}
    assert {"within range", "between levels", "beyond range"} <= set(kinds.values())


# ------------------------------------------------------------------ paired verdicts
def _newcombe_reference(n11, n10, n01, n00, z=1.959963984540054):
    """Newcombe (1998) method 10, written out from the paper."""
    n = n11 + n10 + n01 + n00

    def wilson(k):
        p = k / n
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return c - h, c + h

    pa, pb = (n11 + n10) / n, (n11 + n01) / n
    la, ua = wilson(n11 + n10)
    lb, ub = wilson(n11 + n01)
    den = math.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    phi = (n11 * n00 - n10 * n01) / den if den else 0.0
    d = pb - pa
    lo = d - math.sqrt((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2)
    hi = d + math.sqrt((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2)
    return d, lo, hi


def _pair(n11, n10, n01, n00):
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return a, b


@pytest.mark.parametrize(
    "table, verdict",
    [
        ((950, 20, 10, 20), "within 3 points"),  # −1 point, tight interval on 1000 images
        ((90, 4, 3, 3), "not shown"),  # −1 point, but only 100 images: the interval reaches past −3
        ((900, 60, 10, 30), "not shown"),  # −5 points
    ],
)
def test_within_three_points_needs_the_whole_newcombe_interval(table, verdict):
    clean, degraded = _pair(*table)
    v = verdict_table({"clean": {"m": clean}, "blur": {"m": degraded}}, {"blur": "within range"})
    d, lo, hi = _newcombe_reference(*table)
    row = v.iloc[0]
    assert row["change"] == pytest.approx(100 * d) and row["change_lo"] == pytest.approx(100 * lo)
    assert row["change_hi"] == pytest.approx(100 * hi)
    assert row["verdict"] == verdict == ("within 3 points" if 100 * lo > -3 else "not shown")


def test_strategy_pairs_use_exact_mcnemar_and_holm():
    rng = np.random.default_rng(0)
    correct = {}
    for t, shift in (("clean", 0.0), ("noise", 0.1), ("blur", 0.3)):
        base = rng.random(400)
        correct[t] = {"a": base < 0.9, "b": base < 0.9 - shift, "c": rng.random(400) < 0.9 - shift / 2}
    df = pairwise_table(correct, {"clean": "clean", "noise": "within range", "blur": "beyond range"})
    assert len(df) == 9
    ps = []
    for r in df.itertuples():
        a, b = correct[r.test][r.A], correct[r.test][r.B]
        n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
        ref = stats.binomtest(n10, n10 + n01, 0.5).pvalue if n10 + n01 else 1.0
        assert r.p == pytest.approx(ref, rel=1e-9)
        ps.append(ref)
    order = np.argsort(ps)
    run = 0.0
    for k, i in enumerate(order):
        run = max(run, min(1.0, (len(ps) - k) * ps[i]))
        assert df["p_holm"].iloc[i] == pytest.approx(run)
    blur_ab = df[(df.test == "blur") & (df.A == "a") & (df.B == "b")].iloc[0]
    assert blur_ab["verdict"] == "A better" and blur_ab["p_holm"] < 1e-10
    clean_ab = df[(df.test == "clean") & (df.A == "a") & (df.B == "b")].iloc[0]
    assert (
        clean_ab["verdict"] == "no significant difference" and clean_ab["only_A"] == clean_ab["only_B"] == 0
    )


# ------------------------------------------------------------------ label-free targets
def test_distillation_loss_is_t_squared_kl():
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(5, 7, generator=g), 2.5
    p = torch.softmax(torch.randn(5, 7, generator=g), 1)
    q = torch.softmax(z / t, 1)
    ref = t * t * float((p * (p.log() - q.log())).sum(1).mean())
    assert float(distillation_loss(z, p, t)) == pytest.approx(ref, rel=1e-5)
    assert float(distillation_loss(z, q, t)) == pytest.approx(0.0, abs=1e-6)


def test_label_free_front_end_learns_from_clean_predictions_alone(digits, clean_tiny):
    x = digits.train_images[::3]
    clf = clean_tiny
    soft = clean_soft_targets(clf, x[:64], 2.0)
    torch.testing.assert_close(soft.sum(1), torch.ones(64))
    mix = RandomDegradation([LevelRange("gaussian_noise", "variance", 0.02, 0.15)])
    with pytest.raises(InvalidParameterError, match="clean-predictions"):
        train_enhancer(clf, x, None, mix, EnhanceConfig(epochs=1), progress=False)
    cfg = EnhanceConfig(epochs=2, batch_size=32, lr=5e-3, labels="clean-predictions", temperature=2.0)
    res = train_enhancer(clf, x, None, mix, cfg, progress=False)  # no labels at all
    xt = digits.test_images[::2]
    ref = predict(clf, xt)
    noisy = degrade_test_set(xt, parse_condition("gaussian_noise:variance=0.1"))

    def agree(m):
        return float((predict(m, noisy) == ref).float().mean())

    assert agree(EnhancedClassifier(res.front_end, clf)) > agree(clf) + 0.1


def test_label_free_robust_training_learns_from_clean_predictions_alone(digits, clean_tiny):
    x = digits.train_images[::3]
    soft = clean_soft_targets(clean_tiny, x, 2.0)
    student = copy.deepcopy(clean_tiny)
    mix = RandomDegradation([LevelRange("gaussian_blur", "sigma_px", 1.0, 2.5)])
    cfg = TrainConfig(strategy="constant", epochs=2, batch_size=32, lr=5e-3, labels="clean-predictions")
    with pytest.raises(InvalidParameterError, match="soft"):
        train_classifier(student, x, None, mix, cfg, progress=False)
    res = train_classifier(student, x, None, mix, cfg, progress=False, soft_targets=soft)  # no labels
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    xt, yt = digits.test_images[::2], digits.test_labels[::2]
    ref = predict(clean_tiny, xt)
    blurred = degrade_test_set(xt, parse_condition("gaussian_blur:sigma_px=2.0"))
    agree = {
        k: float((predict(m, blurred) == ref).float().mean())
        for k, m in (("frozen", clean_tiny), ("student", student))
    }
    top1 = {
        k: float((predict(m, blurred) == yt).float().mean())
        for k, m in (("frozen", clean_tiny), ("student", student))
    }
    assert agree["student"] > agree["frozen"] + 0.2, agree
    assert top1["student"] > top1["frozen"] + 0.2, top1  # and so it gets the real labels right too


def test_cli_label_free_robustify_writes_paired_verdicts(tmp_path, capsys):
    from weakspot.cli import main

    out = tmp_path / "lf"
    args = [
        "robustify",
        "--out",
        str(out),
        "--limit",
        "300",
        "--epochs",
        "1",
        "--strategy",
        "constant",
        "--mix-only",
        "--no-progress",
        "--labels",
        "clean-predictions",
        "--temperature",
        "3",
        "--degrade",
        "gaussian_blur:sigma_px=0.4..1.0",
        "--test",
        "clean",
        "--test",
        "gaussian_blur:sigma_px=0.7",
        "--test",
        "gaussian_blur:sigma_px=3",
    ]
    assert main(args) == 0
    study = (out / "study.md").read_text()
    assert "between levels" in study and "beyond range" in study and "Holm" in study
    grid = (out / "grid.md").read_text()
    assert "*between levels*" in grid and "*beyond range*" in grid
    assert main([*args, "--temperature", "0"]) == 2  # a user mistake: one line, exit 2
    assert "Traceback" not in capsys.readouterr().err


def test_grid_counted_from_correctness_equals_evaluate_grid(digits, clean_tiny):
    from weakspot.robustify import evaluate_grid
    from weakspot.robustify.study import correctness, grid_from_correctness

    x, y = digits.test_images[::5], digits.test_labels[::5]
    models = {"clean": clean_tiny, "other": _tiny(1)}
    conds = [parse_condition("clean"), parse_condition("hot_pixels:density=0.05")]
    ref = evaluate_grid(models, x, y, conds, class_names=digits.class_names, seed=2)
    got = grid_from_correctness(correctness(models, x, y, conds, seed=2), y, digits.class_names)
    import pandas as pd

    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True))


# ------------------------------------------------------------------ offline photos for label-free ImageNet fixes
def test_photo_groups_keep_pairs_and_sequences_together():
    from weakspot.robustify.photos import photo_group

    assert photo_group("left01") == photo_group("left14") == "left"
    assert photo_group("aloeL") == photo_group("aloeR") == "aloe"
    assert photo_group("rubberwhale1") == photo_group("rubberwhale2")
    assert photo_group("ela_original") == photo_group("ela_modified") == "ela"
    assert photo_group("graf1") == photo_group("graf3") != photo_group("baboon")


@pytest.mark.slow
def test_offline_photo_split_is_held_out_by_content():
    from weakspot.robustify.data import content_hash
    from weakspot.robustify.photos import OPENCV_DATA, load_photo_split, photo_group

    pytest.importorskip("foolbox")
    if not OPENCV_DATA.is_dir():
        pytest.skip("Debian opencv-doc is not installed (apt-get install -y opencv-doc)")
    s = load_photo_split(size_px=64, crops_per_photo=3)
    assert s.train_images.shape[1:] == s.test_images.shape[1:] == (3, 64, 64)
    assert len(s.train_images) == 3 * len(s.train_ids)
    assert (s.test_labels[:20] >= 0).all() and (s.train_labels == -1).all()  # foolbox labels; no train labels
    train_groups = {
        photo_group(n.split("/")[-1].split(".")[0]) for n in s.train_ids if n.startswith("opencv/")
    }
    test_groups = {photo_group(n.split("/")[-1].split(".")[0]) for n in s.test_ids if n.startswith("opencv/")}
    assert train_groups and test_groups and not train_groups & test_groups
    assert not {content_hash(x) for x in s.train_images} & {content_hash(x) for x in s.test_images}


def test_a_refused_front_end_training_leaves_the_classifier_trainable(clean_tiny, digits):
    with pytest.raises(InvalidParameterError):
        train_enhancer(
            clean_tiny,
            digits.train_images[:8],
            None,
            RandomDegradation([]),
            EnhanceConfig(epochs=1),
            progress=False,
        )
    assert all(p.requires_grad for p in clean_tiny.parameters())


def test_enhance_before_after_pairs_agreement_and_top1(digits, clean_tiny):
    """The label-free before/after table: agreement with the clean prediction on every image,
    top-1 on the labelled ones only, exact McNemar (scipy) and Holm per metric."""
    from weakspot.robustify.run import before_after

    x, y = digits.test_images[:60], digits.test_labels[:60].clone()
    y[::3] = -1  # a third unlabelled
    other = _tiny(1)
    conds = [parse_condition("clean"), parse_condition("gaussian_blur:sigma_px=2.0")]
    df = before_after(clean_tiny, other, x, y, conds, seed=4)
    ref = predict(clean_tiny, x)
    for cond in conds:
        xd = degrade_test_set(x, cond, 4)
        pb, pa = predict(clean_tiny, xd), predict(other, xd)
        for metric, target, sel in (
            ("agreement", ref, torch.ones(60, dtype=torch.bool)),
            ("top-1", y, y >= 0),
        ):
            row = df[(df.test == cond.spec) & (df.metric == metric)].iloc[0]
            a, b = (pb == target)[sel].numpy(), (pa == target)[sel].numpy()
            assert row["n"] == int(sel.sum()) and row["before"] == pytest.approx(100 * a.mean())
            assert row["after"] == pytest.approx(100 * b.mean())
            n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
            assert row["p"] == pytest.approx(
                stats.binomtest(n10, n10 + n01, 0.5).pvalue if n10 + n01 else 1.0
            )
    for m in ("agreement", "top-1"):
        d = df[df.metric == m]
        assert list(d["p_holm"]) == pytest.approx(
            [
                min(1.0, v)
                for v in np.maximum.accumulate((len(d) - np.arange(len(d))) * np.sort(d["p"].to_numpy()))[
                    np.argsort(np.argsort(d["p"].to_numpy()))
                ]
            ]
        )
    assert df[(df.test == "clean") & (df.metric == "agreement")].iloc[0]["before"] == 100.0
