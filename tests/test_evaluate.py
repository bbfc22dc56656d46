"""Sweeps end to end with the real MNIST CNN on real digits: configs, keyed conditions,
store rows against the model run directly, bad inputs, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from weakspot.data import open_dataset
from weakspot.errors import ConfigError, DataError
from weakspot.evaluate import (
    CLEAN_CONDITION,
    ResultsStore,
    ShardImages,
    Unit,
    apply_condition,
    degrade_images,
    evaluate_unit,
    expand_conditions,
    load_config,
    load_run_conditions,
    parse_config,
    plan_units,
    rows_from_probs,
    run_sweep,
)
from weakspot.models import bundled
from weakspot.random import KeyedBatch, keyed_seed, randn

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**over):
    cfg = {
        "model": {"name": "mnist_cnn"},
        "data": {"kind": "mnist_5k", "per_class": 12},
        "seed": 7,
        "batch_size": 50,
        "shard_size": 40,
        "workers": 0,
        "store_probs": True,
        "conditions": [
            {"degradation": "gaussian_noise", "grid": {"variance": [0.05, 0.2]}},
            {"degradation": "gaussian_blur", "severities": [5]},
        ],
    }
    cfg.update(over)
    return cfg


# these tests run beside other work on 2 shared cores, where torch's 2 intra-op threads are
# many times slower than 1 (conftest's fixture restores the setting afterwards)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def cnn():
    return bundled("mnist_cnn")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    summary = run_sweep(_cfg(), out, progress=False)
    return out, summary


# ----------------------------------------------------------------------------- configs
def test_yaml_and_toml_configs_agree(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(_cfg()))
    t = tmp_path / "c.toml"
    t.write_text(
        "seed = 7\nbatch_size = 50\nshard_size = 40\nworkers = 0\nstore_probs = true\n"
        '[model]\nname = "mnist_cnn"\n[data]\nkind = "mnist_5k"\nper_class = 12\n'
        '[[conditions]]\ndegradation = "gaussian_noise"\ngrid = {variance = [0.05, 0.2]}\n'
        '[[conditions]]\ndegradation = "gaussian_blur"\nseverities = [5]\n'
    )
    assert load_config(y) == load_config(t)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"conditons": []}, "conditons: Extra inputs are not permitted"),
        ({"batch_size": 0}, "batch_size"),
        ({"data": {"kind": "imagenet_folder"}}, "unknown data kind 'imagenet_folder'"),
        ({"conditions": [{"degradation": "gaussian_nois"}]}, "did you mean: gaussian_noise"),
        (
            {"conditions": [{"degradation": "gaussian_noise", "grid": {"variance": [2.0]}}]},
            r"conditions\[0\]: invalid value for 'gaussian_noise.variance': 2.0",
        ),
        (
            {"conditions": [{"degradation": "gaussian_blur", "grid": {"sigma": [1]}}]},
            "parameter of 'gaussian_blur'",
        ),
        (
            {
                "conditions": [
                    {"degradation": "gaussian_blur", "severities": [1]},
                    {"degradation": "gaussian_blur", "severities": [1]},
                ]
            },
            "duplicate condition ids",
        ),
    ],
)
def test_config_errors_name_the_problem(bad, message):
    with pytest.raises(ConfigError, match=message):
        cfg = parse_config(_cfg(**bad))
        expand_conditions(cfg.conditions)


def test_expansion_ids_axes_and_globs():
    from weakspot.degrade import get_spec, list_degradations

    cfg = parse_config(
        _cfg(
            conditions=[
                {"degradation": "gaussian_blur", "grid": {"sigma_px": [0.5, 2]}},
                {"degradation": "gaussian_noise", "severities": [1, 5]},
                {"degradation": "imagenet_c/*", "severities": [2]},
                {
                    "compose": [
                        {"name": "gaussian_blur", "sigma_px": 1},
                        {"name": "gaussian_noise", "variance": 0.01},
                    ]
                },
            ]
        )
    )
    conds, _ = expand_conditions(cfg.conditions)
    by = {c.condition_id: c for c in conds}
    c = by["gaussian_blur.sigma_px=0.5"]
    assert (c.axis, c.axis_value, c.axis_unit, c.family) == ("sigma_px", 0.5, "px", "blur")
    s5 = by["gaussian_noise.sev=5"]
    assert s5.severity == 5 and s5.axis_value == get_spec("gaussian_noise").severities[5]["variance"]
    n_imc = len(list_degradations("imagenet_c/*"))
    assert sum(cid.startswith("imagenet_c.") for cid in by) == n_imc > 0
    comp = by["gaussian_blur.sigma_px=1+gaussian_noise.variance=0.01"]
    assert comp.degradation == "gaussian_blur+gaussian_noise" and comp.family == "composite"
    with pytest.raises(ConfigError, match="reserved"):
        expand_conditions(
            parse_config(_cfg(conditions=[{"degradation": "gaussian_blur", "id": "clean"}])).conditions
        )


def _check_conditions(conds, where: str) -> None:
    """Every expanded condition: a unique id, a known family, registered steps; camera
    conditions come with the ``camera_reference`` condition (the default camera)."""
    from weakspot.degrade import get_spec, list_degradations

    ids = [c.condition_id for c in conds]
    assert len(ids) == len(set(ids)), f"{where}: duplicate condition ids"
    assert all(i and i != "clean" for i in ids), where
    known = set(list_degradations())
    for c in conds:
        assert c.steps and all(st.name in known for st in c.steps), f"{where}: {c.condition_id}"
        assert c.family, f"{where}: {c.condition_id} has no family"
    refs = [c for c in conds if c.condition_id == "camera_reference"]
    if any(c.family == "camera" and c.condition_id != "camera_reference" for c in conds):
        assert len(refs) == 1, f"{where}: camera conditions without a camera_reference"
        (ref,) = refs
        assert ref.family == "camera" and [s.name for s in ref.steps] == ["camera"]
        assert ref.steps[0].params == get_spec("camera").resolve(None)  # the default camera, nothing changed
    else:
        assert not refs, where


def _check_model_entry(m, where: str) -> str:
    """A ``model:`` entry names something loadable: a bundled model (no weights), a torchvision
    architecture, a timm name (checked by the slow test below: importing timm takes seconds) or a
    file whose suffix matches its source; preprocess is valid. Returns the resolved source."""
    import torchvision

    from weakspot.models import Preprocess, list_bundled

    name, source = m.name, m.source
    if source == "auto" and "/" in name and name.split("/", 1)[0] in ("bundled", "torchvision", "timm"):
        source, name = name.split("/", 1)
    elif source != "auto" and name.startswith(source + "/"):
        name = name.split("/", 1)[1]
    if source == "auto":
        if name.lower().endswith(".onnx"):
            source = "onnx"
        elif name.lower().endswith((".pt", ".ts", ".jit", ".torchscript")):
            source = "torchscript"
        elif name in list_bundled():
            source = "bundled"
        elif name in torchvision.models.list_models():
            source = "torchvision"
        else:
            source = "timm"
    if source == "bundled":
        assert name in list_bundled() and m.weights is None, where
    elif source == "torchvision":
        assert name in torchvision.models.list_models(), f"{where}: unknown torchvision model '{name}'"
    elif source == "timm":
        assert name and "/" not in name, where
    elif source == "onnx":
        assert name.lower().endswith(".onnx"), where
    else:
        assert name.lower().endswith((".pt", ".ts", ".jit", ".torchscript")), where
    if m.preprocess is not None:
        Preprocess(**m.preprocess)
    return source


def _check_data_entry(d, where: str, base: Path) -> None:
    """A ``data:`` entry: a known kind; the bundled kinds open offline with ≥ 1 image; the
    kinds that read the user's files name a root."""
    from weakspot.data import KINDS

    assert d.kind in KINDS, where
    if d.kind in ("foolbox", "mnist_5k", "skimage"):
        ds = open_dataset(
            d.root,
            d.kind,
            split=d.split,
            subset=d.subset,
            names=d.names,
            per_class=d.per_class,
            limit=d.limit,
            labels=d.labels,
        )
        assert len(ds) >= 1, where
        if d.limit is not None:
            assert len(ds) <= d.limit, where
    else:
        assert d.root, f"{where}: data kind '{d.kind}' needs a root"
    if isinstance(d.class_map, str):
        assert (base / d.class_map).is_file(), f"{where}: class_map file missing"


