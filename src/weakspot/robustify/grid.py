"""The train × test evaluation grid.

Every test condition degrades the test set once, with one generator per image
keyed on ``(seed, image index, condition id)``: every model sees the very same
degraded pixels, and a sampled value never depends on batch size or order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from weakspot.random import keyed_generator
from weakspot.robustify.mix import Condition
from weakspot.robustify.train import as_float_images

__all__ = ["degrade_test_set", "predict", "evaluate_grid", "grid_table", "markdown_table"]


def degrade_test_set(
    images: torch.Tensor, condition: Condition, seed: int = 0, batch_size: int = 512
) -> torch.Tensor:
    """``images`` (uint8 or float) under ``condition`` → float ``(N, C, H, W)`` in [0, 1]."""
    mod = condition.module()
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = as_float_images(images[s : s + batch_size])
        if condition.range is None:
            out.append(x)
            continue
        gens = [keyed_generator(seed, "test", s + i, condition.id) for i in range(x.shape[0])]
        out.append(mod(x, gens))
    return torch.cat(out)


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512, device="cpu") -> torch.Tensor:
    """Predicted class ids ``(N,)`` int64 of ``model`` (eval mode) on float images in [0, 1]."""
    was = model.training
    model.eval()
    preds = []
    for s in range(0, images.shape[0], batch_size):
        x = as_float_images(images[s : s + batch_size]).to(device)
        preds.append(model(x).argmax(1).cpu())
    model.train(was)
    return torch.cat(preds)


def evaluate_grid(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    conditions: Sequence[Condition],
    *,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    device="cpu",
) -> pd.DataFrame:
    """Accuracy of every model under every test condition, overall and per class.

    Returns a long DataFrame with columns ``model``, ``test`` (condition spec),
    ``cls`` (``"all"`` or a class name), ``n``, ``correct``, ``accuracy``
    (fraction), ``ci95`` (normal-approximation half-width).
    """
    labels = labels.cpu()
    k = int(labels.max()) + 1 if class_names is None else len(class_names)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    rows = []
    for cond in conditions:
        x = degrade_test_set(images, cond, seed)
        for mname, model in models.items():
            ok = (predict(model, x, device=device) == labels).numpy()
            lab = labels.numpy()
            groups = [("all", np.ones_like(ok, dtype=bool))] + [(names[c], lab == c) for c in range(k)]
            for cname, sel in groups:
                n = int(sel.sum())
                if n == 0:
                    continue
                acc = float(ok[sel].mean())
                rows.append(
                    {
                        "model": mname,
                        "test": cond.spec,
                        "cls": cname,
                        "n": n,
                        "correct": int(ok[sel].sum()),
                        "accuracy": acc,
                        "ci95": 1.96 * (acc * (1 - acc) / n) ** 0.5,
                    }
                )
    return pd.DataFrame(rows)


def grid_table(df: pd.DataFrame, cls: str = "all") -> pd.DataFrame:
    """Pivot to models × test conditions of accuracy in percent (row/column order kept)."""
    sub = df[df["cls"] == cls]
    t = sub.pivot(index="model", columns="test", values="accuracy") * 100
    t = t.loc[list(dict.fromkeys(sub["model"])), list(dict.fromkeys(sub["test"]))]
    t.index.name, t.columns.name = "trained on \\ tested on", None
    return t


def markdown_table(t: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub markdown table of a numeric DataFrame (no extra dependency)."""
    head = [str(t.index.name or "")] + [str(c) for c in t.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in t.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)
