"""The statistics every printed number rests on, checked against scipy and textbook definitions on
the synthetic run: Wilson intervals, exact McNemar against clean with Holm, per-class thresholds,
mCE coverage, the camera reference, and findings that agree with the tables number for number."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats
from test_analysis_synth import EVIL, make_store

from weakspot import analysis as A
from weakspot.errors import InvalidParameterError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    store, raw = make_store(tmp_path_factory.mktemp("s") / "run", class_names=["tiger", EVIL, "crab"])
    return A.analyze(store, n_boot=100), raw


def _holm_textbook(p):
    """Holm (1979): sort ascending, p_(i) * (m - i + 1), running max, capped at 1."""
    p = list(p)
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, (m - rank) * p[i])
        adj[i] = min(1.0, run)
    return adj


def test_accuracy_intervals_are_wilson_and_tests_are_exact_mcnemar_with_holm(synth):
    a, raw = synth
    acc = a.accuracy.set_index("condition_id")
    labels = raw["labels"]
    clean_hit = np.argmax(raw["probs"]["clean"], 1) == labels
    ps = {}
    for cid, p in raw["probs"].items():
        hit = np.argmax(p, 1) == labels
        ci = stats.binomtest(int(hit.sum()), len(hit)).proportion_ci(0.95, method="wilson")
        assert acc.loc[cid, "top1_lo"] == pytest.approx(ci.low, abs=1e-9)
        assert acc.loc[cid, "top1_hi"] == pytest.approx(ci.high, abs=1e-9)
        if cid == "clean":
            assert np.isnan(acc.loc[cid, "p_vs_clean"]) and not acc.loc[cid, "significant"]
            continue
        b, c = int(np.sum(clean_hit & ~hit)), int(np.sum(~clean_hit & hit))
        ref = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        assert acc.loc[cid, "p_vs_clean"] == pytest.approx(ref, rel=1e-9)
        assert (acc.loc[cid, "n_lost"], acc.loc[cid, "n_gained"]) == (b, c)
        assert acc.loc[cid, "diff_vs_clean"] == pytest.approx(hit.mean() - clean_hit.mean())
        assert (
            acc.loc[cid, "diff_vs_clean_lo"]
            <= acc.loc[cid, "diff_vs_clean"]
            <= acc.loc[cid, "diff_vs_clean_hi"]
        )
        ps[cid] = ref
    holm = dict(zip(ps, _holm_textbook(ps.values()), strict=True))
    for cid, v in holm.items():
        assert acc.loc[cid, "p_vs_clean_holm"] == pytest.approx(v, rel=1e-9)
        assert bool(acc.loc[cid, "significant"]) == (v < 0.05)
    assert (acc.metric == "top1").all()


def test_what_broke_intervals_are_simultaneous_over_the_run(synth):
    """The headline table's interval has Bonferroni coverage over the run's m degraded conditions,
    so it is at least as wide as the per-condition one and agrees with the Holm verdict's family."""
    from weakspot.analysis.paired import paired_difference_ci

    a, raw = synth
    acc = a.accuracy.set_index("condition_id")
    labels = raw["labels"]
    clean_hit = np.argmax(raw["probs"]["clean"], 1) == labels
    m = len(raw["probs"]) - 1
    for row in a.broke.itertuples():
        hit = np.argmax(raw["probs"][row.condition_id], 1) == labels
        n11, n10 = int(np.sum(clean_hit & hit)), int(np.sum(clean_hit & ~hit))
        n01, n00 = int(np.sum(~clean_hit & hit)), int(np.sum(~clean_hit & ~hit))
        _, lo, hi = paired_difference_ci(n11, n10, n01, n00, ci=1 - 0.05 / m)
        assert (row.effect_lo, row.effect_hi) == (pytest.approx(float(lo)), pytest.approx(float(hi)))
        assert row.effect_lo <= acc.loc[row.condition_id, "diff_vs_clean_lo"] + 1e-12
        assert row.effect_hi >= acc.loc[row.condition_id, "diff_vs_clean_hi"] - 1e-12


def test_summary_json_carries_the_simultaneous_intervals(tmp_path):
    from weakspot.report import write_report

    store, _ = make_store(tmp_path / "run")
    html = write_report(store, n_boot=10)
    conds = json.loads((html.parent / "summary.json").read_text())["sections"]["accuracy"]["conditions"]
    degraded = [c for c in conds if c["condition_id"] != "clean"]
    assert degraded and all(c["diff_vs_clean_adj_lo"] <= c["diff_vs_clean_lo"] for c in degraded)
    assert all(c["diff_vs_clean_adj_hi"] >= c["diff_vs_clean_hi"] for c in degraded)


