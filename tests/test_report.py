"""The report: files, summary.json against the analyses, escaping, sections, CLI, examples
regenerated exactly, and a real headless browser (Debian chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_analysis_synth import EVIL, make_store

from weakspot import analysis as A
from weakspot.cli import main
from weakspot.report import Section, SectionOutput, esc, registered_sections, write_report

REPO = Path(__file__).resolve().parents[1]
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    """A small real run: the bundled MNIST CNN on 100 real digits under noise and blur."""
    from weakspot.evaluate import run_sweep

    d = tmp_path_factory.mktemp("mnist")
    cfg = d / "cfg.yaml"
    cfg.write_text(
        "model: {name: mnist_cnn}\n"
        "data: {kind: mnist_5k, per_class: 10}\n"
        "seed: 3\nbatch_size: 128\nworkers: 0\nstore_probs: true\n"
        "conditions:\n"
        "  - degradation: gaussian_noise\n    grid: {variance: [0.02, 0.1, 0.3]}\n"
        "  - degradation: gaussian_blur\n    grid: {sigma_px: [1.0, 2.0, 3.0]}\n"
    )
    run_sweep(cfg, d / "run", progress=False)
    return d / "run"


@pytest.fixture(scope="session")
def mnist_report(mnist_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report"
    a = A.analyze(mnist_run, n_boot=200)
    return write_report(mnist_run, out, analysis=a, max_examples=4), a


@pytest.fixture(scope="session")
def evil_run(tmp_path_factory):
    """A synthetic run on 20 real photos (foolbox's ImageNet samples) whose class names and run
    directory contain markup."""
    from weakspot.data import open_dataset

    ids = open_dataset(kind="foolbox", subset="imagenet").image_ids
    root = tmp_path_factory.mktemp("x") / "run <b>&'\""
    _store, raw = make_store(
        root,
        n_classes=5,
        per_class=4,
        class_names=["tiger", EVIL, "crab"],
        image_ids=ids,
        manifest={
            "seed": 1,
            "model": {"name": "<i>model</i>"},
            "config": {"data": [{"kind": "foolbox", "subset": "imagenet"}]},
        },
    )
    return root, raw


@pytest.mark.slow
def test_report_files_and_summary_match_the_analysis(mnist_report, mnist_run):
    html_path, a = mnist_report
    out = html_path.parent
    assert html_path.name == "report.html"
    for f in ("summary.json", "report.md"):
        assert (out / f).is_file()
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 5
    for p in pngs:
        with Image.open(p) as im:
            assert im.size[0] > 20 and im.size[1] > 20
    s = json.loads((out / "summary.json").read_text())
    assert s["schema_version"] == 1 and s["run"]["n_images"] == 100 and s["run"]["full_probabilities"]
    assert [f["text"] for f in s["findings"]] == list(a.findings.text)
    assert set(s["sections"]) >= {
        "overview",
        "accuracy",
        "heatmap",
        "classes",
        "examples",
        "confusion",
        "breaking",
    }
    conds = {c["condition_id"]: c for c in s["sections"]["accuracy"]["conditions"]}
    # independent: top-1 accuracy straight from the Parquet predictions with DuckDB
    from weakspot.evaluate.store import ResultsStore

    ref = ResultsStore(mnist_run).sql(
        "select condition_id, avg(correct1::int) acc from predictions group by 1"
    )
    for r in ref.itertuples():
        assert conds[r.condition_id]["top1"] == pytest.approx(r.acc)
    # x-axis units are in the figures' labels and the levels
    assert any(c["level"] == "2 px" for c in conds.values())
    md = (out / "report.md").read_text()
    assert "figures/" in md and "| degradation |" in md
    html = html_path.read_text()
    assert html.count('src="data:image/png;base64,') == len(re.findall(r"<img ", html))  # self-contained
    assert "http://" not in html and "https://" not in html


def test_examples_are_the_images_the_run_evaluated(mnist_report, mnist_run):
    """Feed the regenerated degraded example back to the model: its probability of the clean
    class must equal what the run stored for that (condition, image)."""
    from weakspot.data import open_dataset
    from weakspot.evaluate.store import ResultsStore
    from weakspot.models import load_model

    html_path, _a = mnist_report
    ex = json.loads((html_path.parent / "summary.json").read_text())["sections"]["examples"]["examples"]
    assert len(ex) >= 2
    store = ResultsStore(mnist_run)
    images = store.images().set_index("image_id")
    preds = store.predictions().set_index(["condition_id", "image_index"])
    model = load_model("mnist_cnn")
    ds = open_dataset(kind="mnist_5k")
    pos = {iid: i for i, iid in enumerate(ds.image_ids)}
    for i, e in enumerate(ex):
        png = np.asarray(Image.open(html_path.parent / f"figures/example-{i}-degraded.png"))
        img = png[::8, ::8] if png.ndim == 2 else png[::8, ::8, 0]  # 28 px enlarged 8x with nearest
        x = torch.from_numpy(img.astype(np.float32) / 255)[None, None]
        with torch.inference_mode():
            p = torch.softmax(model.module(model.preprocess(x)), 1)[0].numpy()
        row = preds.loc[(e["condition_id"], int(images.loc[e["image_id"]].image_index))]
        assert p[row.clean_top1] == pytest.approx(row.p_clean_top1, abs=0.02)  # 8-bit PNG rounding only
        assert e["degraded_class"] == str(row.top1) or p.argmax() == row.top1
        clean = np.asarray(Image.open(html_path.parent / f"figures/example-{i}-clean.png"))
        ref = (ds.load(pos[e["image_id"]])[0].numpy() * 255 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(clean[::8, ::8] if clean.ndim == 2 else clean[::8, ::8, 0], ref)


@pytest.mark.slow
def test_markup_in_class_names_and_paths_is_escaped(evil_run, tmp_path):
    root, _raw = evil_run
    p = write_report(root, tmp_path / "r", n_boot=50)
    html = p.read_text()
    assert EVIL not in html and ESCAPED in html
    assert "<i>model</i>" not in html and "&lt;i&gt;model&lt;/i&gt;" in html
    assert "run <b>" not in html and "run &lt;b&gt;&amp;&#x27;&quot;" in html
    assert re.findall(r"<script>", html) == ["<script>"]  # only the report's own marker script
    s = json.loads((tmp_path / "r/summary.json").read_text())
    assert EVIL in json.dumps(s["sections"], ensure_ascii=False)  # JSON keeps the raw name
    # gaussian_blur examples regenerate from the real photos; the unregistered one degrades gracefully
    assert s["sections"]["examples"]["examples"]
    assert esc("<&>") == "&lt;&amp;&gt;"


def test_without_probabilities_the_report_explains(tmp_path):
    make_store(tmp_path / "run", store_probs=False)
    p = write_report(tmp_path / "run", n_boot=50)
    assert p == tmp_path / "run/report/report.html"
    html = p.read_text()
    assert "store_probs: true" in html and "Most frequent confusions" in html
    s = json.loads((p.parent / "summary.json").read_text())
    assert s["sections"]["confusion"]["auc"] == [] and "store_probs" in s["sections"]["confusion"]["reason"]


@pytest.mark.slow
def test_sections_are_extensible(tmp_path):
    make_store(tmp_path / "run", n_classes=3, per_class=3)

    def render(ctx):
        n = len(ctx.analysis.accuracy)
        return SectionOutput(f"<p>{esc('<fix> works')} on {n} conditions</p>", {"n_conditions": n}, "fix md")

    secs = [*registered_sections(), Section("fixes", "Before / after", render, order=80)]
    p = write_report(tmp_path / "run", tmp_path / "out", sections=secs, n_boot=50)
    html = p.read_text()
    assert 'id="fixes"' in html and "&lt;fix&gt; works on 10 conditions" in html
    assert json.loads((tmp_path / "out/summary.json").read_text())["sections"]["fixes"] == {
        "n_conditions": 10
    }
    assert "fix md" in (tmp_path / "out/report.md").read_text()


@pytest.mark.slow
def test_cli_report_and_user_errors(tmp_path, capsys):
    make_store(tmp_path / "run", n_classes=3, per_class=3)
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--examples", "0"]) == 0
    assert (tmp_path / "o/report.html").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path / "run"), "--baseline", str(tmp_path / "nope")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "does not exist" in err and "baseline" in err and "Traceback" not in err


# ------------------------------------------------------------------ real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _console_messages(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not found (make test installs it: apt-get install chromium)"
)
@pytest.mark.slow
def test_report_renders_in_headless_chromium(mnist_report, tmp_path):
    # the console detector itself: a page with a console error must be caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('deliberate')</script></body></html>")
    r = _chromium(bad.as_uri(), tmp_path / "p0", "--virtual-time-budget=2000", "--dump-dom")
    assert any("deliberate" in m for m in _console_messages(r.stderr))

    html_path, _ = mnist_report
    n_img = len(re.findall(r"<img ", html_path.read_text()))
    r = _chromium(html_path.as_uri(), tmp_path / "p1", "--virtual-time-budget=5000", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'data-loaded="1"' in r.stdout
    assert f'data-images="{n_img}/{n_img}"' in r.stdout, re.findall(r'data-images="[^"]*"', r.stdout)
    assert _console_messages(r.stderr) == []
    art = REPO / "artifacts"
    art.mkdir(exist_ok=True)
    shot = art / "report.png"
    shot.unlink(missing_ok=True)
    r = _chromium(html_path.as_uri(), tmp_path / "p2", "--window-size=1280,4200", f"--screenshot={shot}")
    assert shot.is_file()
    with Image.open(shot) as im:
        assert im.size == (1280, 4200)
        a = np.asarray(im.convert("L"))
        assert a.std() > 20  # not a blank page


@pytest.mark.slow
def test_adaptive_cli_on_a_real_run_and_its_report_section(mnist_run, tmp_path, capsys):
    import pyarrow.parquet as pq

    assert (
        main(
            [
                "breaking",
                str(mnist_run),
                "gaussian_blur",
                "--mild",
                "0",
                "--severe",
                "4",
                "--tol",
                "0.25",
                "--per-class",
                "2",
            ]
        )
        == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    df = pq.read_table(mnist_run / "adaptive/gaussian_blur.parquet").to_pandas()
    assert len(df) == 10 and (df.n_images == 2).all()
    assert df.n_evals.max() <= 2 + 4  # log2(4 / 0.25) = 4 midpoints
    total = int((df.n_evals * df.n_images).sum())
    assert f"{total} image evaluations instead of {17 * 20}" in out
    html = write_report(mnist_run, tmp_path / "r", n_boot=50, max_examples=0).read_text()
    assert 'id="adaptive"' in html and "saved" in html
    assert main(["breaking", str(mnist_run), "no_such_degradation"]) == 2


@pytest.mark.slow
def test_partial_and_clean_only_runs_still_get_a_report(tmp_path):
    # a run killed mid-way: one condition has no unit at all, another lost its Parquet file after its
    # probabilities were written (the store writes probs first, then the Parquet file)
    make_store(tmp_path / "partial", n_classes=4, per_class=3)
    preds = tmp_path / "partial/predictions"
    for f in (preds / "gaussian_blur.sigma_px=3.0").iterdir():
        f.unlink()
    (preds / "contrast_drop.sev=5/shard-00001.parquet").unlink()
    run = A.load_run(tmp_path / "partial")
    assert run.pending == ["gaussian_blur.sigma_px=3.0"]
    assert np.isnan(run.probs("contrast_drop.sev=5")[-1]).all()  # unfinished shard: NaN rows, no crash
    html = write_report(tmp_path / "partial", n_boot=50).read_text()
    assert "Partial run: 1 condition(s)" in html
    acc = A.accuracy_table(run).set_index("condition_id")
    assert acc.loc["contrast_drop.sev=5", "n"] == 6 and "gaussian_blur.sigma_px=3.0" not in acc.index

    make_store(tmp_path / "clean", n_classes=3, per_class=2)
    for d in (tmp_path / "clean/predictions").iterdir():
        if d.name != "clean":
            shutil.rmtree(d)
    html = write_report(tmp_path / "clean", n_boot=50).read_text()
    assert 'id="overview"' in html and 'id="accuracy"' not in html