def test_example_configs_are_valid():
    files = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.toml"))
    assert len(files) >= 10
    for f in files:
        cfg = load_config(f)  # examples that need the user's files (own weights, ImageNetV2) still parse
        assert cfg.conditions, f.name
        for k, sw in enumerate(cfg.conditions):  # a misspelt degradation fails here
            conds, skipped = expand_conditions([sw], skip_unknown=False)
            assert not skipped and len([c for c in conds if c.condition_id != "camera_reference"]) >= 1, (
                f"{f.name}: conditions[{k}] expands to nothing"
            )
        conds, skipped = expand_conditions(cfg.conditions, skip_unknown=False)
        assert not skipped and len(conds) >= len(cfg.conditions), f.name
        _check_conditions(conds, f.name)
        _check_model_entry(cfg.model, f"{f.name}: model")
        for d in cfg.data if isinstance(cfg.data, list) else [cfg.data]:
            _check_data_entry(d, f"{f.name}: data", f.parent)


@pytest.mark.slow
def test_example_timm_models_exist():
    import timm

    names = timm.list_models()
    found = 0
    for f in sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.toml")):
        m = load_config(f).model
        if _check_model_entry(m, f.name) == "timm":
            found += 1
            assert m.name.split("/", 1)[-1] in names, f"{f.name}: unknown timm model '{m.name}'"
    assert found >= 1


