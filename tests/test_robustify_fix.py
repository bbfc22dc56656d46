"""``weakspot fix``: diagnosis from the store, the fix, the same sweep re-run, before/after in the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weakspot.cli import main
from weakspot.evaluate.store import ResultsStore
from weakspot.robustify.fix import find_weaknesses, fix_run

CONFIG = {
    "model": {"name": "mnist_cnn"},
    "data": {"kind": "mnist_5k", "per_class": 4},
    "seed": 0,
    "batch_size": 64,
    "workers": 0,
    "conditions": [
        {"degradation": "gaussian_blur", "severities": [1, 5]},
        {"degradation": "gaussian_noise", "grid": {"variance": [0.01]}},
    ],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from weakspot.evaluate.engine import run_sweep

    d = tmp_path_factory.mktemp("fixrun") / "run"
    run_sweep(CONFIG, d, progress=False)
    return d


def test_weaknesses_come_from_the_store(run_dir):
    weak = find_weaknesses(run_dir, top=2, min_drop=0.0)
    acc = ResultsStore(run_dir).sql(
        "select condition_id, avg(correct1::int) as acc from predictions group by 1 order by acc"
    )
    worst = acc.iloc[0]
    assert weak[0].worst_condition == worst.condition_id and weak[0].worst_acc == pytest.approx(worst.acc)
    assert weak[0].degradation == "gaussian_blur" and (weak[0].low, weak[0].high) == (0.4, 3.0)
    clean = float(acc[acc.condition_id == "clean"].acc.iloc[0])
    assert weak[0].drop == pytest.approx(clean - worst.acc)


def test_fix_retrains_reruns_the_same_sweep_and_reports(run_dir):
    s = fix_run(run_dir, epochs=2, train_limit=600, top=1, progress=False, log=lambda *a: None)
    assert s["method"] == "robust"  # bundled model + unused bundled digits → robust training
    before, after = ResultsStore(run_dir), ResultsStore(run_dir / "fix" / "run")
    # the same sweep: same conditions and images
    assert list(after.conditions().condition_id) == list(before.conditions().condition_id)
    assert list(after.images().image_id) == list(before.images().image_id)
    ba = {r["condition_id"]: r for r in s["before_after"] if r["cls"] == "all"}
    for store, col in ((before, "before"), (after, "after")):
        p = store.predictions()
        for cid, g in p.groupby("condition_id"):
            assert ba[cid][col] == pytest.approx(g.correct1.mean())
    # the training never saw an evaluated digit: the weakness improves
    assert ba["gaussian_blur.sev=5"]["after"] > ba["gaussian_blur.sev=5"]["before"] + 0.1
    # the exported model is what the re-run evaluated
    from weakspot.models import load_model

    m = load_model(s["fixed_model"], preprocess=after.manifest()["config"]["model"]["preprocess"])
    from weakspot.data import open_dataset

    ds = open_dataset(None, "mnist_5k")
    images = after.images().sort_values("image_index").head(8)
    pos = {iid: i for i, iid in enumerate(ds.image_ids)}
    x = torch.stack([ds.load(pos[iid]) for iid in images.image_id])
    top1 = m.predict_proba(x).argmax(1).numpy()
    pred = after.predictions(["clean"]).set_index("image_index")
    clean = pred.loc[images.image_index, "top1"].to_numpy()
    np.testing.assert_array_equal(top1, clean)
    html = (run_dir / "report" / "report.html").read_text()
    assert "Fix: before / after" in html and "gaussian_blur.sev=5" in html


def test_frontend_fix_exports_a_working_model(run_dir, tmp_path):
    s = fix_run(run_dir, out_dir=tmp_path / "fe", method="frontend", epochs=1, train_limit=128, top=1,
                progress=False, log=lambda *a: None)
    assert s["method"] == "frontend" and (tmp_path / "fe" / "fixed_model.ts").is_file()
    ba = [r for r in s["before_after"] if r["cls"] == "all"]
    assert {r["condition_id"] for r in ba} == set(ResultsStore(run_dir).conditions().condition_id)
    # a second fix into the same folder replaces the re-run (no stale predictions of the first model)
    s2 = fix_run(run_dir, out_dir=tmp_path / "fe", method="frontend", epochs=1, train_limit=128, top=1, seed=5,
                 progress=False, log=lambda *a: None)
    from weakspot.models import load_model

    after = ResultsStore(tmp_path / "fe" / "run")
    m = load_model(s2["fixed_model"], preprocess=after.manifest()["config"]["model"]["preprocess"])
    assert after.manifest()["model"]["weights_sha256"] == m.weights_sha256


def test_fix_user_errors(tmp_path, capsys):
    assert main(["fix", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "weakspot run" in capsys.readouterr().err
