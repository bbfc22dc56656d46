"""The preflight (``weakspot check``) and the label mapping inside real runs.

References: the foolbox kind (labels from the file names) for the same 20 ImageNet photos,
the real MNIST CNN's clean accuracy on real digits with the right labels, byte-for-byte file
comparison for duplicates, and the analytic chance level of shuffled labels.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from weakspot.cli import main
from weakspot.data.labels import imagenet_wordnet_ids
from weakspot.errors import DataError
from weakspot.evaluate import ResultsStore, run_sweep
from weakspot.evaluate.check import (
    ChanceWatch,
    chance_level,
    duplicate_groups,
    near_chance_warning,
    preflight,
)
from weakspot.models.loaders import imagenet_class_names

NAMES = imagenet_class_names()


def _foolbox_imagenet() -> list[tuple[Path, int]]:
    folder = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations))) / "data"
    pat = re.compile(r"^imagenet_(\d+)_(\d+)\.jpg$")
    return sorted((f, int(pat.match(f.name).group(2))) for f in folder.iterdir() if pat.match(f.name))


@pytest.fixture(scope="module")
def imagenet_folders(tmp_path_factory):
    """foolbox's 20 ImageNet photos as <wnid>/… and as <class name>/… folders."""
    root = tmp_path_factory.mktemp("imagenet")
    wnids = imagenet_wordnet_ids()
    for f, y in _foolbox_imagenet():
        for sub, folder in (("wn", wnids[y]), ("nm", NAMES[y].replace("/", "_"))):
            (root / sub / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / sub / folder / f.name)
    return root


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    """60 real MNIST digits (6 per class) as PNGs in <digit>/ folders, and the same files
    in <(digit + 1) mod 10>/ folders: labels that do not match the images."""
    from weakspot.data import open_dataset

    ds = open_dataset(kind="mnist_5k")
    x, y = ds.images, np.asarray(ds.labels)
    root = tmp_path_factory.mktemp("digits")
    n = dict.fromkeys(range(10), 0)
    for img, lab in zip(x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int), strict=True):
        if n[lab] == 6:
            continue
        for sub, folder in (("right", lab), ("shifted", (lab + 1) % 10)):
            (root / sub / str(folder)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / sub / str(folder) / f"{lab}_{n[lab]}.png")
        n[lab] += 1
        if all(v == 6 for v in n.values()):
            break
    return root


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_wordnet_and_name_folders_give_the_foolbox_clean_top1(imagenet_folders, tmp_path):
    """Acceptance: the 20 photos as WordNet-ID folders and as class-name folders are scored
    exactly like the foolbox kind (labels from the file names): 0.85 with EfficientNet-Lite0."""
    base = {"model": {"name": "efficientnet_lite0"}, "workers": 0, "conditions": []}
    runs = {}
    for key, data in (
        ("foolbox", {"kind": "foolbox", "subset": "imagenet"}),
        ("wn", {"root": str(imagenet_folders / "wn")}),
        ("nm", {"root": str(imagenet_folders / "nm")}),
    ):
        run_sweep({**base, "data": data}, tmp_path / key, progress=False)
        st = ResultsStore(tmp_path / key)
        pred = st.predictions().merge(st.images()[["image_index", "image_id"]], on="image_index")
        pred["photo"] = [Path(i).name for i in pred.image_id]
        runs[key] = pred.set_index("photo").sort_index()
    ref = runs["foolbox"]
    assert ref.correct1.mean() == pytest.approx(0.85)
    for key in ("wn", "nm"):
        assert list(runs[key].index) == list(ref.index)
        assert runs[key].label.tolist() == ref.label.tolist()
        assert runs[key].top1.tolist() == ref.top1.tolist()
        assert runs[key].correct1.mean() == pytest.approx(0.85)
    lm = ResultsStore(tmp_path / "wn").manifest()["data"]["label_map"]
    assert lm["mode"] == "wordnet"
    wn = imagenet_wordnet_ids()
    for e in lm["folders"]:
        assert wn[e["index"]] == e["folder"] and e["class_name"] == NAMES[e["index"]]
    assert {e["folder"]: e["n_images"] for e in lm["folders"]}[wn[609]] == 2  # the two jeeps
    assert ResultsStore(tmp_path / "foolbox").manifest()["data"]["label_map"] is None