def test_example_config_check_catches_a_misspelt_degradation(tmp_path):
    """The example check above is not vacuous: one wrong letter in a sweep fails it."""
    text = (ROOT / "examples" / "mnist_quick.yaml").read_text()
    assert "gaussian_blur" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("gaussian_blur", "gausian_blur"))
    with pytest.raises(ConfigError, match="gausian_blur"):
        expand_conditions(load_config(bad).conditions, skip_unknown=False)
    assert expand_conditions(load_config(bad).conditions, skip_unknown=True)[1] == ["gausian_blur"]


_IMAGENET_C_DEMO = [
    "gaussian_noise",
    "shot_noise",
    "defocus_blur",
    "motion_blur",
    "fog",
    "contrast",
    "brightness",
    "jpeg_compression",
    "pixelate",
]


@pytest.mark.parametrize("quick", [False, True])
def test_demo_configs_are_valid(quick):
    from weakspot.evaluate.demo import demo_configs
    from weakspot.models import list_bundled

    configs, missing = demo_configs(quick)
    assert missing == [], f"demo degradations not registered: {missing}"
    assert set(configs) == {"imagenet", "mnist"}
    expected = {
        "imagenet": {
            "camera": {"pixel_size", "exposure", "defocus", "camera"},
            "imagenet_c": {f"imagenet_c/{n}" for n in (_IMAGENET_C_DEMO[:2] if quick else _IMAGENET_C_DEMO)},
        },
        "mnist": {
            "sensor_defect": {"dead_pixels", "hot_pixels", "stuck_pixels"},
            "noise": {"gaussian_noise"},
            "blur": {"gaussian_blur"},
        },
    }
    # (camera axis, unit) of the physical sweeps
    axes = {
        "pixel_size": ("pixel_size_um", "µm"),
        "exposure": ("exposure_s", "s"),
        "defocus": ("defocus_diopters", "D"),
    }
    for key, raw in configs.items():
        cfg = parse_config(raw)
        assert cfg.model.name in list_bundled()
        _check_model_entry(cfg.model, f"demo {key}: model")
        for d in cfg.data if isinstance(cfg.data, list) else [cfg.data]:
            _check_data_entry(d, f"demo {key}: data", ROOT)
        conds, skipped = expand_conditions(cfg.conditions, skip_unknown=False)
        assert skipped == []
        _check_conditions(conds, f"demo {key}")
        fams: dict[str, set[str]] = {}
        for c in conds:
            fams.setdefault(c.family, set()).update(s.name for s in c.steps)
        assert fams == expected[key], f"demo {key}"
        for c in conds:
            if c.condition_id == "camera_reference":
                continue
            assert c.axis is not None and c.axis_value is not None, (
                c.condition_id
            )  # every sweep has an x axis
            name = c.steps[0].name
            if name in axes:
                assert (c.axis, c.axis_unit) == axes[name], c.condition_id
            if c.family == "imagenet_c":
                assert c.severity in ((3,) if quick else (1, 3, 5))
        n_camera = 3 if quick else 3 + 4 + 5
        n_c = len(expected["imagenet"]["imagenet_c"]) * (1 if quick else 3)
        assert len(conds) == {"imagenet": n_camera + n_c + 1, "mnist": 5 if quick else 17}[key]