def test_a_condition_that_changes_nothing_is_not_significant(tmp_path):
    # strength 0 at one level: the same predictions as clean, McNemar p = 1, never "significant"
    levels = [(0.1, 0.0), (1.0, 1.0), (2.0, 2.0)]
    store, _raw = make_store(tmp_path / "r", physical=("gaussian_blur", "blur", "sigma_px", "px", levels))
    acc = A.accuracy_table(store).set_index("condition_id")
    row = acc.loc["gaussian_blur.sigma_px=0.1"]
    assert row.n_lost == row.n_gained == 0 and row.p_vs_clean == 1.0 and not row.significant
    assert row.top1_hi > row.top1 or row.top1 == 1.0  # no zero-width interval
    assert row.top1_lo < row.top1_hi


def test_unlabelled_runs_test_agreement_with_wilson_intervals(tmp_path):
    store, raw = make_store(tmp_path / "u", labelled=False)
    acc = A.accuracy_table(store).set_index("condition_id")
    assert (acc.metric == "agreement").all() and acc.top1.isna().all()
    c = np.argmax(raw["probs"]["clean"], 1)
    for cid, p in raw["probs"].items():
        agree = np.argmax(p, 1) == c
        ci = stats.binomtest(int(agree.sum()), len(agree)).proportion_ci(0.95, method="wilson")
        assert (acc.loc[cid, "agreement_lo"], acc.loc[cid, "agreement_hi"]) == (
            pytest.approx(ci.low, abs=1e-9),
            pytest.approx(ci.high, abs=1e-9),
        )
        if cid != "clean":  # clean agrees with itself: only losses are possible, a sign test
            k = int((~agree).sum())
            assert acc.loc[cid, "p_vs_clean"] == pytest.approx(min(1.0, 2 * 0.5**k) if k else 1.0)


def test_per_class_claims_need_min_per_class_images(tmp_path):
    store, _ = make_store(tmp_path / "small", n_classes=4, per_class=3)
    a = A.analyze(store, n_boot=50)
    assert a.min_per_class == A.MIN_IMAGES_FOR_CLAIM == 5
    d = a.damage
    assert (
        not d.claim.any() and d.rank_z.isna().all() and d.mean_drop_lo.isna().all() and d.acc_lo.isna().all()
    )
    assert d.mean_z.isna().all() and d.mean_drop.notna().all()  # observations stay, claims go
    assert A.rank_classes(a.damage_by_degradation) == {}
    assert (a.findings.kind != "collapse").all()
    assert "cannot support per-class claims" in " ".join(a.findings.text)
    # lowering the threshold makes the claims again
    b = A.analyze(store, n_boot=50, min_per_class=3)
    assert b.damage.claim.all() and b.damage.rank_z.notna().all()
    lo, hi = b.damage.acc_lo.to_numpy(), b.damage.acc_hi.to_numpy()
    assert (hi > lo).all()  # Wilson: never zero width
    with pytest.raises(InvalidParameterError, match="min_per_class"):
        A.analyze(store, min_per_class=0)


def test_mce_states_its_coverage(tmp_path):
    s, _ = make_store(
        tmp_path / "inet", n_classes=1000, per_class=1, store_probs=False, imagenet_c=True, shards=1
    )
    m = A.mean_corruption_error(A.corruption_errors(s))
    assert m["corruptions"] == ["defocus_blur"] and len(m["missing_corruptions"]) == 14
    assert m["severities"] == [1, 2, 3, 4, 5] and m["n_images"] == 1000 and m["comparable"] is False
    # all 15 at all 5 severities: comparable; one severity missing: not
    rows = [
        {
            "degradation": f"imagenet_c/{c}",
            "reference": "alexnet",
            "ce": 1.0,
            "relative_ce": 1.0,
            "severities": [1, 2, 3, 4, 5],
            "n_images": 50,
        }
        for c in A.ALEXNET_ERR
    ]
    import pandas as pd

    assert A.mean_corruption_error(pd.DataFrame(rows))["comparable"] is True
    rows[3]["severities"] = [1, 2, 3, 5]
    m = A.mean_corruption_error(pd.DataFrame(rows))
    assert m["comparable"] is False and m["severities"] == [1, 2, 3, 5]


def test_flips_to_the_label_are_corrections_not_confusions(synth):
    a, raw = synth
    f = a.flips
    labels = raw["labels"]
    c = np.argmax(raw["probs"]["clean"], 1)
    for cid, p in raw["probs"].items():
        if cid == "clean":
            continue
        t = np.argmax(p, 1)
        corr = int(np.sum((t != c) & (t == labels)))
        assert f[(f.condition_id == cid) & (f.kind == "correction")]["count"].sum() == corr
    assert (f["count"] <= f["n_from"]).all()
    pairs = a.confused_pairs
    assert (pairs["count"] <= pairs["n_from"]).all()
    # no listed confusion is a flip to the label of all its images
    for t in pairs.itertuples():
        assert not (labels[c == t.from_class] == t.to_class).all()


def _strip_known(text: str, known: list[str]) -> str:
    for k in sorted(set(known), key=len, reverse=True):
        if k:
            text = text.replace(k, " ")
    return text