def test_preflight_reports_mapping_sample_and_eta(imagenet_folders):
    cfg = {
        "model": {"name": "efficientnet_lite0"},
        "data": {"root": str(imagenet_folders / "wn")},
        "conditions": [{"degradation": "gaussian_blur", "severities": [1, 3]}],
    }
    rep = preflight(cfg, sample=64, eta_images=1)
    assert rep.model["name"] == "efficientnet_lite0" and rep.model["input_size"] == [224, 224]
    assert rep.label_map["mode"] == "wordnet" and len(rep.label_map["folders"]) == 19
    assert rep.sample_labelled == 20 and rep.sample_top1 == pytest.approx(0.85)
    assert rep.chance == pytest.approx(1 / 19) and rep.duplicates == []
    assert not any("near chance" in w for w in rep.warnings)
    assert any("19 of 19 classes have fewer than 5 images" in w for w in rep.warnings)
    # the ETA is the stated per-image costs times images × conditions
    tm = rep.timing
    assert tm["conditions"] == 3 and tm["images"] == 20
    want = 20 * (
        tm["decode_s_per_image"] + 3 * tm["forward_s_per_image"] + sum(tm["degrade_s_per_image"].values())
    )
    assert rep.eta_s == pytest.approx(want) and rep.eta_s > 0
    assert set(tm["degrade_s_per_image"]) == {"gaussian_blur.sev=1", "gaussian_blur.sev=3"}
    small = preflight(cfg, sample=5, eta=False)
    assert small.sample_labelled == 5 and small.eta_s is None


def test_shuffled_labels_warn_near_chance_in_check_and_run(digit_folders, tmp_path, capsys):
    cfg = {"model": {"name": "mnist_cnn"}, "workers": 0, "conditions": []}
    right = preflight({**cfg, "data": {"root": str(digit_folders / "right")}}, eta=False)
    assert right.label_map["mode"] == "index" and right.sample_top1 >= 0.9
    assert right.warnings == []
    wrong = preflight({**cfg, "data": {"root": str(digit_folders / "shifted")}}, eta=False)
    # each image sits in the next digit's folder: top-1 at most (1 - right's top-1), far below 2/10
    assert wrong.sample_top1 <= 1 - right.sample_top1 + 1e-9 and wrong.chance == pytest.approx(0.1)
    assert any("near chance" in w and "label" in w for w in wrong.warnings)
    # weakspot run says the same once the clean condition is computed
    path = _write(tmp_path / "shifted.yaml", {**cfg, "data": {"root": str(digit_folders / "shifted")}})
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    err = _flat(capsys.readouterr().err)
    assert "near chance" in err and "labels probably do not match" in err
    path = _write(tmp_path / "right.yaml", {**cfg, "data": {"root": str(digit_folders / "right")}})
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_near_chance_threshold_and_watch():
    assert chance_level([3, 3, 5, -1]) == pytest.approx(0.5) and chance_level([-1]) is None
    assert near_chance_warning(2, 10, 0.1) is not None  # 0.2 = 2 × chance
    assert near_chance_warning(3, 10, 0.1) is None
    assert near_chance_warning(7, 10, 0.5) is not None and near_chance_warning(8, 10, 0.5) is None  # (1+c)/2
    assert near_chance_warning(0, 0, 0.1) is None
    w = ChanceWatch([0, 1, 2, 3] * 10, min_images=8)
    w.add({"label": [0, 1, 2, 3], "correct1": [False] * 4})
    assert not w.done
    w.add({"label": [0, 1, -1, 3], "correct1": [True, False, False, False]})
    assert not w.done  # 7 labelled so far
    w.add({"label": [0], "correct1": [False]})
    assert w.done and "1/8" in w.warning


def test_duplicates_found_by_content(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)
    for folder, name, img in (
        ("0", "a.png", a),
        ("1", "a_copy.png", a),
        ("2", "a_again.png", a),
        ("1", "b.png", b),
        ("2", "b.png", b),
        ("3", "c.png", 255 - a),
    ):
        (tmp_path / "d" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "d" / folder / name)
    files = sorted(p for p in (tmp_path / "d").rglob("*.png"))
    # reference: byte-for-byte comparison of every pair
    groups: list[list[str]] = []
    for f in files:
        rel = f.relative_to(tmp_path / "d").with_suffix("").as_posix()
        for g in groups:
            if filecmp.cmp(tmp_path / "d" / (g[0] + ".png"), f, shallow=False):
                g.append(rel)
                break
        else:
            groups.append([rel])
    ref = sorted([g for g in groups if len(g) > 1], key=lambda g: (-len(g), g[0]))
    rep = preflight({"model": {"name": "mnist_cnn"}, "data": {"root": str(tmp_path / "d")}}, eta=False)
    assert rep.duplicates == ref == [["0/a", "1/a_copy", "2/a_again"], ["1/b", "2/b"]]
    assert any("2 groups of identical files (3 extra copies" in w for w in rep.warnings)
    assert duplicate_groups(["x", "y", "x", ""], ["i", "j", "k", "l"]) == [["i", "k"]]
    # a run finds them while probing, prints the warning and keeps it in the manifest
    run_sweep(
        {
            "model": {"name": "mnist_cnn"},
            "data": {"root": str(tmp_path / "d")},
            "workers": 0,
            "conditions": [],
        },
        tmp_path / "run",
        progress=False,
    )
    warns = ResultsStore(tmp_path / "run").manifest()["data"]["warnings"]
    assert any("2 groups of identical files" in w for w in warns)
    assert any("4 of 4 classes have fewer than 5 images" in w for w in warns)


