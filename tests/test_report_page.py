"""The page a reader sees: one section registry (Python == CLI), escaping of every name, the
"What broke" table first, statistics as printed, per-class thresholds, axes oriented by damage,
the camera reference, and the config's name in the title."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_analysis_stats import _add_reference
from test_analysis_synth import make_store

from weakspot import analysis as A
from weakspot.report import SECTION_REGISTRY, registered_sections, write_report

REPO = Path(__file__).resolve().parents[1]
MARKUP = "<b>x{}</b>&\"'"


def _fix_json(run_dir: Path, store) -> None:
    """A minimal RUN_DIR/fix/fix.json as 'weakspot fix' writes it (robustify.fix.fix_run)."""
    conds = list(store.conditions().condition_id)
    ba = [{"condition_id": c, "cls": "all", "before": 0.5, "after": 0.7, "gain": 0.2} for c in conds]
    fx = {
        "method": "robust",
        "weaknesses": [{"degradation": "gaussian_blur", "worst_condition": conds[-1], "drop": 0.4}],
        "training_data": {"name": "synthetic", "train": 10},
        "train_range": "gaussian_blur 0.5-3",
        "p_clean": 0.2,
        "after_run": str(run_dir / "fix/run"),
        "before_after": ba,
    }
    (run_dir / "fix").mkdir(parents=True, exist_ok=True)
    (run_dir / "fix/fix.json").write_text(json.dumps(fx))


@pytest.mark.slow
def test_write_report_from_a_fresh_python_includes_every_registered_section(tmp_path):
    store, _ = make_store(tmp_path / "run", n_classes=3, per_class=5)
    _fix_json(tmp_path / "run", store)
    code = (
        "import sys\n"
        "from weakspot.report import write_report\n"
        f"p = write_report({str(tmp_path / 'run')!r}, {str(tmp_path / 'out')!r}, n_boot=20, max_examples=0)\n"
        "print('robustify imported before render:', 'weakspot.robustify.report_section' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (tmp_path / "out/report.html").read_text()
    assert 'id="fix"' in html and "Fix: before / after" in html
    s = json.loads((tmp_path / "out/summary.json").read_text())
    assert "fix" in s["sections"] and s["sections"]["fix"]["method"] == "robust"
    # the registry lists every section, including the ones other layers render
    ids = [e.id for e in SECTION_REGISTRY]
    assert ids[0] == "what_broke" and {"fix", "perception", "adaptive"} <= set(ids)
    assert [s.id for s in registered_sections()][:2] == ["what_broke", "overview"]
    # the page starts with the ranked table
    first = re.findall(r'<section id="([^"]+)"', html)
    assert first[0] == "what_broke"


@pytest.mark.slow
def test_every_class_name_is_escaped_everywhere(tmp_path):
    from weakspot.data import open_dataset

    # 20 real photos (foolbox's ImageNet samples) so that the examples (captions) render too
    ids = open_dataset(kind="foolbox", subset="imagenet").image_ids
    names = [MARKUP.format(i) for i in range(5)]
    make_store(
        tmp_path / "run",
        n_classes=5,
        per_class=4,
        class_names=names,
        image_ids=ids,
        manifest={
            "seed": 1,
            "model": {"name": "m"},
            "config": {"name": MARKUP.format("name"), "data": [{"kind": "foolbox", "subset": "imagenet"}]},
        },
    )
    p = write_report(tmp_path / "run", tmp_path / "r", n_boot=30, min_per_class=4)
    html = p.read_text()
    s = json.loads((tmp_path / "r/summary.json").read_text())
    assert s["sections"]["examples"]["examples"] and s["sections"]["classes"]["degradations"]
    assert 'class="ex"' in html and "most affected:" in html
    for i in [*range(5), "name"]:
        assert f"<b>x{i}</b>" not in html, i
    assert "&\"'" not in html and "</b>&" not in html
    assert "&lt;b&gt;x4&lt;/b&gt;&amp;&quot;&#x27;" in html  # the name is there, escaped
    md = (tmp_path / "r/report.md").read_text()
    assert not any(f"<b>x{i}</b>" in md for i in range(5))  # Markdown renders raw HTML too
    assert json.dumps(names[4], ensure_ascii=False)[1:-1] in json.dumps(s, ensure_ascii=False)  # raw in JSON


@pytest.mark.slow
def test_what_broke_and_significance_as_printed(tmp_path):
    store, raw = make_store(tmp_path / "run")
    a = A.analyze(store, n_boot=30)
    p = write_report(tmp_path / "run", tmp_path / "r", analysis=a)
    s = json.loads((tmp_path / "r/summary.json").read_text())
    conds = {c["condition_id"]: c for c in s["sections"]["accuracy"]["conditions"]}
    acc = a.accuracy.set_index("condition_id")
    for cid, c in conds.items():
        assert c["top1_lo"] == pytest.approx(acc.loc[cid, "top1_lo"])
        assert c["significant"] == bool(acc.loc[cid, "significant"])
        assert (c["p_vs_clean"] is None) == (cid == "clean")
    rows = s["sections"]["what_broke"]["rows"]
    assert [r["degradation"] for r in rows] == list(a.broke.degradation)
    labels = raw["labels"]
    clean_hit = np.argmax(raw["probs"]["clean"], 1) == labels
    for r in rows:
        hit = np.argmax(raw["probs"][r["condition_id"]], 1) == labels
        assert r["effect"] == pytest.approx(hit.mean() - clean_hit.mean())
        assert r["effect_lo"] <= r["effect"] <= r["effect_hi"]
        lost = clean_hit & ~hit
        for c in r["carriers"]:  # the classes that carry the drop: images lost per class, from numpy
            assert c["lost"] == int(np.sum(lost & (labels == c["class"])))
        assert r["carriers"][0]["lost"] == max(int(np.sum(lost & (labels == k))) for k in range(6))
    html = p.read_text()
    assert html.index('id="what_broke"') < html.index('id="overview"')
    assert "real drop?" in html and "Holm" in html
    kpis = s["sections"]["overview"]["kpis"]
    assert kpis["mce_comparable"] is False and s["min_per_class"] == 5


@pytest.mark.slow
def test_small_classes_get_no_ranking_and_the_page_says_why(tmp_path):
    make_store(tmp_path / "run", n_classes=4, per_class=2)
    p = write_report(tmp_path / "run", tmp_path / "r", n_boot=20, max_examples=0)
    html = p.read_text()
    assert "cannot support per-class claims" in html and "n = 2" in html
    s = json.loads((tmp_path / "r/summary.json").read_text())
    assert s["sections"]["classes"]["per_image"] and s["sections"]["classes"]["degradations"] == {}
    assert s["sections"]["heatmap"]["classes"] == []
    assert "most affected" not in html.split('id="classes"')[1].split("</section>")[0]
    # the keyword lowers the threshold
    write_report(tmp_path / "run", tmp_path / "r2", n_boot=20, max_examples=0, min_per_class=2)
    s2 = json.loads((tmp_path / "r2/summary.json").read_text())
    assert s2["min_per_class"] == 2 and s2["sections"]["classes"]["degradations"]


@pytest.mark.slow
def test_mce_coverage_is_stated(tmp_path):
    make_store(tmp_path / "inet", n_classes=1000, per_class=1, store_probs=False, imagenet_c=True, shards=1)
    p = write_report(tmp_path / "inet", tmp_path / "r", n_boot=20, max_examples=0)
    html = p.read_text()
    assert "1 of 15 corruptions, severities 1,2,3,4,5, 1000 images per level" in html
    assert "not comparable with published values" in html
    s = json.loads((tmp_path / "r/summary.json").read_text())
    k = s["sections"]["overview"]["kpis"]
    assert k["mce_comparable"] is False and k["mce_coverage"]["n_corruptions"] == 1


@pytest.mark.slow
def test_axes_point_to_more_damage_and_breaking_signs_follow(tmp_path):
    import matplotlib.pyplot as plt

    from weakspot.report.figures import accuracy_figure, exposure_label

    levels = [(0.005, 0.3), (0.0025, 0.6), (0.001, 1.0), (0.0005, 2.0)]
    store, _ = make_store(tmp_path / "exp", physical=("exposure", "camera", "exposure_s", "s", levels))
    _add_reference(store, _, strength=0.1)
    a = A.analyze(store, n_boot=20)
    direction = a.run.conditions.groupby("degradation")["direction"].first().to_dict()
    assert direction["exposure"] == -1 and direction["contrast_drop"] == 1
    fig = accuracy_figure(a.accuracy, ["exposure"], {}, True, direction=direction)
    ax = fig.axes[0]
    left, right = ax.get_xlim()
    assert left > right and ax.get_xscale() == "log"  # longer exposure left, shorter (worse) right
    assert "camera reference" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylabel()
    plt.close(fig)
    assert exposure_label(0.004) == "1/250 s" and exposure_label(2.0) == "2 s"
    # breaking labels: '≥ x' before the first level and '(< x)' not reached when smaller is worse
    from weakspot.analysis.breaking import _label

    assert _label(0.005, "before_first_level", 0.0005, False, "exposure_s", "s", -1) == "≥ 0.005 s"
    assert _label(np.nan, "not_reached", 0.0005, False, "exposure_s", "s", -1) == "not reached (< 0.0005 s)"
    assert _label(np.nan, "not_reached", 3.0, False, "sigma_px", "px", 1) == "not reached (> 3 px)"
    bp = a.breaking[a.breaking.degradation == "exposure"]
    assert not bp.label.str.contains(">").any()
    # the page: camera rows are tested against the reference too
    html = write_report(tmp_path / "exp", tmp_path / "r", analysis=a, max_examples=0).read_text()
    assert "vs camera reference" in html and "effect vs camera reference" in html
    s = json.loads((tmp_path / "r/summary.json").read_text())
    row = next(r for r in s["sections"]["what_broke"]["rows"] if r["degradation"] == "exposure")
    assert row["effect_vs_reference"] is not None and row["effect_vs_reference"] >= row["effect"]


@pytest.mark.slow
def test_title_uses_the_config_name(tmp_path):
    make_store(
        tmp_path / "run",
        n_classes=3,
        per_class=5,
        manifest={"seed": 0, "model": {"name": "m"}, "config": {"name": "Night <shots>"}},
    )
    html = write_report(tmp_path / "run", tmp_path / "r", n_boot=20, max_examples=0).read_text()
    assert "<title>weakspot report — Night &lt;shots&gt; (m)</title>" in html
