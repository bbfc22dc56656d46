"""Model loading: a classifier with its preprocessing, class names and Grad-CAM layer.

Example:
    >>> from weakspot.models import bundled
    >>> m = bundled("mnist_cnn")
    >>> m.num_classes, m.input_size
    (10, (28, 28))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from weakspot.errors import ModelLoadError
from weakspot.models.base import LoadedModel, file_sha256
from weakspot.models.bundled import LITE0_PREPROCESS, MNIST_PREPROCESS, bundled, list_bundled
from weakspot.models.loaders import (
    DEFAULT_PREPROCESS,
    find_target_layer,
    imagenet_class_names,
    load_onnx,
    load_state_dict_file,
    load_timm,
    load_torchscript,
    load_torchvision,
    onnx_default_preprocess,
)
from weakspot.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, preprocess_images

__all__ = [
    "LoadedModel",
    "Preprocess",
    "load_model",
    "bundled",
    "list_bundled",
    "load_torchvision",
    "load_timm",
    "load_torchscript",
    "load_onnx",
    "load_state_dict_file",
    "imagenet_class_names",
    "find_target_layer",
    "preprocess_images",
    "file_sha256",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_PREPROCESS",
    "MNIST_PREPROCESS",
    "DEFAULT_PREPROCESS",
    "onnx_default_preprocess",
]

SOURCES = ("auto", "bundled", "torchvision", "timm", "torchscript", "onnx")


def load_model(
    name: str,
    *,
    source: str = "auto",
    weights: str | Path | None = None,
    num_classes: int | None = None,
    class_names: str | Sequence[str] | None = None,
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Load a classifier; nothing is downloaded.

    Args:
        name: a bundled name (``efficientnet_lite0``, ``mnist_cnn``), an architecture
            (``resnet18``, ``torchvision/resnet18``, ``timm/convnext_tiny``) or a file
            (``model.onnx``, ``model.pt``/``.ts`` TorchScript).
        source: ``auto`` (from the name), ``bundled``, ``torchvision``, ``timm``,
            ``torchscript`` or ``onnx``.
        weights: state-dict/checkpoint file (torchvision, timm) or a torchvision weights
            enum name already in ``$TORCH_HOME/hub/checkpoints``.
        num_classes: outputs of the classifier head (default: from the weights).
        class_names: list, JSON/text file or ``"imagenet"`` (default: ImageNet for 1000).
        preprocess: :class:`Preprocess` or its fields as a dict, to override the default.
        device: ``cpu``, ``cuda`` …
    """
    if source not in SOURCES:
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError("source", source, ", ".join(SOURCES))
    pre = Preprocess(**preprocess) if isinstance(preprocess, Mapping) else preprocess
    arch = name
    if source == "auto":
        low = name.lower()
        if "/" in name and name.split("/", 1)[0] in ("torchvision", "timm", "bundled"):
            source, arch = name.split("/", 1)
        elif low.endswith(".onnx"):
            source = "onnx"
        elif (
            low.endswith((".ts", ".torchscript", ".pt", ".jit")) and Path(name).is_file() and weights is None
        ):
            source = "torchscript"
        elif name.replace("-", "_").lower() in list_bundled():
            source = "bundled"
        else:
            import torchvision

            source = "torchvision" if name in torchvision.models.list_models() else "timm"
    elif "/" in name and name.split("/", 1)[0] == source:
        arch = name.split("/", 1)[1]
    kw: dict[str, Any] = dict(num_classes=num_classes, class_names=class_names, preprocess=pre)
    if source == "bundled":
        model = bundled(arch)
        if pre is not None:
            model.preprocess_config = pre
        if weights is not None:
            raise ModelLoadError(f"the bundled model '{arch}' carries its own weights; do not pass 'weights'")
    elif source == "torchvision":
        model = load_torchvision(arch, weights, **kw)
    elif source == "timm":
        model = load_timm(arch, weights, **kw)
    elif source == "torchscript":
        model = load_torchscript(arch, **kw)
    else:
        model = load_onnx(arch, **kw)
    if device != "cpu":
        model.to(device)
    return model
