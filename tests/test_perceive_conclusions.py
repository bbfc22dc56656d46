"""Plain conclusions and the quality-order flags of the perception section, on synthetic tables
whose answer is known by construction (no model, no images)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from weakspot.quality.relations import plain_conclusions, quality_order_flags, quality_relations


def _ctab():
    """clean + exposure (smaller exposure_s is worse: direction −1, no severities) + a blur with
    severities. BRISQUE is built to rate the darkest exposure BETTER than clean (the measured
    failure), NIQE to grow with damage everywhere; PSNR falls with damage (higher = better)."""
    rows = [
        dict(
            condition_id="clean",
            degradation="clean",
            severity=np.nan,
            axis=None,
            axis_value=np.nan,
            axis_unit=None,
            direction=1,
            mean_niqe=4.0,
            mean_brisque=20.0,
            mean_psnr_db=np.nan,
        )
    ]
    for x, b, q, p in ((0.004, 22.0, 5.0, 30.0), (0.001, 19.0, 6.0, 24.0), (0.00025, 12.0, 8.0, 15.0)):
        rows.append(
            dict(
                condition_id=f"exposure.exposure_s={x}",
                degradation="exposure",
                severity=np.nan,
                axis="exposure_s",
                axis_value=x,
                axis_unit="s",
                direction=-1,
                mean_niqe=q,
                mean_brisque=b,
                mean_psnr_db=p,
            )
        )
    for s, b, q, p in ((1, 25.0, 4.5, 33.0), (3, 35.0, 5.5, 27.0), (5, 50.0, 7.0, 22.0)):
        rows.append(
            dict(
                condition_id=f"blur.sev={s}",
                degradation="blur",
                severity=float(s),
                axis="sigma_px",
                axis_value=float(s),
                axis_unit="px",
                direction=1,
                mean_niqe=q,
                mean_brisque=b,
                mean_psnr_db=p,
            )
        )
    # one level only: never judged
    rows.append(
        dict(
            condition_id="fog.sev=1",
            degradation="fog",
            severity=1.0,
            axis=None,
            axis_value=np.nan,
            axis_unit=None,
            direction=1,
            mean_niqe=1.0,
            mean_brisque=1.0,
            mean_psnr_db=40.0,
        )
    )
    return pd.DataFrame(rows)


def test_flags_a_metric_that_ranks_against_the_damage_order():
    f = quality_order_flags(_ctab())
    assert set(f.degradation) == {"exposure", "blur"}  # fog has one level
    got = f.set_index(["degradation", "measure"])
    # BRISQUE on exposure: clean 20, 1/250 s 22, 1/1000 s 19, 1/4000 s 12 -> damage rank 0..3,
    # worse-score ranks 2,3,1,0: Spearman of (0,1,2,3) vs (2,3,1,0) = 1 - 6·(4+4+1+9)/(4·15) = -0.8
    r = got.loc[("exposure", "brisque")]
    assert r.flagged and r.rho == pytest.approx(-0.8)
    assert r.levels.split(", ")[0].startswith("clean") and "0.00025 s" in r.levels.split(", ")[-1]
    assert "0.001 s better than 0.004 s" in r.inversions and "0.00025 s better than 0.001 s" in r.inversions
    assert "BRISQUE" in r.message and "exposure" in r.message and "0.00025 s" in r.message
    # NIQE grows with damage on both; BRISQUE on blur too; PSNR falls (higher = better) -> not flagged
    for key in (
        ("exposure", "niqe"),
        ("blur", "niqe"),
        ("blur", "brisque"),
        ("exposure", "psnr_db"),
        ("blur", "psnr_db"),
    ):
        assert not got.loc[key].flagged and got.loc[key].rho == pytest.approx(1.0), key
    # full-reference measures are not defined on clean: judged on the degraded levels only
    assert got.loc[("exposure", "psnr_db")].n_levels == 3 and got.loc[("exposure", "niqe")].n_levels == 4


def test_direction_orients_the_axis_not_the_value():
    """The same exposure table with direction +1 (larger = worse) reverses the damage order and
    so the verdict: the flag follows the orientation the analysis layer gives."""
    c = _ctab()
    c.loc[c.degradation == "exposure", "direction"] = 1
    f = quality_order_flags(c, measures=["niqe"]).set_index("degradation")
    # clean 4, 1/4000 s 8, 1/1000 s 6, 1/250 s 5: ranks (0,1,2,3) vs (0,3,2,1) -> ρ = 1 - 6·8/60 = 0.2
    assert f.loc["exposure"].flagged and f.loc["exposure"].rho == pytest.approx(0.2)
    # an explicit mild -> severe 'order' column wins over severity/axis
    c = _ctab()
    c["order"] = c.groupby("degradation").cumcount() + 1.0
    c.loc[c.condition_id == "clean", "order"] = 0.0
    c.loc[c.degradation == "blur", "order"] = [3.0, 2.0, 1.0]  # claimed order reversed
    assert quality_order_flags(c, measures=["niqe"]).set_index("degradation").loc["blur"].flagged


def _corr(rows):
    cols = ["relation", "measure", "level", "statistic", "value", "lo", "hi", "n", "note", "degradation"]
    return pd.DataFrame([dict(zip(cols, r, strict=True)) for r in rows], columns=cols)


def test_plain_conclusions_state_number_interval_and_no_evidence():
    corr = _corr(
        [
            ("quality_predicts_error", "brisque", "image", "auc", 0.71, 0.62, 0.80, 120, "", ""),
            ("quality_predicts_error", "niqe", "image", "auc", 0.55, 0.45, 0.66, 120, "", ""),
            ("quality_predicts_error", "ssim", "image", "auc", 0.30, 0.20, 0.40, 100, "", ""),
            ("mean_quality_vs_top1_acc", "brisque", "condition", "spearman", -0.7, -0.9, -0.3, 12, "", ""),
            ("mean_quality_vs_top1_acc", "psnr_db", "condition", "spearman", 0.2, -0.3, 0.6, 11, "", ""),
            ("mean_quality_vs_top1_acc", "ssim", "condition", "spearman", np.nan, np.nan, np.nan, 2, "", ""),
            ("saliency_shift_px", "grad_cam", "degradation", "mean", 9.1, 6.2, 12.3, 60, "", "gaussian_blur"),
            ("saliency_shift_px", "grad_cam", "degradation", "mean", 1.2, 0.4, 2.1, 60, "", "jpeg"),
        ]
    )
    text = plain_conclusions(corr, quality_order_flags(_ctab()))
    joined = "\n".join(text)
    assert "BRISQUE predicts which images the model gets wrong: AUC 0.71 [0.62, 0.80]" in joined
    assert "No evidence that NIQE predicts" in joined and "[0.45, 0.66]" in joined
    assert "SSIM rates the images the model gets wrong as better quality: AUC 0.30 [0.20, 0.40]" in joined
    assert (
        "worse mean quality goes with lower top-1 accuracy (Spearman): BRISQUE ρ -0.70 [-0.90, -0.30]"
        in joined
    )
    assert "No evidence that mean quality tracks top-1 accuracy across conditions for: PSNR ρ +0.20" in joined
    assert "Too few conditions to relate mean quality to top-1 accuracy for: SSIM (2 conditions)" in joined
    assert "nan" not in joined
    assert "Saliency moves under gaussian_blur: mean centroid shift 9.1 px [6.2, 12.3]" in joined
    assert "No evidence that saliency moves under jpeg" in joined
    warnings = [t for t in text if t.startswith("Warning")]
    assert len(warnings) == 1 and "BRISQUE" in warnings[0] and "exposure" in warnings[0]
    # every sentence carries an interval (or says why it has none)
    assert all("[" in t or t.startswith(("Warning", "Too few")) for t in text)


def test_relations_orient_full_reference_auc_and_use_degraded_rows():
    """AUC of PSNR/SSIM is that of the negated score; computed on degraded rows only."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 60
    conds = ["clean", "blur.sev=1", "blur.sev=3"]
    img = pd.DataFrame({"condition_id": np.repeat(conds, n), "image_index": np.tile(np.arange(n), 3)})
    wrong = rng.random(3 * n) < np.repeat([0.1, 0.3, 0.6], n)
    img["correct1"] = ~wrong
    img["label"] = 1
    psnr = np.where(wrong, 18.0, 28.0) + rng.normal(0, 4, 3 * n)
    img["psnr_db"] = np.where(img.condition_id == "clean", np.nan, psnr)
    img["ssim"] = np.where(img.condition_id == "clean", np.nan, 1 - 1 / psnr)
    for m in ("niqe", "brisque"):
        img[m] = rng.normal(5, 1, 3 * n)
        img[f"{m}_delta"] = 0.0
    img["prob_drop"] = rng.random(3 * n)
    for c in ("map_saliency_pearson", "map_saliency_topk", "saliency_shift", "saliency_shift_px"):
        img[c] = np.nan
    ct = (
        img.groupby("condition_id", sort=False)
        .agg(
            mean_niqe=("niqe", "mean"),
            mean_brisque=("brisque", "mean"),
            mean_psnr_db=("psnr_db", "mean"),
            mean_ssim=("ssim", "mean"),
            top1_acc=("correct1", "mean"),
            top5_acc=("correct1", "mean"),
        )
        .reset_index()
    )
    ct["degradation"] = ["clean", "blur", "blur"]
    corr = quality_relations(img, ct, n_boot=50, seed=0)
    row = corr[(corr.relation == "quality_predicts_error") & (corr.measure == "psnr_db")].iloc[0]
    deg = img[img.condition_id != "clean"]
    assert row.n == len(deg)
    assert row.value == pytest.approx(roc_auc_score(~deg.correct1, -deg.psnr_db)) and row.value > 0.8
    assert row.lo > 0.5  # lower PSNR predicts errors
    assert "lpips" not in set(corr.measure)  # an all-NaN measure gets no rows
    s = corr[(corr.relation == "mean_quality_vs_top1_acc") & (corr.measure == "ssim")].iloc[0]
    assert s.n == 2  # degraded conditions only
    assert math.isnan(s.value)  # < 3 pairs: no ρ claimed


