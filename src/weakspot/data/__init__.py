"""Data: image files and data sets (``open_dataset`` is the one entry point)."""

from weakspot.data.datasets import (
    IMAGE_SUFFIXES,
    KINDS,
    ArrayDataset,
    ConcatImageDataset,
    FileDataset,
    ImageDataset,
    fingerprint,
    open_dataset,
    read_idx,
    safe_unpickle,
    subset_indices,
)
from weakspot.data.imageio import load_image, save_image, to_pil

__all__ = [
    "open_dataset",
    "ImageDataset",
    "FileDataset",
    "ArrayDataset",
    "ConcatImageDataset",
    "subset_indices",
    "fingerprint",
    "read_idx",
    "safe_unpickle",
    "load_image",
    "save_image",
    "to_pil",
    "KINDS",
    "IMAGE_SUFFIXES",
]
