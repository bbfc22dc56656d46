"""``weakspot perceive`` on a real (small) run: EfficientNet-Lite0 on foolbox's real ImageNet
photos under blur and noise. Numbers are checked against independent recomputations
(DuckDB over the store, pandas/SciPy statistics, the Mann–Whitney form of the AUC) and
against physics (more blur → worse BRISQUE); regeneration is checked by the model
reproducing the top-1 classes the run recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from weakspot.cli import main


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    from weakspot.evaluate import parse_config, run_sweep

    out = tmp_path_factory.mktemp("perceive") / "run"
    cfg = parse_config({
        "name": "perceive-test",
        "model": {"name": "efficientnet_lite0"},
        "data": {"kind": "foolbox", "subset": "imagenet", "limit": 4},
        "seed": 3,
        "batch_size": 8,
        "workers": 0,
        "conditions": [
            {"degradation": "gaussian_blur", "grid": {"sigma_px": [1.5, 4.0]}},
            {"degradation": "gaussian_noise", "grid": {"variance": [0.03]}},
        ],
    })
    run_sweep(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def perception(run_dir):
    from weakspot.quality.relations import perceive

    return perceive(run_dir, max_images=0, n_boot=200, overlays=2, progress=False)


def test_tables_files_and_regeneration(run_dir, perception):
    out = run_dir / "perception"
    for name in ("images", "conditions", "correlations"):
        assert (out / f"{name}.parquet").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_images"] == 4 and meta["top1_mismatches"] == 0 and meta["patch_map"]
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "brisque_vs_top1.png" in figs and sum(f.startswith("overlay_") for f in figs) == 2
    from PIL import Image

    for f in (out / "figures").glob("*.png"):
        Image.open(f).verify()
    t = pd.read_parquet(out / "images.parquet")
    assert len(t) == 4 * 4 and set(t.condition_id) == set(perception.conditions.condition_id)
    # the regenerated degraded images (engine's apply_condition, keyed generators) make the
    # model give exactly the top-1 classes the run recorded, image by image
    assert (t.top1_regenerated == t.top1).all()


def test_numbers_match_the_store_and_independent_statistics(run_dir, perception):
    from weakspot.evaluate import ResultsStore

    t, c, corr = perception.images, perception.conditions, perception.correlations
    store = ResultsStore(run_dir)
    ref = store.sql(
        "select d.condition_id, d.image_index, c.top1_prob - d.p_clean_top1 as drop "
        "from predictions d join predictions c on c.image_index = d.image_index and c.condition_id = 'clean'")
    m = t.merge(ref, on=["condition_id", "image_index"])
    np.testing.assert_allclose(m.prob_drop, m["drop"], atol=1e-6)
    acc = store.sql("select condition_id, avg(correct1::int) as a from predictions group by 1").set_index("condition_id")
    np.testing.assert_allclose(c.set_index("condition_id").top1_acc, acc.loc[c.condition_id, "a"], atol=1e-12)

    def row(rel, measure):
        return corr[(corr.relation == rel) & (corr.measure == measure)].iloc[0]

    deg = t[t.condition_id != "clean"]
    for measure in ("niqe", "brisque"):
        r = row("quality_vs_prob_drop", measure)
        assert r.value == pytest.approx(deg[measure].corr(deg.prob_drop, method="spearman"), abs=1e-12)
        assert r.lo <= r.value <= r.hi and r.n == len(deg)
        r = row(f"mean_quality_vs_top1_acc", measure)
        assert r.value == pytest.approx(c[f"mean_{measure}"].corr(c.top1_acc, method="spearman"), abs=1e-12)
        wrong = ~t.correct1.astype(bool)
        if wrong.any() and (~wrong).any():  # AUC = U / (n_wrong · n_right)
            u = mannwhitneyu(t[measure][wrong], t[measure][~wrong]).statistic
            assert row("quality_predicts_error", measure).value == pytest.approx(u / (wrong.sum() * (~wrong).sum()))


def test_physics_and_saliency_invariants(perception):
    t, c = perception.images, perception.conditions.set_index("condition_id")
    blur = [i for i in c.index if i.startswith("gaussian_blur")]
    weak, strong = sorted(blur, key=lambda i: c.loc[i, "axis_value"])
    # more blur → worse BRISQUE and NIQE on average, and lower accuracy-related confidence
    assert c.loc["clean", "mean_brisque"] < c.loc[weak, "mean_brisque"] < c.loc[strong, "mean_brisque"]
    assert c.loc["clean", "mean_niqe"] < c.loc[strong, "mean_niqe"]
    assert c.loc[strong, "mean_prob_drop"] > c.loc[weak, "mean_prob_drop"]
    clean = t[t.condition_id == "clean"]
    np.testing.assert_allclose(clean.saliency_shift, 0, atol=1e-12)
    np.testing.assert_allclose(clean.saliency_cosine_distance, 0, atol=1e-9)
    np.testing.assert_allclose(clean.saliency_strength_ratio, 1, atol=1e-9)
    np.testing.assert_allclose(clean.prob_drop, 0, atol=1e-6)
    # strong blur moves Grad-CAM more than weak blur (mean over images)
    assert c.loc[strong, "mean_saliency_cosine_distance"] > c.loc[weak, "mean_saliency_cosine_distance"]
    assert t.map_saliency_topk.between(0, 1).all() and t.map_saliency_pearson.between(-1, 1).all()


def test_cli_perceive_and_user_errors(run_dir, tmp_path, capsys):
    assert main(["perceive", str(run_dir), "--max-images", "2", "--n-boot", "0", "--overlays", "0",
                 "--conditions", "gaussian_noise*", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "perception: 2 images × 2 conditions" in out and "spearman" in out and "correlations.parquet" in out
    assert main(["perceive", str(tmp_path)]) == 2
    assert "is not a weakspot run" in " ".join(capsys.readouterr().err.split())  # one line, rich-wrapped
    assert main(["perceive", str(run_dir), "--conditions", "nothing*", "--no-progress"]) == 2
    assert "invalid value for 'conditions'" in " ".join(capsys.readouterr().err.split())


def test_report_gains_the_perception_section(run_dir, perception, tmp_path):
    from weakspot.quality.relations import load_perception
    from weakspot.report import write_report

    write_report(run_dir, tmp_path / "report", max_examples=0)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    sec = summary["sections"]["perception"]
    got = pd.DataFrame(sec["correlations"]).set_index(["relation", "measure"]).value
    want = load_perception(run_dir).correlations.set_index(["relation", "measure"]).value  # latest perceive
    np.testing.assert_allclose(got.loc[want.index].astype(float), want, equal_nan=True)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Perception: image quality and saliency" in html and html.count("data:image/png") >= 3