def test_every_number_in_every_finding_is_in_the_tables(synth):
    a, _ = synth
    acc = a.accuracy.set_index("condition_id")
    dmg, bp, auc = a.damage, a.breaking, a.auc
    known = list(a.run.conditions.level) + list(bp.label) + list(a.run.degradations) + list(a.run.classes)
    known += [f"p({n})" for n in a.run.classes] + ["top-1"]
    checked = 0
    for f in a.findings.itertuples():
        text = _strip_known(f.text, known)
        numbers = re.findall(r"\d+(?:\.\d+)?", text)
        allowed = set()
        if f.kind == "overview":
            metric = f.metric
            allowed |= {f"{acc.loc['clean', metric]:.2f}"}
            if f.condition_id:
                r = acc.loc[f.condition_id]
                allowed |= {
                    f"{r[metric]:.2f}",
                    str(int(r.n_tested)),
                    f"{r.p_vs_clean_holm:.2g}",
                    "0.001",
                    "1",
                }
            else:  # most/least damaging: means over levels of the same metric
                g = acc[acc.index.isin(set(a.run.degraded.condition_id))]
                allowed |= {f"{v:.2f}" for v in g.groupby("degradation")[metric].mean()}
        elif f.kind == "collapse":
            r = dmg[(dmg.condition_id == f.condition_id) & (dmg["class"] == f[4])].iloc[0]
            allowed |= {f"{r.acc_clean:.2f}", f"{r.acc:.2f}", str(int(r.n))}
            # the metric of the breaking point quoted is the same accuracy
            b = bp[(bp.degradation == f.degradation) & (bp["class"] == f[4])].iloc[0]
            assert b.metric == "accuracy" and (b.label in f.text or b.status != "interpolated")
        elif f.kind == "confusion":
            g = auc[(auc.degradation == f.degradation) & (auc.from_class == f[4])]
            allowed |= {f"{v:.2f}" for v in g.auc.dropna()}
        else:
            allowed |= {"5", "10", "30"} | {str(n) for n in range(0, 100)}
        for n in numbers:
            assert n in allowed, (f.text, n, allowed)
            checked += 1
    assert checked >= 15


def test_camera_reference_is_a_reference_not_a_level(tmp_path):
    # a camera run: the camera engineer's 'camera_reference' condition (the pipeline at its neutral
    # setting) is written as one more condition of family 'camera'
    levels = [(0.005, 0.5), (0.001, 1.5), (0.0002, 3.0)]
    store, raw = make_store(tmp_path / "cam", physical=("exposure", "camera", "exposure_s", "s", levels))
    _add_reference(store, raw, strength=0.3)
    a = A.analyze(store, n_boot=50)
    assert "camera_reference" not in set(a.run.degraded.condition_id) and a.run.has_camera_reference
    acc = a.accuracy.set_index("condition_id")
    assert "camera_reference" in acc.index and acc.index[1] == "camera_reference"
    labels = raw["labels"]
    ref_hit = np.argmax(raw["probs"]["camera_reference"], 1) == labels
    for x in (0.005, 0.001, 0.0002):
        cid = f"exposure.exposure_s={x:g}"
        hit = np.argmax(raw["probs"][cid], 1) == labels
        assert acc.loc[cid, "diff_vs_reference"] == pytest.approx(hit.mean() - ref_hit.mean())
        b, c = int(np.sum(ref_hit & ~hit)), int(np.sum(~ref_hit & hit))
        assert acc.loc[cid, "p_vs_reference"] == pytest.approx(
            stats.binomtest(b, b + c).pvalue if b + c else 1.0
        )
    assert acc.loc[acc.family != "camera", "diff_vs_reference"].isna().all()
    assert (a.damage.condition_id != "camera_reference").all()
    assert (a.flips.condition_id != "camera_reference").all()


def _add_reference(store, raw, strength):
    """Append a 'camera_reference' condition to a synthetic store (same latent model)."""
    from test_analysis_synth import _rows, _softmax

    conds = store.conditions()
    new = {
        c: [None if v is None or v != v else v for v in conds[c]]
        for c in (
            "condition_id",
            "degradation",
            "family",
            "params_json",
            "severity",
            "axis",
            "axis_value",
            "axis_unit",
        )
    }
    for c, v in (
        ("condition_id", "camera_reference"),
        ("degradation", "camera_reference"),
        ("family", "camera"),
        ("params_json", json.dumps({})),
        ("severity", None),
        ("axis", None),
        ("axis_value", None),
        ("axis_unit", None),
    ):
        new[c].append(v)
    store.write_conditions(new)
    p = raw["probs"]["clean"].astype(np.float64)
    labels = raw["labels"]
    n, _k = p.shape
    logits = np.log(np.maximum(p, 1e-12))
    logits[np.arange(n), labels] -= strength * raw["sens"][labels]
    probs = _softmax(logits).astype(np.float16).astype(np.float32)
    raw["probs"]["camera_reference"] = probs
    store.write_unit(
        "camera_reference", 0, _rows(probs, raw["img_labels"], raw["probs"]["clean"]), probs=probs
    )
