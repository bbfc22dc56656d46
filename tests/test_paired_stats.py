"""Binomial intervals, exact McNemar, paired-difference interval and p-value corrections,
checked against scipy's own implementations and by simulated coverage."""

import numpy as np
import pytest
from scipy import stats

from weakspot.analysis.paired import (
    benjamini_hochberg,
    clopper_pearson_interval,
    compare_paired,
    holm,
    mcnemar_exact,
    paired_difference_ci,
    wilson_interval,
)


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (10, 20), (19, 20), (20, 20), (3, 7), (450, 500)])
def test_binomial_intervals_match_scipy(k, n):
    ref_w = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    ref_e = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ref_w.low, abs=1e-9) and hi == pytest.approx(ref_w.high, abs=1e-9)
    lo, hi = clopper_pearson_interval(k, n)
    assert lo == pytest.approx(ref_e.low, abs=1e-9) and hi == pytest.approx(ref_e.high, abs=1e-9)


def test_no_zero_width_interval_at_the_edges():
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo < 0.9  # 20/20 is not "[1.00, 1.00]"
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi > 0.1


def test_wilson_coverage_small_n():
    rng = np.random.default_rng(0)
    for p in (0.02, 0.1, 0.5, 0.95):
        k = rng.binomial(20, p, size=20000)
        lo, hi = wilson_interval(k, 20)
        cover = np.mean((lo <= p) & (p <= hi))
        assert cover > 0.90, (p, cover)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (3, 9), (10, 10), (25, 4)])
def test_mcnemar_exact_is_a_binomial_test_on_discordant_pairs(b, c):
    ref = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9)


def test_holm_and_bh_against_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm(p)[4])
    # BH: sorted times 4/rank -> 0.02, 0.02, 0.04, 0.04 -> running min from the top
    assert benjamini_hochberg(p)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    ref = stats.false_discovery_control(p[:4], method="bh")
    assert benjamini_hochberg(p[:4]) == pytest.approx(ref)


def test_paired_difference_interval_covers_by_simulation():
    rng = np.random.default_rng(1)
    # joint probabilities of (right under A, right under B): strongly correlated, as degradations are
    for probs in ([0.6, 0.25, 0.05, 0.1], [0.85, 0.1, 0.0, 0.05], [0.3, 0.1, 0.1, 0.5]):
        truth = probs[2] - probs[1]  # p_B - p_A = P(01) - P(10)
        t = rng.multinomial(30, probs, size=20000)
        diff, lo, hi = paired_difference_ci(t[:, 0], t[:, 1], t[:, 2], t[:, 3])
        cover = np.mean((lo <= truth + 1e-12) & (truth - 1e-12 <= hi))
        assert cover > 0.92, (probs, cover)
        assert np.all(lo <= diff + 1e-12) and np.all(diff <= hi + 1e-12)


def test_compare_paired_verdicts():
    a = np.ones(40, bool)
    b = a.copy()
    b[:12] = False
    r = compare_paired(a, b)
    assert r["verdict"] == "worse" and r["diff"] == pytest.approx(-0.3) and r["p"] < 0.01
    assert r["diff_lo"] < -0.3 < r["diff_hi"] < 0
    b2 = a.copy()
    b2[:2] = False
    assert compare_paired(a, b2)["verdict"] == "not significant"
    assert compare_paired(a[:3], b[:3])["verdict"] == "too few images"
    assert compare_paired(b, a)["verdict"] == "better"
