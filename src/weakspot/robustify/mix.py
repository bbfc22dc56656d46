"""Random degradation for training: per image, one registry degradation at a sampled level.

A :class:`LevelRange` names a registry degradation, the parameter to vary and
its range (``gaussian_noise`` variance 0.001–0.05, ``gaussian_blur`` σ 0.4–1.0 px,
``dead_pixels`` 1–10 pixels …). A :class:`RandomDegradation` draws, for every
image, whether it stays clean, which range it gets and the level inside the
range, all through an explicit generator (:mod:`weakspot.random`), then applies
the registry functions to the images grouped by (degradation, level): one
batched call per group, never a Python loop over images.

Levels are drawn on a grid of ``levels`` evenly spaced values per range (16 by
default, every integer for integer parameters): fine enough to cover the range,
coarse enough that a batch needs few calls.

Text form (CLI ``--degrade``/``--test``), parsed by :func:`parse_spec`::

    gaussian_noise:variance=0.001..0.05      a range: level drawn per image
    gaussian_blur:sigma_px=1.5               a fixed level
    gaussian_blur@4                          severity 4 of the registry table
    imagenet_c/fog@0..5                      severity drawn per image, 0 = clean
    imagenet_c/*@1..5                        (parse_specs) every matching entry
    gaussian_blur                            registry default
    clean                                    no degradation
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weakspot.degrade.registry import Degradation, get_degradation, get_spec
from weakspot.errors import InvalidParameterError
from weakspot.random import GeneratorLike, as_generators, rand

__all__ = [
    "LevelRange",
    "SeverityRange",
    "RandomDegradation",
    "Condition",
    "parse_spec",
    "parse_specs",
    "parse_condition",
    "CLEAN_NAME",
]

CLEAN_NAME = "clean"


@dataclass(frozen=True)
class LevelRange:
    """Degradation ``name`` with parameter ``param`` uniform on the grid ``[low, high]``.

    ``param=None`` means the registry's sweep axis (e.g. ``sigma_px`` of
    ``gaussian_blur``); ``fixed`` holds other parameters. ``low == high`` is a
    fixed level.
    """

    name: str
    param: str | None = None
    low: float | None = None
    high: float | None = None
    fixed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = get_spec(self.name)
        param = self.param or spec.axis
        if param is None:
            raise InvalidParameterError(
                "param", None, f"a parameter of '{self.name}': {[p.name for p in spec.params]}"
            )
        p = spec.param(param)
        object.__setattr__(self, "param", param)
        low = p.default if self.low is None else self.low
        high = low if self.high is None else self.high
        # validate both ends through the registry (names the parameter, says the range)
        low, high = p.coerce(low, self.name), p.coerce(high, self.name)
        if low > high:
            raise InvalidParameterError(f"{self.name}.{param}", f"{low}..{high}", "low <= high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        spec.resolve(**{**self.fixed, param: low})  # validates the fixed params too

    def _resolved(self) -> tuple[str, float, float]:
        """``(param, low, high)``, all set by ``__post_init__`` (the fields are Optional only as inputs)."""
        assert self.param is not None and self.low is not None and self.high is not None
        return self.param, self.low, self.high

    @property
    def is_int(self) -> bool:
        return get_spec(self.name).param(self._resolved()[0]).type is int

    def grid(self, levels: int = 16) -> torch.Tensor:
        """The values a level is drawn from (float64, ascending, unique)."""
        _, low, high = self._resolved()
        if low == high:
            return torch.tensor([float(low)], dtype=torch.float64)
        if self.is_int:
            return torch.arange(int(low), int(high) + 1, dtype=torch.float64)
        return torch.linspace(float(low), float(high), levels, dtype=torch.float64)

    def build(self, value: float) -> Degradation:
        v: Any = int(round(value)) if self.is_int else float(value)
        return get_degradation(self.name, **{**self.fixed, self._resolved()[0]: v})

    @property
    def label(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in sorted(self.fixed.items()))
        lvl = f"{self.low:g}" if self.low == self.high else f"{self.low:g}..{self.high:g}"
        return f"{self.name}:{self.param}={lvl}{extra}"


class _Identity(nn.Module):
    def forward(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        return images


@dataclass(frozen=True)
class SeverityRange:
    """Degradation ``name`` at a registry severity drawn from the integers ``low..high``;
    severity 0 is clean. Works for every entry, also those whose severity rows set
    several parameters (``imagenet_c/fog``)."""

    name: str
    low: int = 0
    high: int = 5

    def __post_init__(self) -> None:
        levels = sorted(get_spec(self.name).severities)
        ok = {0, *levels}
        if self.low not in ok or self.high not in ok or self.low > self.high:
            raise InvalidParameterError(
                f"{self.name} severity", f"{self.low}..{self.high}", f"LOW..HIGH within 0..{max(levels)}"
            )

    is_int = True

    def grid(self, levels: int = 16) -> torch.Tensor:
        return torch.arange(self.low, self.high + 1, dtype=torch.float64)

    def build(self, value: float) -> nn.Module:
        sev = int(round(value))
        return _Identity() if sev == 0 else get_degradation(self.name, severity=sev)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.low}..{self.high}"


class RandomDegradation(nn.Module):
    """Per image: clean with probability ``p_clean``, else one of ``ranges`` (uniform) at a
    level drawn uniformly from its grid.

    ``forward(images, generator=None, degrade_mask=None)``: ``images`` ``(B, C, H, W)``
    float in [0, 1]; ``degrade_mask`` ``(B,)`` bool further restricts which images
    may be degraded (the incremental strategy degrades a growing share of each
    batch). Same generator → same output bytes.

    Example:
        >>> import torch
        >>> mix = RandomDegradation(
        ...     [
        ...         LevelRange("gaussian_noise", "variance", 0.001, 0.05),
        ...         LevelRange("gaussian_blur", "sigma_px", 0.4, 1.0),
        ...     ]
        ... )
        >>> mix(torch.rand(4, 1, 28, 28), generator=0).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(self, ranges: Sequence[LevelRange | SeverityRange], p_clean: float = 0.0, levels: int = 16):
        super().__init__()
        if not 0.0 <= float(p_clean) <= 1.0:
            raise InvalidParameterError("p_clean", p_clean, "[0, 1]")
        if int(levels) < 2:
            raise InvalidParameterError("levels", levels, "an integer >= 2")
        self.ranges = list(ranges)
        self.p_clean = float(p_clean) if self.ranges else 1.0
        self.levels = int(levels)
        self._grids = [r.grid(self.levels) for r in self.ranges]
        self._cache: dict[tuple[int, float], nn.Module] = {}

    @property
    def name(self) -> str:
        if not self.ranges:
            return CLEAN_NAME
        return "|".join(r.label for r in self.ranges)

    def sample(self, batch: int, generator: GeneratorLike = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(choice, value)`` per image: ``choice`` int64 ``(B,)`` (-1 = clean),
        ``value`` float64 ``(B,)`` the parameter value (NaN for clean)."""
        u = rand((batch, 3), generator, dtype=torch.float64)
        choice = torch.full((batch,), -1, dtype=torch.int64)
        value = torch.full((batch,), float("nan"), dtype=torch.float64)
        if not self.ranges:
            return choice, value
        degraded = u[:, 0] >= self.p_clean
        k = len(self.ranges)
        which = (u[:, 1] * k).long().clamp_max(k - 1)
        choice = torch.where(degraded, which, choice)
        for i, grid in enumerate(self._grids):
            idx = (u[:, 2] * len(grid)).long().clamp_max(len(grid) - 1)
            value = torch.where(choice == i, grid[idx], value)
        return choice, value

    def _get(self, i: int, v: float) -> nn.Module:
        key = (i, v)
        if key not in self._cache:
            self._cache[key] = self.ranges[i].build(v)
        return self._cache[key]

    def forward(
        self,
        images: torch.Tensor,
        generator: GeneratorLike = None,
        degrade_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b = images.shape[0]
        gens = as_generators(generator, b)
        choice, value = self.sample(b, gens)
        if degrade_mask is not None:
            choice = torch.where(degrade_mask.to("cpu", torch.bool), choice, torch.full_like(choice, -1))
        if bool((choice < 0).all()):
            return images
        out = images.clone()
        pairs = sorted(
            {(int(c), float(v)) for c, v in zip(choice.tolist(), value.tolist(), strict=True) if c >= 0}
        )
        for i, v in pairs:
            sel = torch.nonzero((choice == i) & (value == v)).flatten()
            sub_gen = [gens[j] for j in sel.tolist()] if isinstance(gens, list) else gens
            idx = sel.to(images.device)
            out[idx] = self._get(i, v)(images[idx], sub_gen)
        return out

    def __call__(self, images, generator=None, degrade_mask=None):
        return super().__call__(images, generator, degrade_mask)


@dataclass(frozen=True)
class Condition:
    """A named test (or training) condition: ``clean`` or one :class:`LevelRange` or
    :class:`SeverityRange`."""

    spec: str
    range: LevelRange | SeverityRange | None

    @property
    def id(self) -> str:
        """A file-name-safe id (store condition ids allow ``A-Za-z0-9._=,+-``)."""
        s = self.spec.replace(":", "+").replace("..", "-to-").replace("@", "+sev").replace("/", ".")
        return re.sub(r"[^A-Za-z0-9._=,+-]", "_", s)

    def module(self, p_clean: float = 0.0) -> RandomDegradation:
        return RandomDegradation([] if self.range is None else [self.range], p_clean=p_clean)


def _num(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidParameterError(where, text, "a number or a range LOW..HIGH, e.g. 0.001..0.05") from None


def parse_spec(text: str) -> LevelRange | SeverityRange | None:
    """Parse one ``--degrade``/``--test`` item (see the module docstring); ``clean`` → None."""
    text = text.strip()
    if not text or text == CLEAN_NAME:
        return None
    if "@" in text and ".." in text.split("@", 1)[1]:
        name, sev = text.split("@", 1)
        lo, hi = sev.split("..", 1)
        try:
            return SeverityRange(get_spec(name.strip()).name, int(lo), int(hi))
        except ValueError:
            raise InvalidParameterError(
                "severity", sev, "integers LOW..HIGH, e.g. 0..5 (0 = clean)"
            ) from None
    if "@" in text:
        name, sev = text.split("@", 1)
        spec = get_spec(name.strip())
        try:
            level = int(sev)
        except ValueError:
            raise InvalidParameterError("severity", sev, f"an integer in {sorted(spec.severities)}") from None
        params = spec.resolve(level)
        if spec.axis is None:
            raise InvalidParameterError(text, text, "a degradation with a sweep axis, or NAME:PARAM=VALUE")
        sev_fixed = {k: v for k, v in spec.severities[level].items() if k != spec.axis}
        level_value = params[spec.axis]
        return LevelRange(spec.name, spec.axis, level_value, level_value, sev_fixed)
    name, _, rest = text.partition(":")
    spec = get_spec(name.strip())
    varied: tuple[str, float, float] | None = None
    fixed: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        if "=" not in item:
            raise InvalidParameterError(text, item, "PARAM=VALUE or PARAM=LOW..HIGH, e.g. sigma_px=0.4..1.0")
        k, v = (s.strip() for s in item.split("=", 1))
        if ".." in v:
            if varied is not None:
                raise InvalidParameterError(text, item, "at most one parameter with a range LOW..HIGH")
            lo, hi = v.split("..", 1)
            varied = (k, _num(lo, f"{name}.{k}"), _num(hi, f"{name}.{k}"))
        else:
            fixed[k] = v
    if varied is None:
        axis = spec.axis if spec.axis in fixed else None
        if axis is None and spec.axis is not None:
            default = spec.resolve(**fixed)[spec.axis]
            return LevelRange(spec.name, spec.axis, default, default, fixed)
        if axis is None:
            first = next(iter(fixed), None)
            if first is None:
                raise InvalidParameterError(
                    text, text, "NAME:PARAM=VALUE for a degradation without a sweep axis"
                )
            axis = first
        value = spec.param(axis).coerce(fixed.pop(axis), spec.name)
        return LevelRange(spec.name, axis, value, value, fixed)
    varied_param, low, high = varied
    spec.param(varied_param)  # unknown parameter → suggestion
    return LevelRange(spec.name, varied_param, low, high, fixed)


def parse_specs(text: str) -> list[LevelRange | SeverityRange]:
    """Like :func:`parse_spec`, but a glob in the name expands to every matching registry
    entry: ``imagenet_c/*@0..5`` is each ImageNet-C corruption at a random severity."""
    from weakspot.degrade.registry import list_degradations

    name = text.strip().split("@", 1)[0].split(":", 1)[0]
    if any(ch in name for ch in "*?["):
        names = list_degradations(name)
        if not names:
            raise InvalidParameterError("--degrade", text, "a pattern that matches registered degradations")
        rest = text.strip()[len(name) :]
        return [r for n in names if (r := parse_spec(n + rest)) is not None]
    r = parse_spec(text)
    return [] if r is None else [r]


def parse_condition(text: str) -> Condition:
    """A :class:`Condition` from its text form (``clean`` allowed)."""
    return Condition(text.strip() or CLEAN_NAME, parse_spec(text))
