"""Chain degradations: ``compose([...])`` applies each in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from weakspot.degrade.registry import Degradation, get_degradation
from weakspot.errors import InvalidParameterError
from weakspot.random import GeneratorLike, batch_keys

StepLike = Degradation | nn.Module | str | tuple | Mapping[str, Any]

__all__ = ["Compose", "compose", "as_degradation"]


def as_degradation(step: StepLike) -> nn.Module:
    """A :class:`Degradation` from a module, a name, ``(name, params)`` or ``{"name": ..., **params}``."""
    if isinstance(step, nn.Module):
        return step
    if isinstance(step, str):
        return get_degradation(step)
    if isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str):
        params = dict(step[1])
        return get_degradation(step[0], **params)
    if isinstance(step, Mapping) and "name" in step:
        params = {k: v for k, v in step.items() if k != "name"}
        return get_degradation(step["name"], **params)
    raise InvalidParameterError(
        "steps", step, "a Degradation, a name, (name, params) or {'name': ..., **params}"
    )


class Compose(nn.Module):
    """Apply ``steps`` in order. The batch's keys (:func:`weakspot.random.batch_keys`) are
    threaded through all steps, step ``j > 0`` folded with ``("compose", j)`` so that two steps
    that draw from the same named stream (e.g. noise twice) get independent values, and a
    one-step composition draws exactly what the step alone draws."""

    def __init__(self, steps: Sequence[StepLike]):
        super().__init__()
        self.steps = nn.ModuleList(as_degradation(s) for s in steps)

    @property
    def name(self) -> str:
        return "+".join(getattr(s, "name", type(s).__name__) for s in self.steps)

    def forward(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        keys = batch_keys(generator, images.shape[0])
        for j, step in enumerate(self.steps):
            images = step(images, keys if j == 0 else keys.fold("compose", j))
        return images

    def __call__(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        return super().__call__(images, generator)


def compose(steps: Sequence[StepLike]) -> Compose:
    """Chain any registered degradations (or modules with the same call signature).

    Example:
        >>> import torch, weakspot
        >>> chain = weakspot.compose(
        ...     [("gaussian_blur", {"sigma_px": 1.0}), ("gaussian_noise", {"variance": 0.01})]
        ... )
        >>> chain(torch.rand(1, 3, 16, 16), generator=0).shape
        torch.Size([1, 3, 16, 16])
    """
    return Compose(steps)