# ----------------------------------------------------------------------------- keyed conditions
def test_apply_condition_keys_each_image_independently(photos):
    cond, _ = expand_conditions(
        parse_config(
            _cfg(conditions=[{"degradation": "gaussian_noise", "grid": {"variance": [0.04]}}])
        ).conditions
    )
    c = cond[0]
    ids = ["a", "b", "c", "d"]
    full = apply_condition(c, photos, ids, seed=3)
    # reference: each image alone with its own key keyed_seed(seed, image id, condition id),
    # the noise drawn from gaussian_noise's stream, written out by hand
    for i, iid in enumerate(ids):
        key = KeyedBatch([keyed_seed(3, iid, c.condition_id)])
        ref = (photos[i] + randn((1, *photos[i].shape), key, stream="gaussian_noise")[0] * 0.2).clamp(0, 1)
        assert torch.equal(full[i], ref)
    rev = apply_condition(c, photos.flip(0), ids[::-1], seed=3)  # order and batch size do not matter
    assert torch.equal(rev.flip(0), full)
    assert torch.equal(apply_condition(c, photos[2:3], ["c"], seed=3), full[2:3])
    assert not torch.equal(apply_condition(c, photos, ids, seed=4), full)
    mixed = degrade_images(c, [photos[0], photos[1, :, :100, :120]], ["a", "b"], seed=3)
    assert torch.equal(mixed[0], full[0]) and mixed[1].shape == (3, 100, 120)
    assert apply_condition(CLEAN_CONDITION, photos, ids, seed=3) is photos


def test_rows_from_probs_against_brute_force():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(12), size=30).astype(np.float32)
    labels = rng.integers(-1, 12, 30)
    clean = rng.integers(0, 12, 30)
    rows = rows_from_probs(p, np.arange(30), labels, clean)
    for i in range(30):
        order = sorted(range(12), key=lambda k: -p[i, k])[:5]
        assert rows["top5"][i] == order and rows["top1"][i] == order[0]
        assert rows["p_clean_top1"][i] == pytest.approx(p[i, clean[i]])
        if labels[i] < 0:
            assert np.isnan(rows["p_label"][i]) and not rows["correct1"][i] and not rows["correct5"][i]
        else:
            assert rows["p_label"][i] == pytest.approx(p[i, labels[i]])
            assert rows["correct1"][i] == (order[0] == labels[i]) and rows["correct5"][i] == (
                labels[i] in order
            )
    assert plan_units(5, ["x"], 2, done={("clean", 0)})[0] == Unit("x", 0, 0, 2)


def test_unit_results_do_not_depend_on_batch_size(cnn):
    ds = open_dataset(kind="mnist_5k", limit=30, seed=1)
    cond = expand_conditions(
        parse_config(
            _cfg(conditions=[{"degradation": "gaussian_noise", "grid": {"variance": [0.1]}}])
        ).conditions
    )[0][0]
    sh = ShardImages(
        np.arange(30), ds.image_ids, np.asarray(ds.labels), [ds[i][0] for i in range(30)], [None] * 30
    )
    u = Unit(cond.condition_id, 0, 0, 30)
    clean = evaluate_unit(cnn, sh, CLEAN_CONDITION, Unit("clean", 0, 0, 30), seed=0, batch_size=30)
    a = evaluate_unit(cnn, sh, cond, u, seed=0, batch_size=4, clean_top1=clean.top1, store_probs=True)
    b = evaluate_unit(cnn, sh, cond, u, seed=0, batch_size=30, clean_top1=clean.top1, store_probs=True)
    assert a.rows["top1"] == b.rows["top1"]
    np.testing.assert_allclose(a.probs.astype(np.float32), b.probs.astype(np.float32), atol=2e-3)


