"""Opening what a :class:`~weakspot.evaluate.config.RunConfig` names: its data sets and its model,
and decoding images in worker processes without ever raising for a bad file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from weakspot.errors import WeakspotError

__all__ = ["LoadItems", "open_run_data", "load_run_model", "has_files", "image_loader"]


class LoadItems(torch.utils.data.Dataset):
    """Dataset wrapper used by worker processes: never raises for a bad file."""

    def __init__(self, ds, ds_index: Sequence[int], probe: bool = False):
        self.ds, self.ds_index, self.probe = ds, list(ds_index), probe

    def __len__(self) -> int:
        return len(self.ds_index)

    def __getitem__(self, i: int):
        j = self.ds_index[i]
        try:
            img = self.ds.load(j)
            err = None
        except WeakspotError as exc:
            img, err = None, str(exc)
        except Exception as exc:  # a decoder bug must not kill the run
            img, err = None, f"{type(exc).__name__}: {exc}"
        if self.probe:
            digest = hashlib.sha1(self.ds.raw_bytes(j)).hexdigest()
            shape = tuple(img.shape) if img is not None else None
            return i, shape, digest, err
        return i, img, err


def _collate_list(items):
    return items


def image_loader(dataset, batches: list[list[int]], workers: int):
    """A DataLoader yielding, per batch of indices, the list of ``dataset[i]`` items
    (decoded in ``workers`` processes; 0 = in this process)."""
    workers = min(workers, len(batches))
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate_list,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def open_run_data(cfg):
    """The (concatenated) data set a :class:`RunConfig` names, subsets applied."""
    from weakspot.data import ConcatImageDataset, open_dataset

    parts = [
        open_dataset(
            d.root,
            d.kind,
            split=d.split,
            subset=d.subset,
            names=d.names,
            per_class=d.per_class,
            limit=d.limit,
            seed=cfg.seed,
            labels=d.labels,
            class_map=d.class_map,
        )
        for d in cfg.data_list
    ]
    return parts[0] if len(parts) == 1 else ConcatImageDataset(parts)


def load_run_model(cfg, device: str | None = None):
    """The :class:`~weakspot.models.LoadedModel` a :class:`RunConfig` names, on ``device``
    (default: the config's; ``"auto"`` = CUDA when available)."""
    from weakspot.models import load_model

    m = cfg.model
    device = m.device if device is None else device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(
        m.name,
        source=m.source,
        weights=m.weights,
        num_classes=m.num_classes,
        class_names=m.class_names,
        preprocess=m.preprocess,
        device=device,
    )
    if m.channels_last:
        model.module.to(memory_format=torch.channels_last)
    return model


def has_files(ds) -> bool:
    """Whether any part of ``ds`` decodes files (worth worker processes; arrays are not)."""
    from weakspot.data import FileDataset

    if isinstance(ds, FileDataset):
        return True
    return any(has_files(p) for p in getattr(ds, "parts", [])) or (hasattr(ds, "base") and has_files(ds.base))
