"""The loaded-model contract every layer uses (Grad-CAM, robust training, engines)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from weakspot.models.preprocess import Preprocess

__all__ = ["LoadedModel", "file_sha256"]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (weights and data fingerprints in the run manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@dataclass
class LoadedModel:
    """A classifier ready to evaluate.

    Attributes:
        module: the network (``nn.Module`` in eval mode) mapping the preprocessed input
            ``(B, C, H, W)`` to logits ``(B, num_classes)``.
        preprocess_config: :class:`Preprocess` (resize, crop, normalisation, channels).
        class_names: one name per class index.
        name: a short name (``efficientnet_lite0``, ``torchvision/resnet18`` …).
        target_layer: the module whose activations Grad-CAM uses (the last conv block,
            after its activation); ``None`` where there is none (ONNX).
        weights_path, weights_sha256: the weights file and its hash (``None`` if none).
        source: ``bundled``, ``torchvision``, ``timm``, ``torchscript`` or ``onnx``.
        differentiable: whether gradients flow through ``module`` (not for ONNX).
    """

    module: nn.Module
    preprocess_config: Preprocess
    class_names: list[str]
    name: str
    target_layer: nn.Module | None = None
    weights_path: str | None = None
    weights_sha256: str | None = None
    source: str = "custom"
    differentiable: bool = True
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the model input in pixels."""
        return self.preprocess_config.size

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, C, H, W)`` float [0, 1] at any size (or a list of ``(C, H, W)``) →
        normalised model input ``(B, channels, *input_size)`` on the model's device."""
        x = self.preprocess_config(images)
        dev = self.device
        return x.to(dev) if x.device != dev else x

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images in [0, 1] (preprocessing included)."""
        return self.module(self.preprocess(images))

    @torch.inference_mode()
    def predict_proba(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities ``(B, num_classes)`` float32 on the CPU."""
        return torch.softmax(self(images).float(), dim=1).cpu()

    def to(self, device: str | torch.device) -> LoadedModel:
        self.module.to(device)
        return self

    def describe(self) -> dict:
        """What the run manifest records about the model."""
        return {
            "name": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "preprocess": self.preprocess_config.to_dict(),
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "notes": self.notes,
        }