# ----------------------------------------------------------------------------- runs
def test_run_store_matches_the_model_run_directly(small_run, cnn):
    out, summary = small_run
    store = ResultsStore(out)
    images, preds = store.images(), store.predictions()
    n = len(images)
    assert n == 120 and summary.units_total == 3 * 4 and summary.images_evaluated == 4 * n
    assert len(preds) == 4 * n and not preds.duplicated(["condition_id", "image_index"]).any()
    ds = open_dataset(kind="mnist_5k", per_class=12, seed=7)
    assert images.image_id.tolist() == ds.image_ids and images.label.tolist() == ds.labels
    x = torch.stack([ds[i][0] for i in range(n)])
    clean_p = cnn.predict_proba(x).numpy()
    clean = preds[preds.condition_id == "clean"]
    assert clean.top1.tolist() == clean_p.argmax(1).tolist()
    np.testing.assert_allclose(store.probs("clean"), clean_p, rtol=1e-5, atol=1e-9)  # float32 storage
    conds = load_run_conditions(out)
    cid = "gaussian_noise.variance=0.2"
    seed = store.manifest()["seed"]
    deg = apply_condition(conds[cid], x, images.image_id.tolist(), seed)  # what others call to regenerate
    p = cnn.predict_proba(deg).numpy()
    rows = preds[preds.condition_id == cid]
    assert rows.top1.tolist() == p.argmax(1).tolist()
    np.testing.assert_allclose(rows.p_label, p[np.arange(n), images.label], atol=1e-5)
    np.testing.assert_allclose(rows.p_clean_top1, p[np.arange(n), clean_p.argmax(1)], atol=1e-5)
    assert (rows.clean_top1.to_numpy() == clean_p.argmax(1)).all()
    acc = summary.accuracy().set_index("condition_id")
    assert acc.loc["clean", "top1_acc"] >= 0.97 and acc.loc[cid, "top1_acc"] < acc.loc["clean", "top1_acc"]


