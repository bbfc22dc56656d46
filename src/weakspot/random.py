"""Explicit, keyed randomness.

Every random degradation takes ``generator=``, which may be

* ``None`` – a fresh non-deterministic generator (interactive use only);
* an ``int`` seed;
* one :class:`torch.Generator` for the whole batch;
* a sequence of ``B`` generators, one per image. Sweeps use this form with
  :func:`keyed_generator` so that a sampled value depends only on
  ``(seed, image id, condition)``, never on batch size, order or sharding.

Samples are always drawn on the CPU with the generator and then moved to the
images' device, so the same seed gives the same bytes on CPU and GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Union

import torch

GeneratorLike = Union[None, int, torch.Generator, Sequence[torch.Generator]]

__all__ = [
    "GeneratorLike",
    "keyed_seed",
    "keyed_generator",
    "as_generators",
    "rand",
    "randn",
    "randint",
    "poisson",
]


def keyed_seed(*keys: object) -> int:
    """A 63-bit seed from any keys (stable across runs, platforms and Python versions)."""
    text = "\x1f".join(repr(k) if not isinstance(k, str) else k for k in keys)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def keyed_generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded from ``keys``, e.g. ``(seed, image_id, condition_id)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(keyed_seed(*keys))
    return g


def as_generators(generator: GeneratorLike, batch: int) -> list[torch.Generator] | torch.Generator:
    """Normalise ``generator`` to one CPU generator or a list of ``batch`` generators."""
    if generator is None:
        g = torch.Generator(device="cpu")
        g.seed()
        return g
    if isinstance(generator, int) and not isinstance(generator, bool):
        g = torch.Generator(device="cpu")
        g.manual_seed(generator)
        return g
    if isinstance(generator, torch.Generator):
        return generator
    gens = list(generator)
    if len(gens) != batch:
        from weakspot.errors import InvalidParameterError

        raise InvalidParameterError(
            "generator", f"{len(gens)} generators", f"one generator or exactly {batch} (the batch size)"
        )
    return gens


def _draw(fn, shape, generator: GeneratorLike, device, dtype, **kw) -> torch.Tensor:
    gens = as_generators(generator, shape[0])
    if isinstance(gens, torch.Generator):
        if gens.device.type != "cpu":
            out = fn(*shape, generator=gens, device=gens.device, dtype=dtype, **kw)
        else:
            out = fn(*shape, generator=gens, dtype=dtype, **kw)
    else:
        out = torch.stack([fn(*shape[1:], generator=g, dtype=dtype, **kw) for g in gens])
    return out.to(device)


def rand(shape: Sequence[int], generator: GeneratorLike = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) samples of ``shape`` (first dim = batch)."""
    return _draw(torch.rand, tuple(shape), generator, device, dtype)


def randn(shape: Sequence[int], generator: GeneratorLike = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal samples of ``shape`` (first dim = batch)."""
    return _draw(torch.randn, tuple(shape), generator, device, dtype)


def random_bits(shape: Sequence[int], generator: GeneratorLike = None, device=None) -> torch.Tensor:
    """int32 words of 31 uniform random bits (bit 31 is 0) of ``shape`` (first dim = batch):
    one generator draw a word, for callers that cut several small codes from each."""

    def fill(*size, generator, dtype, device=None):
        return torch.empty(size, dtype=dtype, device=device).random_(generator=generator)

    return _draw(fill, tuple(shape), generator, device, torch.int32)


def randint(
    low: int, high: int, shape: Sequence[int], generator: GeneratorLike = None, device=None
) -> torch.Tensor:
    """Integers in ``[low, high)`` of ``shape`` (first dim = batch), int64."""
    shape = tuple(shape)
    gens = as_generators(generator, shape[0])
    if isinstance(gens, torch.Generator):
        out = torch.randint(low, high, shape, generator=gens, device=gens.device)
    else:
        out = torch.stack([torch.randint(low, high, shape[1:], generator=g) for g in gens])
    return out.to(device)


def poisson(rate: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    """Poisson samples with mean ``rate`` (exact at low counts), same shape/device as ``rate``."""
    gens = as_generators(generator, rate.shape[0])
    r = rate.detach().to("cpu", torch.float64)
    if isinstance(gens, torch.Generator):
        out = torch.poisson(r, generator=gens)
    else:
        out = torch.stack([torch.poisson(r[i], generator=g) for i, g in enumerate(gens)])
    return out.to(device=rate.device, dtype=rate.dtype)
