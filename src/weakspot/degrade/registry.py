"""One registry of degradations, discoverable by name (``weakspot list``).

Each entry is a pure function ``fn(images, *, generator=None, **params)`` on
``(B, C, H, W)`` float tensors in [0, 1], registered beside its code with

* typed parameters in physical units and their valid range (:class:`Param`),
* a ``severity -> params`` table for levels 1–5,
* a family (``camera``, ``sensor_defect``, ``noise``, ``blur``, ``imagenet_c`` …)
  and the parameter that is the physical x-axis of a sweep.

:func:`get_degradation` returns a small :class:`Degradation` module that stores
validated parameters and calls the function, as kornia's modules do.

Example:
    >>> import torch, weakspot
    >>> blur = weakspot.get_degradation("gaussian_blur", sigma_px=1.5)
    >>> blur(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weakspot._checks import check_images, check_range
from weakspot.errors import InvalidParameterError, UnknownNameError
from weakspot.random import GeneratorLike, batch_keys

__all__ = [
    "Param",
    "DegradationSpec",
    "Degradation",
    "register",
    "get_degradation",
    "get_spec",
    "list_degradations",
    "list_specs",
]

SEVERITY_LEVELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Param:
    """A typed parameter of a degradation, in physical units.

    ``type`` is ``float``, ``int``, ``bool`` or ``str``; numeric parameters are
    checked against ``[low, high]`` (open ends with ``low_open``/``high_open``);
    string parameters against ``choices``.
    """

    name: str
    default: Any
    unit: str = ""
    low: float | None = None
    high: float | None = None
    doc: str = ""
    type: type = float
    choices: tuple[str, ...] | None = None
    low_open: bool = False
    high_open: bool = False

    def valid_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        lb = "(" if self.low_open or self.low is None else "["
        hb = ")" if self.high_open or self.high is None else "]"
        return f"{lb}{lo}, {hi}{hb}" + (f" {self.unit}" if self.unit else "")

    def coerce(self, value: Any, owner: str = "") -> Any:
        """Convert and range-check ``value``; raise :class:`InvalidParameterError`."""
        label = f"{owner}.{self.name}" if owner else self.name
        if self.type is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise InvalidParameterError(label, value, "true or false")
            return bool(value)
        if self.type is str:
            value = str(value)
            if self.choices is not None and value not in self.choices:
                raise InvalidParameterError(label, value, self.valid_range())
            return value
        if isinstance(value, torch.Tensor):  # per-sample parameters pass through
            return value
        v = check_range(
            label,
            value,
            self.low,
            self.high,
            low_inclusive=not self.low_open,
            high_inclusive=not self.high_open,
            unit=self.unit,
        )
        if self.type is int:
            if not float(v).is_integer():
                raise InvalidParameterError(label, value, f"an integer in {self.valid_range()}")
            return int(v)
        if math.isinf(v) and (self.low is not None and self.high is not None):
            raise InvalidParameterError(label, value, self.valid_range())
        return v


@dataclass(frozen=True)
class DegradationSpec:
    """Everything the registry knows about one degradation."""

    name: str
    func: Callable[..., torch.Tensor]
    params: tuple[Param, ...]
    severities: Mapping[int, Mapping[str, Any]]
    family: str
    axis: str | None = None
    random: bool = True
    differentiable: bool = False
    doc: str = ""
    check: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise UnknownNameError(f"parameter of '{self.name}'", name, [p.name for p in self.params])

    def resolve(self, severity: int | None = None, **params: Any) -> dict[str, Any]:
        """Defaults, then the severity row, then explicit ``params``; validated."""
        values = {p.name: p.default for p in self.params}
        if severity is not None:
            if (
                isinstance(severity, bool)
                or int(severity) != severity
                or int(severity) not in self.severities
            ):
                raise InvalidParameterError(
                    "severity", severity, f"an integer in {sorted(self.severities)} for '{self.name}'"
                )
            values.update(self.severities[int(severity)])
        known = {p.name for p in self.params}
        for k, v in params.items():
            if k not in known:
                raise UnknownNameError(f"parameter of '{self.name}'", k, sorted(known))
            values[k] = v
        out = {p.name: p.coerce(values[p.name], self.name) for p in self.params}
        if self.check is not None:
            self.check(out)
        return out


_REGISTRY: dict[str, DegradationSpec] = {}


def register(
    name: str,
    *,
    params: Sequence[Param],
    severities: Mapping[int, Mapping[str, Any]],
    family: str,
    axis: str | None = None,
    random: bool = True,
    differentiable: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator registering ``fn(images, *, generator=None, **params)`` under ``name``."""

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY and _REGISTRY[name].func is not fn:
            raise RuntimeError(f"degradation '{name}' registered twice")
        names = [p.name for p in params]
        for level, row in severities.items():
            unknown = set(row) - set(names)
            if unknown:
                raise RuntimeError(f"{name}: severity {level} names unknown parameters {unknown}")
        if axis is not None and axis not in names:
            raise RuntimeError(f"{name}: axis '{axis}' is not a parameter")
        spec = DegradationSpec(
            name=name,
            func=fn,
            params=tuple(params),
            severities={int(k): dict(v) for k, v in severities.items()},
            family=family,
            axis=axis,
            random=random,
            differentiable=differentiable,
            doc=fn.__doc__ or "",
            check=check,
        )
        # validate the table eagerly: a bad row is a bug in the registry
        for level in spec.severities:
            spec.resolve(level)
        _REGISTRY[name] = spec
        return fn

    return deco


