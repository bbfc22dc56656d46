"""Run configuration (YAML or TOML), validated with pydantic; sweeps expand to conditions.

Example (YAML)::

    model: {name: efficientnet_lite0}
    data: [{kind: foolbox, subset: imagenet}, {kind: skimage}]
    seed: 0
    batch_size: 32          # or "auto"
    workers: 2              # data-loading processes
    store_probs: true       # full float16 probability vectors
    conditions:
      - degradation: pixel_size
        grid: {pixel_size_um: [5, 8, 11]}
      - degradation: "imagenet_c/*"       # a glob over the registry
        severities: [1, 3, 5]
      - compose: [{name: gaussian_blur, sigma_px: 1}, {name: gaussian_noise, variance: 0.01}]
        id: blur1+noise
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from weakspot.errors import ConfigError, WeakspotError
from weakspot.evaluate.conditions import Condition, Step, make_condition_id

__all__ = [
    "ModelConfig",
    "DataConfig",
    "SweepSpec",
    "RayConfig",
    "RunConfig",
    "load_config",
    "parse_config",
    "expand_conditions",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """Which classifier (see :func:`weakspot.models.load_model`)."""

    name: str = "efficientnet_lite0"
    source: Literal["auto", "bundled", "torchvision", "timm", "torchscript", "onnx"] = "auto"
    weights: str | None = None
    num_classes: int | None = Field(None, ge=1)
    class_names: str | list[str] | None = None
    preprocess: dict[str, Any] | None = None
    device: str = "cpu"
    amp: bool = False
    channels_last: bool = False


class DataConfig(_Strict):
    """One data source (see :func:`weakspot.data.open_dataset`)."""

    kind: str = "auto"
    root: str | None = None
    split: Literal["test", "train"] = "test"
    subset: str = "imagenet"
    names: list[str] | None = None
    per_class: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1)
    # how folders become model classes (weakspot.data.labels): auto = detect (all WordNet IDs
    # -> wordnet, all integers -> index, else names); sorted = folder k in sorted order is
    # class k; none = unlabelled
    labels: Literal["auto", "wordnet", "names", "index", "sorted", "none"] = "auto"
    # folder -> class index (or class name): a YAML/JSON/CSV file (relative to the config) or a mapping
    class_map: str | dict[int | str, int | str] | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from weakspot.data import KINDS

        if v not in KINDS:
            raise ValueError(f"unknown data kind '{v}'; one of {', '.join(KINDS)}")
        return v


Scalar = bool | int | float | str


class SweepSpec(_Strict):
    """One sweep entry: a degradation (name, list or glob) × a parameter grid or severities,
    or one composition."""

    degradation: str | list[str] | None = None
    compose: list[dict[str, Any]] | None = None
    grid: dict[str, list[Scalar]] | None = None
    params: dict[str, Scalar] = Field(default_factory=dict)
    severities: list[int] | None = None
    id: str | None = None
    family: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SweepSpec:
        if (self.degradation is None) == (self.compose is None):
            raise ValueError(
                "give exactly one of 'degradation' (name, list or glob) or 'compose' (list of steps)"
            )
        if self.grid is not None and self.severities is not None:
            raise ValueError("give 'grid' or 'severities', not both")
        if self.grid is not None and any(len(v) == 0 for v in self.grid.values()):
            raise ValueError("every 'grid' parameter needs at least one value")
        if self.compose is not None and (self.grid or self.severities):
            raise ValueError("a 'compose' entry is one condition: put the parameters in its steps")
        if self.compose is not None and not all(isinstance(s, dict) and "name" in s for s in self.compose):
            raise ValueError(
                "each 'compose' step is a mapping with a 'name', e.g. {name: gaussian_blur, sigma_px: 1}"
            )
        return self


class RayConfig(_Strict):
    """Settings of the Ray engine (``weakspot run --engine ray``); the local engine ignores them."""

    # evaluation actors, each with the model loaded once (default: one per GPU, else one per num_cpus CPUs)
    actors: int | None = Field(None, ge=1)
    # GPUs per actor (default: 1 where the cluster has GPUs, else 0; 0.5 puts two actors on a GPU)
    num_gpus: float | None = Field(None, ge=0)
    # CPUs per actor (decoding, degradations and, without a GPU, the forward pass)
    num_cpus: float = Field(1.0, gt=0)
    # tasks queued per actor so it never waits for the driver
    tasks_per_actor: int = Field(2, ge=1, le=64)
    # units (of one shard) per Ray task (default: adaptive, about 0.5 s of work per task)
    units_per_task: int | None = Field(None, ge=1, le=1024)
    # Ray's fault tolerance: actor restarts and task retries (-1: unlimited)
    max_restarts: int = Field(4, ge=-1)
    max_task_retries: int = Field(4, ge=-1)


class RunConfig(_Strict):
    """A whole run: model, data, conditions, seed and execution settings."""

    name: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig | list[DataConfig]
    conditions: list[SweepSpec] = Field(default_factory=list)
    seed: int = 0
    batch_size: int | Literal["auto"] = 32
    workers: int = Field(2, ge=0, le=64)
    # torch intra-op threads for the forward passes: null = torch's default (one per core);
    # "auto" = 1 when the machine is already busy (1-min load average >= 75 % of the cores,
    # where extra threads only spin), else torch's default
    threads: int | Literal["auto"] | None = None
    shard_size: int = Field(64, ge=1)
    store_probs: bool = False
    # skip degradations that are not registered (the demo uses this); a run errors instead
    skip_unknown: bool = False
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("threads")
    @classmethod
    def _threads(cls, v):
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError("threads must be 1…256, 'auto' or null")
        return v

    @field_validator("batch_size")
    @classmethod
    def _bs(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("batch_size must be a positive integer or 'auto'")
        return v

    @property
    def data_list(self) -> list[DataConfig]:
        return self.data if isinstance(self.data, list) else [self.data]

    def identity(self) -> dict[str, Any]:
        """What must not change when a run directory is resumed."""
        return {
            "model": self.model.model_dump(exclude={"device", "amp", "channels_last"}),
            # labels/class_map only when set: run directories made before they existed still resume
            "data": [
                d.model_dump(
                    exclude={
                        k
                        for k in ("labels", "class_map")
                        if getattr(d, k) == DataConfig.model_fields[k].default
                    }
                )
                for d in self.data_list
            ],
            "seed": self.seed,
            "shard_size": self.shard_size,
            "store_probs": self.store_probs,
        }


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors()[:8]:
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith(("function-after", "tagged-union")))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc or '(top level)'}: {msg}")
    more = f"\n  … and {len(err.errors()) - 8} more" if len(err.errors()) > 8 else ""
    return f"invalid run config {source}:\n" + "\n".join(lines) + more


def parse_config(obj: dict[str, Any], source: str = "(dict)", base_dir: Path | None = None) -> RunConfig:
    """Validate a config mapping; relative paths (data roots, weights) resolve against ``base_dir``."""
    if not isinstance(obj, dict):
        raise ConfigError(f"run config {source} must be a mapping with 'model', 'data' and 'conditions'")
    try:
        cfg = RunConfig.model_validate(obj)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    if base_dir is not None:
        for d in cfg.data_list:
            if d.root and not Path(d.root).expanduser().is_absolute():
                d.root = str((base_dir / d.root).resolve())
            if isinstance(d.class_map, str) and not Path(d.class_map).expanduser().is_absolute():
                d.class_map = str((base_dir / d.class_map).resolve())
        w = cfg.model.weights
        if w and not Path(w).expanduser().is_absolute() and (base_dir / w).exists():
            cfg.model.weights = str((base_dir / w).resolve())
        n = cfg.model.name
        if n.endswith((".onnx", ".pt", ".ts", ".jit", ".torchscript")) and not Path(n).is_absolute():
            cfg.model.name = str((base_dir / n).resolve())
    return cfg


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a ``.yaml``/``.yml``/``.toml``/``.json`` run config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            obj = yaml.safe_load(text)
        elif path.suffix == ".toml":
            import tomllib

            obj = tomllib.loads(text)
        elif path.suffix == ".json":
            obj = json.loads(text)
        else:
            raise ConfigError(f"config {path} must end in .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # yaml/toml/json syntax errors
        first = str(exc).strip().splitlines()
        raise ConfigError(f"cannot parse {path}: {' '.join(first[:3])}") from None
    return parse_config(obj, str(path), path.parent.resolve())


# ----------------------------------------------------------------------------- expansion
def as_run_config(config: RunConfig | dict[str, Any] | str | Path) -> RunConfig:
    """A validated :class:`RunConfig` from a config object, a mapping or a YAML/TOML/JSON path."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    return parse_config(dict(config))