def test_camera_sweeps_start_at_the_camera_reference():
    """A camera-family sweep is judged from the camera reference (the pipeline at its neutral
    setting), not from clean: here BRISQUE is worse than clean at every level but better at
    the first level than at the reference, so it is flagged only when judged correctly."""
    c = _ctab()
    c["family"] = np.where(c.degradation == "exposure", "camera", "blur")
    c.loc[c.degradation == "exposure", "mean_brisque"] = [40.0, 45.0, 50.0]
    ref = dict(
        condition_id="camera_reference",
        degradation="camera",
        family="camera",
        severity=np.nan,
        axis=None,
        axis_value=np.nan,
        axis_unit=None,
        direction=1,
        mean_niqe=4.5,
        mean_brisque=60.0,
        mean_psnr_db=31.0,
    )
    c = pd.concat([c, pd.DataFrame([ref])], ignore_index=True)
    f = quality_order_flags(c).set_index(["degradation", "measure"])
    r = f.loc[("exposure", "brisque")]
    assert r.flagged and r.levels.startswith("camera reference 60") and r.n_levels == 4
    assert f.loc[("exposure", "psnr_db")].n_levels == 4 and not f.loc[("exposure", "psnr_db")].flagged
    assert "camera" not in set(f.index.get_level_values(0))  # the reference is not a sweep of its own