def test_manifest_records_config_versions_and_hashes(small_run, cnn):
    import hashlib

    m = ResultsStore(small_run[0]).manifest()
    assert m["status"] == "complete" and m["units_done"] == m["units_total"] == 12
    assert m["seed"] == 7 and m["config"]["model"]["name"] == "mnist_cnn"
    assert m["model"]["weights_sha256"] == hashlib.sha256(Path(cnn.weights_path).read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", m["data"]["sha256"])  # a SHA-256 hex digest
    # the installed distribution's version (a local "+cu…"/"+cpu" tag may be in either spelling)
    assert m["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "torch" in m["versions"] and m["skipped"] == []
    assert "degradation" in m["order"] and m["sessions"][-1]["images_evaluated"] == 480


def test_resume_with_a_different_config_is_refused(small_run):
    with pytest.raises(ConfigError, match="holds a different run"):
        run_sweep(_cfg(seed=8), small_run[0], progress=False)


def test_bad_inputs_are_skipped_and_listed(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "v2"
    (root / "3").mkdir(parents=True)
    (root / "12").mkdir()
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "3" / "good.jpg")
    Image.fromarray(rgb).convert("CMYK").save(root / "3" / "cmyk.jpg")
    Image.fromarray(rgb[..., 0]).save(root / "3" / "gray.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(root / "3" / "deep16.png")
    Image.fromarray(rgb).convert("RGBA").save(root / "3" / "rgba.png")
    full = (root / "3" / "good.jpg").read_bytes()
    (root / "3" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "3" / "garbage.png").write_bytes(rng.bytes(300))
    Image.fromarray(rgb).save(root / "12" / "x.png")
    cfg = _cfg(data={"kind": "imagenetv2", "root": str(root)}, workers=1)
    summary = run_sweep(cfg, tmp_path / "out", progress=False)
    store = ResultsStore(tmp_path / "out")
    assert sorted(store.images().image_id) == ["3/cmyk", "3/deep16", "3/good", "3/gray", "3/rgba"]
    reasons = {s["image_id"]: s["reason"] for s in store.manifest()["skipped"]}
    assert set(reasons) == {"3/truncated", "3/garbage", "12/x"}
    assert "out of range" in reasons["12/x"] and "decode" in reasons["3/garbage"]
    assert len(store.predictions()) == 5 * 4 and summary.units_run == 4
    # a data set that does not belong to the model at all is a clear error
    (root / "3").rename(root / "400")
    with pytest.raises(DataError, match=r"does not belong to this model"):
        run_sweep(cfg, tmp_path / "out2", progress=False)


def test_cli_run_and_user_errors(tmp_path, capsys):
    from weakspot.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            _cfg(
                data={"kind": "mnist_5k", "limit": 40},
                conditions=[{"degradation": "gaussian_blur", "severities": [4]}],
            )
        )
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "gaussian_blur.sev=4" in out and "top-1 acc" in out
    assert main(["run", str(cfg), "--out", str(tmp_path / "pc"), "--per-class", "2", "--no-progress"]) == 0
    assert sorted(ResultsStore(tmp_path / "pc").images().label) == sorted(list(range(10)) * 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: mnist_cnn}\ndata: {kind: mnist_5k}\nbatch_size: -3\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o3")]) == 2


@pytest.mark.slow
def test_resume_after_sigkill_loses_nothing_and_duplicates_nothing(tmp_path):
    cfg = _cfg(
        data={"kind": "mnist_5k", "limit": 400},
        shard_size=20,
        batch_size=20,
        conditions=[
            {"degradation": "gaussian_noise", "grid": {"variance": [0.05, 0.2]}},
            {"degradation": "gaussian_blur", "grid": {"sigma_px": [1.0]}},
        ],
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "weakspot.cli", "run", str(path), "--out", str(out), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "predictions").glob("*/shard-*.parquet"))) >= 5:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = ResultsStore(out)
    done_before = store.done_units()
    assert 5 <= len(done_before) < 80
    before = store.predictions()
    summary = run_sweep(path, out, progress=False)
    assert summary.resumed and summary.units_run == 80 - len(done_before)
    after = store.predictions()
    assert len(after) == 400 * 4 and not after.duplicated(["condition_id", "image_index"]).any()
    assert not list(out.rglob("*.tmp"))
    # finished work was kept as it was, and the whole equals an uninterrupted run
    keep = after.merge(before[["condition_id", "image_index"]], on=["condition_id", "image_index"])
    assert keep.top1.tolist() == before.top1.tolist()
    ref = run_sweep(path, tmp_path / "ref", progress=False)
    assert ref.units_run == 80
    ref_pred = ResultsStore(tmp_path / "ref").predictions()
    import pandas as pd

    pd.testing.assert_frame_equal(after, ref_pred)  # every column, clean references included
    assert ResultsStore(out).damaged_units() == {}
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_conditions_round_trip_through_the_store(tmp_path, photos):
    from weakspot.evaluate.engine import _write_conditions

    conds, _ = expand_conditions(
        parse_config(
            _cfg(
                conditions=[
                    {"degradation": "gaussian_noise", "severities": [2]},
                    {
                        "compose": [
                            {"name": "gaussian_blur", "sigma_px": 1},
                            {"name": "gaussian_noise", "variance": 0.01},
                        ],
                        "id": "blur+noise",
                    },
                ]
            )
        ).conditions
    )
    _write_conditions(ResultsStore(tmp_path), conds)
    back = load_run_conditions(tmp_path)
    assert set(back) == {"clean", "gaussian_noise.sev=2", "blur+noise"}
    for c in conds:
        r = back[c.condition_id]
        assert (r.family, r.severity, r.axis, r.axis_value, r.degradation) == (
            c.family,
            c.severity,
            c.axis,
            c.axis_value,
            c.degradation,
        )
        ids = ["p0", "p1"]
        assert torch.equal(apply_condition(r, photos[:2], ids, 1), apply_condition(c, photos[:2], ids, 1))


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path):
    from weakspot.evaluate.engine import lock_run_dir

    held = lock_run_dir(tmp_path / "busy")
    try:
        with pytest.raises(ConfigError, match=f"being written by another weakspot run \\(pid {os.getpid()}"):
            run_sweep(_cfg(), tmp_path / "busy", progress=False)
    finally:
        held.close()
    lock_run_dir(tmp_path / "busy").close()  # free again once the holder is gone