def _axis_of(
    spec, params: dict[str, Any], grid_keys: list[str]
) -> tuple[str | None, float | None, str | None]:
    axis = grid_keys[0] if len(grid_keys) == 1 else (spec.axis if not grid_keys else None)
    if axis is None:
        return None, None, None
    value = params.get(axis)
    try:
        fv = float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        fv = None
    return axis, fv, spec.param(axis).unit or None


def expand_conditions(
    specs: list[SweepSpec], skip_unknown: bool = False
) -> tuple[list[Condition], list[str]]:
    """Expand sweep entries into validated conditions (the clean condition is not included).

    When any condition is in the ``camera`` family, a ``camera_reference`` condition is
    appended: the registered ``camera`` degradation at its defaults (the default camera,
    nothing changed), so camera conditions can be compared with the camera itself.

    Returns ``(conditions, skipped)`` where ``skipped`` names unregistered degradations
    that were left out (only with ``skip_unknown``). Raises :class:`ConfigError` /
    :class:`~weakspot.errors.WeakspotError` naming the entry for unknown names, bad
    parameters or duplicate ids.
    """
    from weakspot.degrade import get_spec, list_degradations

    out: list[Condition] = []
    skipped: list[str] = []
    for k, sw in enumerate(specs):
        where = f"conditions[{k}]"
        try:
            if sw.compose is not None:
                steps = []
                for st in sw.compose:
                    name = st["name"]
                    params = {a: b for a, b in st.items() if a not in ("name", "severity")}
                    spec = get_spec(name)
                    steps.append(
                        Step(
                            name=name,
                            params=spec.resolve(st.get("severity"), **params),
                            severity=st.get("severity"),
                        )
                    )
                cid = sw.id or "+".join(
                    make_condition_id(s.name, {a: b for a, b in st.items() if a != "name"})
                    for s, st in zip(steps, sw.compose, strict=True)
                )
                first = get_spec(steps[0].name)
                axis, val, unit = _axis_of(first, steps[0].params, [])
                out.append(
                    Condition(
                        condition_id=cid,
                        steps=tuple(steps),
                        family=sw.family or "composite",
                        axis=axis,
                        axis_value=val,
                        axis_unit=unit,
                    )
                )
                continue
            names = (
                [sw.degradation] if isinstance(sw.degradation, str) else list(sw.degradation or ())
            )  # the validator made it one
            resolved: list[str] = []
            for n in names:
                if any(ch in n for ch in "*?["):
                    hits = list_degradations(n)
                    if not hits:
                        if skip_unknown:
                            skipped.append(n)
                            continue
                        raise ConfigError(
                            f"{where}: no registered degradation matches '{n}'; see 'weakspot list'"
                        )
                    resolved += hits
                else:
                    resolved.append(n)
            for n in resolved:
                try:
                    spec = get_spec(n)
                except WeakspotError:
                    if skip_unknown:
                        skipped.append(n)
                        continue
                    raise
                if sw.severities is not None:
                    for sev in sw.severities:
                        params = spec.resolve(sev, **sw.params)
                        axis, val, unit = _axis_of(spec, params, [])
                        out.append(
                            Condition(
                                condition_id=(sw.id + f".sev={sev}")
                                if sw.id
                                else make_condition_id(n, sw.params, sev),
                                steps=(Step(name=n, params=params, severity=sev),),
                                family=sw.family or spec.family,
                                severity=sev,
                                axis=axis,
                                axis_value=val,
                                axis_unit=unit,
                            )
                        )
                else:
                    grid = sw.grid or {}
                    keys = list(grid)
                    for combo in itertools.product(*(grid[g] for g in keys)) if keys else [()]:
                        point = dict(zip(keys, combo, strict=True))
                        params = spec.resolve(None, **{**sw.params, **point})
                        axis, val, unit = _axis_of(spec, params, keys)
                        cid = (
                            make_condition_id(n, {**sw.params, **point})
                            if not sw.id
                            else (
                                sw.id
                                + ("." + ".".join(f"{a}={b}" for a, b in point.items()) if point else "")
                            )
                        )
                        out.append(
                            Condition(
                                condition_id=cid,
                                steps=(Step(name=n, params=params),),
                                family=sw.family or spec.family,
                                axis=axis,
                                axis_value=val,
                                axis_unit=unit,
                            )
                        )
        except WeakspotError as exc:
            if isinstance(exc, ConfigError) and str(exc).startswith(where):
                raise
            raise ConfigError(f"{where}: {exc}") from None
    camera_reference = "camera_reference"
    if any(c.family == "camera" for c in out) and not any(c.condition_id == camera_reference for c in out):
        # the default camera, nothing changed: what every camera condition is compared with
        ref = Step(name="camera", params=get_spec("camera").resolve(None))
        out.append(Condition(condition_id=camera_reference, steps=(ref,), family="camera"))
    seen: dict[str, int] = {}
    for c in out:
        if c.condition_id == "clean":
            raise ConfigError("condition id 'clean' is reserved for the undegraded images")
        seen[c.condition_id] = seen.get(c.condition_id, 0) + 1
    dups = [c for c, n in seen.items() if n > 1]
    if dups:
        raise ConfigError(
            f"duplicate condition ids: {', '.join(dups[:5])}; give sweep entries distinct 'id's"
        )
    return out, skipped