@pytest.mark.slow
def test_cli_check_output_json_and_errors(imagenet_folders, tmp_path, capsys):
    cfg = _write(
        tmp_path / "c.yaml",
        {
            "model": {"name": "efficientnet_lite0"},
            "data": {"root": "imgs"},
            "conditions": [{"degradation": "gaussian_noise", "severities": [2]}],
        },
    )
    shutil.copytree(imagenet_folders / "nm", tmp_path / "imgs")  # a root relative to the config
    (tmp_path / "imgs" / "Bullmastiff").rename(tmp_path / "imgs" / "bull_mastiff")  # a WordNet synonym
    assert main(["check", str(cfg), "--sample", "8", "--json", str(tmp_path / "r.json")]) == 0
    out = _flat(capsys.readouterr().out)
    for text in (
        "efficientnet_lite0",
        "label mapping (names)",
        "bull_mastiff",
        "Bullmastiff",
        "synonym",
        "clean top-1",
        "seeded sample of 8",
        "ETA",
        "20 images × 2 conditions",
        "per-class claims",
    ):
        assert text in out, text
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["sample_labelled"] == 8 and len(rep["sample_ids"]) == 8
    # an unmatched folder, an ambiguous one, a class map that pins it
    (tmp_path / "imgs" / "holidays").mkdir()
    shutil.copy(_foolbox_imagenet()[0][0], tmp_path / "imgs" / "holidays" / "x.jpg")
    assert main(["check", str(cfg), "--no-eta"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "folder 'holidays' matches none" in err and "Traceback" not in err
    (tmp_path / "imgs" / "holidays").rename(tmp_path / "imgs" / "crane")
    assert main(["check", str(cfg), "--no-eta"]) == 2
    assert "134 (crane bird), 517 (construction crane)" in _flat(capsys.readouterr().err)
    (tmp_path / "map.csv").write_text("folder,index\ncrane,517\n")
    cfg2 = _write(
        tmp_path / "c2.yaml",
        {**yaml.safe_load(cfg.read_text()), "data": {"root": "imgs", "class_map": "map.csv"}},
    )
    assert main(["check", str(cfg2), "--no-eta", "--sample", "4"]) == 0
    assert "construction crane" in capsys.readouterr().out
    with pytest.raises(DataError, match="class_map file not found"):
        preflight(
            {
                "model": {"name": "mnist_cnn"},
                "data": {"root": str(tmp_path / "imgs"), "class_map": str(tmp_path / "no.yaml")},
            }
        )


def test_labels_none_and_sorted_in_a_run(digit_folders, tmp_path):
    cfg = {"model": {"name": "mnist_cnn"}, "workers": 0, "conditions": []}
    run_sweep(
        {**cfg, "data": {"root": str(digit_folders / "right"), "labels": "none"}},
        tmp_path / "n",
        progress=False,
    )
    st = ResultsStore(tmp_path / "n")
    assert set(st.images().label) == {-1} and st.manifest()["data"]["label_map"]["mode"] == "none"
    # 'sorted' on folders 0..9 is the identity here: the same labels as the index mode
    run_sweep(
        {**cfg, "data": {"root": str(digit_folders / "right"), "labels": "sorted"}},
        tmp_path / "s",
        progress=False,
    )
    lab = ResultsStore(tmp_path / "s").images()
    assert [int(Path(i).parent.name) for i in lab.image_id] == lab.label.tolist()


def test_data_of_another_model_is_an_error_not_a_warning(tmp_path):
    for folder in ("400", "401", "3"):
        (tmp_path / "d" / folder).mkdir(parents=True)
        Image.fromarray(np.full((28, 28), 40, np.uint8)).save(tmp_path / "d" / folder / "x.png")
    with pytest.raises(DataError, match=r"2 of 3 labels are out of range for mnist_cnn .* does not belong"):
        preflight({"model": {"name": "mnist_cnn"}, "data": {"root": str(tmp_path / "d")}}, eta=False)
