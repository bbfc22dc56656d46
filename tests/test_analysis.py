"""Analyses checked against independent computations on the synthetic run's raw probabilities."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from test_analysis_synth import EVIL, make_store

from weakspot import analysis as A
from weakspot.errors import DataError, InvalidParameterError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    store, raw = make_store(tmp_path_factory.mktemp("a") / "run", class_names=["tiger", EVIL, "crab"])
    return A.load_run(store), raw


@pytest.fixture(scope="module")
def analysis(synth):
    return A.analyze(synth[0], n_boot=200)


def test_accuracy_matches_numpy_and_ci_brackets_it(synth, analysis):
    _run, raw = synth
    acc = analysis.accuracy.set_index("condition_id")
    for cid, p in raw["probs"].items():
        top1 = np.argmax(p, 1)
        top5 = np.argsort(-p, 1, kind="stable")[:, :5]
        assert acc.loc[cid, "top1"] == pytest.approx(np.mean(top1 == raw["labels"]))
        assert acc.loc[cid, "top5"] == pytest.approx(np.mean((top5 == raw["labels"][:, None]).any(1)))
        assert acc.loc[cid, "top1_lo"] <= acc.loc[cid, "top1"] <= acc.loc[cid, "top1_hi"]
        assert acc.loc[cid, "n"] == len(raw["labels"])
    assert list(analysis.accuracy.condition_id[:1]) == ["clean"]
    # physical grid ordered by its axis value, severity grid by severity
    blur = analysis.accuracy[analysis.accuracy.degradation == "gaussian_blur"]
    assert list(blur.x) == [0.5, 1.0, 2.0, 3.0] and list(blur.level) == ["0.5 px", "1 px", "2 px", "3 px"]


def test_bootstrap_covers_known_mean_and_agrees_with_scipy():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(300), 40)
    values = (rng.random(len(groups)) < 0.7).astype(float)
    _keys, mean, lo, hi = A.bootstrap_mean_ci(values, groups, n_boot=400, seed=3)
    coverage = np.mean((lo <= 0.7) & (hi >= 0.7))
    assert 0.88 <= coverage <= 0.99, coverage  # nominal 0.95; percentile CIs run a bit short at n=40
    np.testing.assert_allclose(mean, values.reshape(300, 40).mean(1))
    x = rng.normal(2.0, 1.5, 60)
    _, _m, l1, h1 = A.bootstrap_mean_ci(x, n_boot=4000, seed=0)
    ref = scipy.stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=0)
    assert l1[0] == pytest.approx(ref.confidence_interval.low, abs=0.06)
    assert h1[0] == pytest.approx(ref.confidence_interval.high, abs=0.06)
    # same seed -> same interval
    assert (
        A.bootstrap_mean_ci(x, n_boot=500, seed=7)[2][0] == A.bootstrap_mean_ci(x, n_boot=500, seed=7)[2][0]
    )


def test_drops_zscores_and_class_ranks_against_numpy(synth, analysis):
    run, raw = synth
    clean = raw["probs"]["clean"]
    c = np.argmax(clean, 1)
    idx = np.arange(len(c))
    cid = "gaussian_blur.sigma_px=2.0"
    drop = clean[idx, c] - raw["probs"][cid][idx, c]
    z = scipy.stats.zscore(drop)
    im = A.image_damage(run)
    im = im[im.condition_id == cid].sort_values("image_index")
    np.testing.assert_allclose(im["drop"], drop, atol=1e-6)
    np.testing.assert_allclose(im["z"], z, atol=1e-5)
    d = analysis.damage[analysis.damage.condition_id == cid].set_index("class")
    for k in range(6):
        m = raw["labels"] == k
        assert d.loc[k, "mean_drop"] == pytest.approx(drop[m].mean(), abs=1e-6)
        assert d.loc[k, "std_drop"] == pytest.approx(drop[m].std(ddof=1), abs=1e-6)
        assert d.loc[k, "mean_z"] == pytest.approx(z[m].mean(), abs=1e-5)
        assert d.loc[k, "mean_drop_lo"] <= d.loc[k, "mean_drop"] <= d.loc[k, "mean_drop_hi"]
        assert d.loc[k, "mean_z_lo"] <= d.loc[k, "mean_z"] + 1e-9 <= d.loc[k, "mean_z_hi"] + 2e-9
    # sensitivity grows with the class index in the latent model -> rank by z follows it
    order = d.sort_values("rank_z").index.tolist()
    assert order[0] == 5 and order[-1] == 0
    assert d.loc[0, "class_name"] == "tiger" and d.loc[1, "class_name"] == EVIL
    ranks = A.rank_classes(analysis.damage_by_degradation, by="mean_drop", k=2)
    assert ranks["gaussian_blur"]["worst"]["class"].tolist() == [5, 4]
    assert ranks["gaussian_blur"]["best"]["class"].tolist() == [0, 1]
    mat = A.damage_matrix(analysis.damage)
    assert mat.index[0] == "c5" and set(mat.columns) == {"gaussian_blur", "contrast_drop"}


def _mann_whitney_auc(pos, neg):
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_confusion_auc_equals_pairwise_count(synth, analysis):
    _run, raw = synth
    auc = analysis.auc
    assert not auc.empty and set(auc.order) >= {0}
    checked = 0
    for t in auc.itertuples():
        a, b = t.from_class, t.to_class
        s = raw["probs"][t.condition_id][:, b]
        ref = _mann_whitney_auc(s[raw["labels"] == b], s[raw["labels"] == a])
        assert t.auc == pytest.approx(ref, abs=1e-9)
        assert (t.n_pos, t.n_neg) == (10, 10)
        checked += 1
    assert checked == len(auc) >= 10
    # the latent confuser of class k is k+1: every top pair goes k -> k+1
    pairs = analysis.confused_pairs
    assert ((pairs.from_class + 1) % 6 == pairs.to_class).all()
    # a pair's count is per level (its largest), from numpy: never more than the images of the class
    c = np.argmax(raw["probs"]["clean"], 1)
    for t in pairs.itertuples():
        per_level = {
            cid: int(np.sum((c == t.from_class) & (np.argmax(p, 1) == t.to_class)))
            for cid, p in raw["probs"].items()
            if cid.startswith(t.degradation.split("/")[0])
        }
        assert t.count == max(per_level.values()) <= t.n_from == int(np.sum(c == t.from_class))
    # AUC at clean near 1, far lower at the strongest level
    g = auc[(auc.degradation == "gaussian_blur") & (auc.from_class == 5) & (auc.to_class == 0)].sort_values(
        "order"
    )
    assert g.auc.iloc[0] > 0.95 and g.auc.iloc[-1] < 0.2


def test_flips_and_flip_matrix_against_numpy(synth, analysis):
    run, raw = synth
    cid = "contrast_drop.sev=3"
    c = np.argmax(raw["probs"]["clean"], 1)
    t = np.argmax(raw["probs"][cid], 1)
    m = A.flip_matrix(run, cid, names=False)
    ref = pd.crosstab(c, t)
    for a in ref.index:
        for b in ref.columns:
            assert m.loc[a, b] == ref.loc[a, b]
    f = analysis.flips[analysis.flips.condition_id == cid]
    assert f["count"].sum() == int((c != t).sum())
    assert A.flip_matrix(run, cid).index[1] == EVIL
    with pytest.raises(InvalidParameterError, match="condition_id"):
        A.flip_matrix(run, "nope")


def test_breaking_point_interpolation_is_analytic():
    # linear curve v = 1 - x/4 reaches 0.5 exactly at x = 2, between grid points 1 and 3
    x, st = A.breaking_point([1, 3, 5], [0.75, 0.25, 0.0], 1.0, clean_x=0.0)
    assert st == "interpolated" and x == pytest.approx(2.0)
    # exponential decay exp(-x/tau): half at tau ln 2; linear interpolation on a 0.05 grid is close
    tau = 1.7
    xs = np.arange(0.05, 5, 0.05)
    x, st = A.breaking_point(xs, np.exp(-xs / tau), 1.0, clean_x=0.0)
    assert x == pytest.approx(tau * math.log(2), abs=2e-3)
    assert A.breaking_point([1, 2], [0.9, 0.8], 1.0, 0.0) == (
        pytest.approx(math.nan, nan_ok=True),
        "not_reached",
    )
    assert A.breaking_point([5, 8], [0.2, 0.1], 0.9, None) == (5.0, "before_first_level")
    with pytest.raises(InvalidParameterError, match="one value per level"):  # used to zip-truncate silently
        A.breaking_point([1, 2, 3], [0.9, 0.8], 1.0, 0.0)
    assert A.breaking_point([5, 8], [0.2, 0.1], 0.0, 0.0)[1] == "no_clean_signal"


def test_breaking_points_from_store(synth, analysis):
    run, raw = synth
    bp = analysis.breaking.set_index(["degradation", "class"])
    # pooled accuracy curve of the blur, interpolated by hand from clean at 0 px
    xs = [0.0, 0.5, 1.0, 2.0, 3.0]
    accs = [
        np.mean(np.argmax(raw["probs"][cid], 1) == raw["labels"])
        for cid in ["clean"] + [f"gaussian_blur.sigma_px={s}" for s in (0.5, 1.0, 2.0, 3.0)]
    ]
    i = next(i for i, v in enumerate(accs) if v <= accs[0] / 2)
    ref = xs[i - 1] + (accs[0] / 2 - accs[i - 1]) * (xs[i] - xs[i - 1]) / (accs[i] - accs[i - 1])
    assert bp.loc[("gaussian_blur", A.ALL_CLASSES), "breaking_x"] == pytest.approx(ref)
    assert bp.loc[("gaussian_blur", A.ALL_CLASSES), "axis_unit"] == "px"
    assert bp.loc[("gaussian_blur", 0), "status"] == "not_reached"  # least sensitive class holds
    assert bp.loc[("contrast_drop", 5), "label"].startswith("sev")
    # more sensitive classes break earlier
    xs5, xs3 = bp.loc[("gaussian_blur", 5), "breaking_x"], bp.loc[("gaussian_blur", 3), "breaking_x"]
    assert xs5 < xs3
    with pytest.raises(InvalidParameterError, match="metric"):
        A.breaking_points(run, metric="f1")


def test_findings_are_generated_from_the_numbers(analysis):
    f = analysis.findings
    assert set(f.kind) >= {"overview", "collapse", "confusion", "caveat"}
    col = f[(f.kind == "collapse") & (f.degradation == "gaussian_blur")].iloc[0]
    d = analysis.damage
    # the most sensitive latent class (5) loses its accuracy first; the sentence names top-1 accuracy
    row = d[(d.condition_id == col.condition_id) & (d["class"] == 5)].iloc[0]
    assert col.text.startswith("gaussian_blur: c5 collapses ") and col["class"] == 5
    assert f"top-1 accuracy {row.acc_clean:.2f} on clean → {row.acc:.2f} at {row.level} (n = 10)" in col.text
    assert "mostly into tiger" in col.text and "p " not in col.text  # one metric per sentence
    assert "noisy" in f[f.kind == "caveat"].text.iloc[-1]


@pytest.mark.slow
def test_imagenet_mce_uses_alexnet_and_baseline_runs(tmp_path):
    s, raw = make_store(
        tmp_path / "inet", n_classes=1000, per_class=1, store_probs=False, imagenet_c=True, shards=1
    )
    ce = A.corruption_errors(s).set_index("degradation")
    errs = [
        1 - np.mean(np.argmax(raw["probs"][f"imagenet_c.defocus_blur.sev={k}"], 1) == raw["labels"])
        for k in range(1, 6)
    ]
    e_clean = 1 - np.mean(np.argmax(raw["probs"]["clean"], 1) == raw["labels"])
    row = ce.loc["imagenet_c/defocus_blur"]
    assert row.reference == "alexnet"
    assert row.ce == pytest.approx(np.mean(errs) / 0.819880)
    assert row.relative_ce == pytest.approx((np.mean(errs) - e_clean) / (0.819880 - A.ALEXNET_CLEAN_ERR))
    assert math.isnan(ce.loc["gaussian_blur", "ce"])  # not an ImageNet-C corruption: no AlexNet reference
    assert A.mean_corruption_error(A.corruption_errors(s))["mce"] == pytest.approx(row.ce)

    # a baseline run: a more sensitive model; CE = sum of errors / sum of baseline errors
    me, raw_me = make_store(tmp_path / "me", sens=np.full(6, 0.5))
    base, raw_b = make_store(tmp_path / "base", sens=np.full(6, 2.0))
    ce = A.corruption_errors(me, baseline=base).set_index("degradation")

    def err(r, cid):
        return 1 - np.mean(np.argmax(r["probs"][cid], 1) == r["labels"])

    cids = [f"gaussian_blur.sigma_px={s}" for s in (0.5, 1.0, 2.0, 3.0)]
    num = sum(err(raw_me, c) for c in cids)
    den = sum(err(raw_b, c) for c in cids)
    assert ce.loc["gaussian_blur", "ce"] == pytest.approx(num / den)
    rel = sum(err(raw_me, c) - err(raw_me, "clean") for c in cids) / sum(
        err(raw_b, c) - err(raw_b, "clean") for c in cids
    )
    assert ce.loc["gaussian_blur", "relative_ce"] == pytest.approx(rel)
    assert ce.loc["gaussian_blur", "ce"] < 1  # the less sensitive model beats its baseline


def test_unlabelled_uses_clean_prediction_and_missing_probs_degrade_gracefully(tmp_path):
    s, raw = make_store(tmp_path / "u", labelled=False, store_probs=False)
    a = A.analyze(s, n_boot=50)
    acc = a.accuracy.set_index("condition_id")
    assert math.isnan(acc.loc["clean", "top1"]) and acc.loc["clean", "agreement"] == 1.0
    c = np.argmax(raw["probs"]["clean"], 1)
    cid = "gaussian_blur.sigma_px=1.0"
    assert acc.loc[cid, "agreement"] == pytest.approx(np.mean(np.argmax(raw["probs"][cid], 1) == c))
    d = a.damage[a.damage.condition_id == cid]
    assert sorted(d["class"]) == sorted(np.unique(c).tolist())  # classes = clean predictions
    assert d.set_index("class")["n"].to_dict() == pd.Series(c).value_counts().to_dict()
    assert a.auc.empty and "store_probs" in a.auc.attrs["reason"]
    assert any("agreement" in t for t in a.findings.text)


def test_bad_run_dirs_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        A.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="weakspot run"):
        A.load_run(tmp_path / "empty")


def test_exposure_axis_runs_from_long_to_short_and_has_no_neutral_value(tmp_path):
    # exposure: shorter is worse (the registry's severity table says so); listed in scrambled order
    levels = [(0.001, 1.5), (0.005, 0.5), (0.0002, 3.0), (0.0025, 1.0)]
    store, raw = make_store(tmp_path / "exp", physical=("exposure", "camera", "exposure_s", "s", levels))
    run = A.load_run(store)
    d = run.degraded[run.degraded.degradation == "exposure"]
    assert list(d.x) == [0.005, 0.0025, 0.001, 0.0002]  # mild -> severe
    assert list(d.level) == ["0.005 s", "0.0025 s", "0.001 s", "0.0002 s"]
    bp = A.breaking_points(run).set_index(["degradation", "class"])
    row = bp.loc[("exposure", A.ALL_CLASSES)]
    assert row.clean_x is None or math.isnan(row.clean_x)  # no exposure means "clean"
    accs = {cid: np.mean(np.argmax(p, 1) == raw["labels"]) for cid, p in raw["probs"].items()}
    xs = [0.005, 0.0025, 0.001, 0.0002]
    vals = [accs[f"exposure.exposure_s={x:g}"] for x in xs]
    ref = A.breaking_point(xs, vals, accs["clean"], None)
    assert (row.breaking_x, row.status) == (pytest.approx(ref[0]), ref[1])
    assert ref[1] == "interpolated" and 0.0002 < row.breaking_x < 0.005