def test_printed_summary_keeps_relation_names_whole_and_names_the_degradation():
    """Seen: in a 100-column terminal the relation column was folded into 7-letter pieces
    ('quality_vs_cor / rect1'), and per-degradation rows did not say which degradation."""
    from pathlib import Path

    from rich.console import Console

    from weakspot.quality.relations import PerceptionResult, print_summary

    corr = _corr(
        [
            ("quality_predicts_error", "brisque", "image", "auc", 0.71, 0.62, 0.80, 120, "", ""),
            ("saliency_shift_px", "grad_cam", "degradation", "mean", 9.1, 6.2, 12.3, 60, "", "gaussian_blur"),
        ]
    )
    con = Console(width=100, record=True, file=io.StringIO())
    print_summary(PerceptionResult(pd.DataFrame(), _ctab(), corr, Path("."), {"n_images": 4}), con)
    text = con.export_text()
    assert "quality_predicts_error" in text  # whole on one line, not folded
    assert "Saliency moves under gaussian_blur: mean centroid shift 9.1 px [6.2, 12.3]" in " ".join(
        text.split()
    )
    rows = [ln for ln in text.splitlines() if "saliency_shift_px" in ln]
    assert rows and "gaussian_blur" in rows[0]


def test_quality_accuracy_figure_legend_outside_and_reference_named():
    """Seen: the legend sat on the curves (lower left), and the camera reference was drawn as
    a one-point 'camera' sweep."""
    import matplotlib.pyplot as plt

    from weakspot.quality.relations import quality_accuracy_figure

    c = _ctab()
    c["family"] = np.where(c.degradation == "exposure", "camera", "blur")
    ref = dict(
        condition_id="camera_reference",
        degradation="camera",
        family="camera",
        mean_niqe=4.5,
        mean_brisque=30.0,
    )
    c = pd.concat([c, pd.DataFrame([ref])], ignore_index=True)
    c["top1_acc"] = np.linspace(0.9, 0.2, len(c))
    fig = quality_accuracy_figure(c, "brisque")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "camera reference" in labels and "camera" not in labels
    fig.canvas.draw()
    leg = ax.get_legend().get_window_extent()
    assert leg.x0 >= ax.get_window_extent().x1  # right of the plotting area
    # lines run mild -> severe: the exposure line visits 1/250 s, 1/1000 s, 1/4000 s in that order
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "exposure")
    assert list(line.get_xdata()) == [20.0, 22.0, 19.0, 12.0]
    plt.close(fig)