def _ensure_loaded() -> None:
    import weakspot.degrade  # noqa: F401  (registers every built-in degradation)


def list_specs(pattern: str | None = None, family: str | None = None) -> list[DegradationSpec]:
    """Registered specs, sorted by name, filtered by glob ``pattern`` and ``family``."""
    _ensure_loaded()
    out = []
    for name in sorted(_REGISTRY):
        spec = _REGISTRY[name]
        if pattern and not fnmatch.fnmatch(name, pattern):
            continue
        if family and spec.family != family:
            continue
        out.append(spec)
    return out


def list_degradations(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Names of registered degradations (glob ``pattern``, e.g. ``"imagenet_c/*"``)."""
    return [s.name for s in list_specs(pattern, family)]


def get_spec(name: str) -> DegradationSpec:
    """The :class:`DegradationSpec` registered under ``name``."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("degradation", name, sorted(_REGISTRY)) from None


class Degradation(nn.Module):
    """A registered degradation with validated parameters: ``(images, generator=None) -> images``.

    ``images``: ``(B, C, H, W)`` float in [0, 1] on any device; the output has the
    same shape, dtype and device, also in [0, 1].
    """

    def __init__(self, spec: DegradationSpec, params: dict[str, Any], severity: int | None = None):
        super().__init__()
        self.spec = spec
        self.params = dict(params)
        self.severity = severity

    @property
    def name(self) -> str:
        return self.spec.name

    def forward(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        check_images(images)
        if isinstance(generator, (list, tuple)):  # legacy per-image generators: one key each, once
            generator = batch_keys(generator, images.shape[0])
        return self.spec.func(images, generator=generator, **self.params)

    def __call__(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        return super().__call__(images, generator)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        sev = f", severity={self.severity}" if self.severity is not None else ""
        return f"'{self.name}'{sev}, {args}"


def get_degradation(name: str, severity: int | None = None, **params: Any) -> Degradation:
    """Build the degradation ``name`` at a ``severity`` (1–5) and/or explicit ``params``.

    Explicit parameters override the severity row, which overrides defaults.
    Raises :class:`~weakspot.errors.UnknownNameError` for an unknown name and
    :class:`~weakspot.errors.InvalidParameterError` for an out-of-range value.
    """
    spec = get_spec(name)
    return Degradation(spec, spec.resolve(severity, **params), severity)
