"""One view of "a classifier" for the saliency methods: a LoadedModel or a plain module.

Saliency is computed on the model's *view* of the image: the ``(B, C, h, w)``
[0, 1] image after the model's channel adaptation, resize and crop but before
normalisation. Maps therefore line up pixel for pixel with :func:`model_view`,
which is also where patch quality maps are computed for the spatial relations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from weakspot.errors import InvalidParameterError

__all__ = ["Net", "as_net", "model_view", "find_target_layer"]


@dataclass
class Net:
    """``view``: images in [0, 1] (a batch, or a list of ``(C, H, W)`` images) → model view
    in [0, 1]; ``normalize``: view → network input; ``module``: network input → logits;
    ``target_layer``: Grad-CAM layer or None."""

    module: nn.Module
    view: Callable[[torch.Tensor | Sequence[torch.Tensor]], torch.Tensor]
    normalize: Callable[[torch.Tensor], torch.Tensor]
    target_layer: nn.Module | None

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def logits_of_view(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.normalize(x.to(self.device)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _as_batch(x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A plain module's view: the batch itself, or a list of same-size images stacked."""
    return x if isinstance(x, torch.Tensor) else torch.stack(list(x))


def as_net(model, preprocess: Callable | None = None, target_layer: nn.Module | None = None) -> Net:
    """Wrap ``model``: a :class:`~weakspot.models.LoadedModel` (anything with ``module``
    and ``preprocess_config``) or an ``nn.Module`` taking ``preprocess(images)``."""
    if isinstance(model, Net):
        return model
    cfg = getattr(model, "preprocess_config", None)
    if cfg is not None and hasattr(model, "module"):
        plain = dataclasses.replace(cfg, mean=(0.0,) * cfg.channels, std=(1.0,) * cfg.channels)
        mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
        std = torch.tensor(cfg.std).view(1, -1, 1, 1)

        def normalize(x: torch.Tensor) -> torch.Tensor:
            return (x - mean.to(x)) / std.to(x)

        return Net(model.module, plain, normalize, target_layer or getattr(model, "target_layer", None))
    if isinstance(model, nn.Module):
        return Net(model, _as_batch, preprocess or _identity, target_layer)
    raise InvalidParameterError(
        "model",
        type(model).__name__,
        "a weakspot LoadedModel or a torch.nn.Module",
        "load one with weakspot.models.load_model(...) or weakspot.models.bundled(name)",
    )


def model_view(model, images: torch.Tensor) -> torch.Tensor:
    """The ``(B, C, h, w)`` image in [0, 1] as the model sees it (resized/cropped, not normalised)."""
    return as_net(model).view(images)


def find_target_layer(net: Net, example: torch.Tensor) -> nn.Module:
    """The last leaf module (in execution order), pooling layers excluded, with a spatial
    4-D output larger than 1×1: the last convolution's activation, Grad-CAM's usual choice
    (e.g. ``layer4[-1].relu`` after the residual sum in a torchvision ResNet)."""
    found: list[nn.Module] = []
    hooks = []

    def hook(mod, _inp, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
            found.append(mod)

    pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d)
    for m in net.module.modules():
        if m is not net.module and not list(m.children()) and not isinstance(m, pools):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net.logits_of_view(example[:1])
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise InvalidParameterError(
            "target_layer",
            None,
            "a module with a (B, C, h, w) output",
            "this model has no spatial layer; use occlusion() instead of Grad-CAM",
        )
    return found[-1]
