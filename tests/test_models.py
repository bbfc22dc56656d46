"""Model loading against real weights, real images and reference implementations."""

from __future__ import annotations

import hashlib
import pickle
import warnings

import numpy as np
import pytest
import torch

from weakspot.data import open_dataset
from weakspot.errors import ModelLoadError, UnknownNameError
from weakspot.models import Preprocess, bundled, load_model


@pytest.fixture(scope="session")
def foolbox_imagenet():
    ds = open_dataset(kind="foolbox", subset="imagenet")
    return [ds[i][0] for i in range(len(ds))], torch.tensor(ds.labels)


@pytest.mark.slow
def test_lite0_clean_accuracy_on_real_imagenet_samples(lite0, foolbox_imagenet):
    images, labels = foolbox_imagenet
    probs = lite0.predict_proba(images)  # native sizes 512² … 1024×683, preprocessing included
    acc = (probs.argmax(1) == labels).float().mean().item()
    assert acc >= 0.75, acc
    assert lite0.num_classes == 1000 and lite0.class_names[0] == "tench" and lite0.input_size == (224, 224)
    assert torch.allclose(probs.sum(1), torch.ones(len(images)), atol=1e-4)


def test_lite0_target_layer_is_last_conv_block(lite0, photos):
    seen = {}
    h = lite0.target_layer.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    with torch.no_grad():
        lite0(photos[:1])
    h.remove()
    assert seen["shape"] == (1, 1280, 7, 7)


def test_mnist_cnn_matches_its_package_and_real_digits(mnist_cnn):
    from digit_recognizer import DigitRecognizer
    from PIL import Image

    ds = open_dataset(kind="mnist_5k", limit=600, seed=3)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    probs = mnist_cnn.predict_proba(x)
    acc = (probs.argmax(1) == torch.tensor(ds.labels)).float().mean().item()
    assert acc >= 0.97, acc
    # the package's own inference path (PIL → Resize → ToTensor → Normalize) as the reference
    ref = DigitRecognizer(device="cpu")
    for i in range(5):
        arr = (x[i, 0].numpy() * 255).round().astype(np.uint8)
        with torch.no_grad():
            p_ref = torch.softmax(ref.model(ref.preprocess(Image.fromarray(arr), invert=False)), 1)[0]
        assert torch.allclose(p_ref, probs[i], atol=1e-5)
    seen = {}
    h = mnist_cnn.target_layer.register_forward_hook(lambda m, i, o: seen.update(s=tuple(o.shape)))
    with torch.no_grad():
        mnist_cnn(x[:2])
    h.remove()
    assert seen["s"] == (2, 128, 7, 7)


def test_preprocess_equals_torchvision_transforms(photo_uint8):
    from torchvision.transforms import v2

    img = torch.from_numpy(photo_uint8).permute(2, 0, 1).float() / 255
    for crop in (img, img[:, :299, :451], img[:, :, :211]):  # odd sizes exercise the rounding
        ref = v2.Compose(
            [
                v2.Resize(256, antialias=True),
                v2.CenterCrop(224),
                v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )(crop)
        assert torch.allclose(Preprocess()(crop[None])[0], ref, atol=1e-5)
    # gray model input from an RGB image = BT.601 luma; list input of mixed sizes
    p = Preprocess(size=(28, 28), resize_px=None, mean=(0.0,), std=(1.0,), channels=1)
    out = p([img, img[:, :100, :100]])
    assert out.shape == (2, 1, 28, 28)
    luma = (img * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    assert torch.allclose(out[0], p(luma[None])[0], atol=1e-5)


def test_preprocess_is_differentiable(photos):
    x = photos[:1].clone().requires_grad_(True)
    Preprocess()(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_torchvision_state_dict_and_weights_enum_cache(tmp_path, monkeypatch, photos):
    import torchvision

    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path / "mnv3.pth"
    torch.save(net.state_dict(), path)
    m = load_model("mobilenet_v3_small", weights=str(path))
    assert m.source == "torchvision" and m.num_classes == 1000
    assert m.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = m.preprocess(photos[:2])
    with torch.no_grad():
        assert torch.allclose(m.module(x), net(x), atol=1e-5)
    # the same weights as an enum whose file sits in $TORCH_HOME/hub/checkpoints
    enum = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(ModelLoadError, match="not in the local cache"):
        load_model("torchvision/mobilenet_v3_small", weights="IMAGENET1K_V1")
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / enum.url.rsplit("/", 1)[1]).write_bytes(path.read_bytes())
    m2 = load_model("torchvision/mobilenet_v3_small", weights="IMAGENET1K_V1")
    assert m2.class_names == enum.meta["categories"]
    assert m2.preprocess_config.resize_px == 256 and m2.input_size == (224, 224)


def test_weights_that_do_not_match_and_unsafe_pickles(tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), path)
    with pytest.raises(ModelLoadError, match="do not match architecture 'torchvision/resnet34'"):
        load_model("resnet34", weights=str(path), num_classes=10)
    with pytest.raises(ModelLoadError, match="shape mismatches"):
        load_model("resnet18", weights=str(path), num_classes=1000)
    # a pickle that would call a function when loaded is refused, not executed
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"fc.weight": _Boom()}))
    with pytest.raises(ModelLoadError, match="refusing to load"):
        load_model("resnet18", weights=str(evil))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(UnknownNameError, match="resnet18"):
        load_model("torchvision/resnet81", weights=str(path))
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("resnet18", weights=str(tmp_path / "missing.pth"))


class _Boom:
    def __reduce__(self):
        import os

        return (os.mkdir, ("pwned",))


def test_timm_checkpoint(tmp_path, photos):
    timm = pytest.importorskip("timm")
    net = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=7).eval()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, path)
    m = load_model("timm/mobilenetv3_small_050", weights=str(path), class_names=list("abcdefg"))
    assert m.num_classes == 7 and m.preprocess_config.interpolation == "bicubic"
    assert m.preprocess_config.resize_px == 256  # 224 / crop_pct 0.875
    x = m.preprocess(photos[:2])
    with torch.no_grad():
        assert torch.allclose(m.module(x), net(x), atol=1e-5)
    assert m.target_layer is not None


def test_torchscript_and_onnx_give_the_same_predictions(tmp_path, mnist_cnn):
    pytest.importorskip("onnxruntime")
    ds = open_dataset(kind="foolbox", subset="mnist")
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    ref = mnist_cnn.predict_proba(x)
    ts = tmp_path / "cnn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(mnist_cnn.module, torch.zeros(1, 1, 28, 28)), str(ts))
    m_ts = load_model(str(ts), preprocess=mnist_cnn.preprocess_config.to_dict())
    assert m_ts.source == "torchscript" and m_ts.num_classes == 10
    assert torch.allclose(m_ts.predict_proba(x), ref, atol=1e-5)
    onnx_path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            mnist_cnn.module,
            torch.zeros(2, 1, 28, 28),
            str(onnx_path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
        )
    m_onnx = load_model(
        str(onnx_path), preprocess=mnist_cnn.preprocess_config.to_dict(), class_names=mnist_cnn.class_names
    )
    assert m_onnx.source == "onnx" and not m_onnx.differentiable
    assert torch.allclose(m_onnx.predict_proba(x), ref, atol=1e-4)
    assert (ref.argmax(1) == torch.tensor(ds.labels)).float().mean() >= 0.9
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        load_model(str(bad))


def test_unknown_bundled_name_suggests():
    with pytest.raises(UnknownNameError, match="efficientnet_lite0"):
        bundled("efficientnet_lite")


# The documented defaults of a model loaded without `preprocess` (docs/own_model.md), written
# out here as literal numbers so that a change (or a swap of mean and std) in the code fails.
DOC_IMAGENET_MEAN = (0.485, 0.456, 0.406)
DOC_IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def lite0_exports(tmp_path_factory, lite0):
    """The bundled EfficientNet-Lite0 exported to ONNX (static 1×3×224×224, the usual export)
    and TorchScript (traced)."""
    pytest.importorskip("onnxruntime")
    d = tmp_path_factory.mktemp("lite0_export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            lite0.module,
            torch.zeros(1, 3, 224, 224),
            str(d / "lite0.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
        )
        torch.jit.save(torch.jit.trace(lite0.module, torch.zeros(1, 3, 224, 224)), str(d / "lite0.pt"))
    return d / "lite0.onnx", d / "lite0.pt"


def _documented_imagenet_input(images: torch.Tensor) -> torch.Tensor:
    """torchvision's own Resize(256) + CenterCrop(224) + Normalize(documented constants)."""
    from torchvision.transforms import v2

    t = v2.Compose(
        [
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.Normalize(DOC_IMAGENET_MEAN, DOC_IMAGENET_STD),
        ]
    )
    return torch.stack([t(im) for im in images])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.slow
def test_exported_model_without_preprocess_gets_the_documented_defaults(
    fmt, lite0, lite0_exports, foolbox_imagenet
):
    path = lite0_exports[0] if fmt == "onnx" else lite0_exports[1]
    m = load_model(str(path))
    assert m.source == fmt and m.num_classes == 1000 and m.class_names[0] == "tench"
    p = m.preprocess_config
    assert p.size == (224, 224) and p.resize_px == 256 and p.channels == 3 and p.interpolation == "bilinear"
    assert p.mean == pytest.approx(DOC_IMAGENET_MEAN, abs=1e-12) and p.std == pytest.approx(
        DOC_IMAGENET_STD, abs=1e-12
    )
    # end to end: the exported model's logits through the loader equal the PyTorch module's
    # logits on the same real photos preprocessed by torchvision with the documented constants
    images = foolbox_imagenet[0][:3]  # native sizes (512 px and larger)
    with torch.no_grad():
        got = m(images)
        want = lite0.module(_documented_imagenet_input(images))
    assert got.shape == (3, 1000)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)
    # a swapped mean/std would be a different input: far from the reference logits
    swapped = Preprocess(mean=DOC_IMAGENET_STD, std=DOC_IMAGENET_MEAN)
    with torch.no_grad():
        assert (m.module(swapped(images)) - want).abs().max() > 1.0


def test_onnx_defaults_follow_the_graph_input(tmp_path, mnist_cnn):
    """A 1-channel static 28×28 graph: 1 channel, mean = std = 0.5, shorter side → 32 then the
    28² crop; a graph with dynamic height/width: the 224² ImageNet default with its channels."""
    pytest.importorskip("onnxruntime")
    from weakspot.models import onnx_default_preprocess

    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mnist_cnn.module, torch.zeros(1, 1, 28, 28), str(path), dynamo=False)
    m = load_model(str(path))
    p = m.preprocess_config
    assert (p.channels, p.size, p.resize_px, p.mean, p.std) == (1, (28, 28), 32, (0.5,), (0.5,))
    # a static batch of 1 still evaluates a batch of 5 (run in slices), equal to the module
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(m.module(x), mnist_cnn.module(x), rtol=1e-4, atol=1e-4)
    q = onnx_default_preprocess(["batch", 3, "height", "width"])
    assert (q.size, q.resize_px, q.channels, q.mean, q.std) == (
        (224, 224),
        256,
        3,
        DOC_IMAGENET_MEAN,
        DOC_IMAGENET_STD,
    )
    assert onnx_default_preprocess(["n", 1, None, None]).mean == (0.5,)


def test_torchscript_that_rejects_the_default_input_is_a_clear_error(tmp_path, mnist_cnn):
    """A 1-channel TorchScript model loaded without preprocess cannot take the RGB 224² default:
    a ModelLoadError that asks for preprocess, not a TorchScript traceback."""
    path = tmp_path / "cnn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(mnist_cnn.module, torch.zeros(1, 1, 28, 28)), str(path))
    with pytest.raises(ModelLoadError, match=r"does not accept a \(1, 3, 224, 224\) input.*preprocess"):
        load_model(str(path))
    m = load_model(
        str(path),
        preprocess={"size": 28, "resize_px": None, "mean": [0.1307], "std": [0.3081], "channels": 1},
    )
    assert m.num_classes == 10


@pytest.mark.slow
def test_own_model_doc_recipe_runs_and_its_configs_load(tmp_path, monkeypatch, photos, capsys):
    """docs/own_model.md stays true: its export recipe runs offline as written (exec'd in a
    tmp dir), its YAML blocks equal examples/own_*.yaml, every example loads the recipe's
    files and gives the exported module's logits (reference: the recipe's own PyTorch module
    on torchvision-preprocessed photos), and `weakspot run` on the ONNX example finishes."""
    import re
    from pathlib import Path

    import yaml
    from PIL import Image

    from weakspot.cli import main
    from weakspot.evaluate.config import load_config
    from weakspot.evaluate.engine import load_run_model

    pytest.importorskip("onnxruntime")
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "own_model.md").read_text()
    recipe = re.search(r"<!-- export-recipe -->\s*```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    ns: dict = {}
    exec(compile(recipe, "docs/own_model.md", "exec"), ns)
    for f in ("my_model.onnx", "my_model.pt", "my_resnet18.pth", "my_classes.txt"):
        assert (tmp_path / f).is_file(), f
    blocks = re.findall(r"<!-- config: (\S+) -->\s*```yaml\n(.*?)```", doc, re.S)
    assert sorted(n for n, _ in blocks) == [
        "own_onnx.yaml",
        "own_timm.yaml",
        "own_torchscript.yaml",
        "own_torchvision.yaml",
    ]
    keys = {"name", "source", "weights", "num_classes", "class_names", "preprocess", "device"}
    pre_keys = {"size", "resize_px", "interpolation", "mean", "std", "channels"}
    x = photos[:2]
    with torch.no_grad():
        want = ns["model"](_documented_imagenet_input(x))
    for name, block in blocks:
        text = (root / "examples" / name).read_text()
        example = yaml.safe_load(text)
        assert (
            block == text
            if "data" in yaml.safe_load(block)
            else yaml.safe_load(block)["model"] == example["model"]
        )
        assert keys <= set(example["model"]) and set(example["model"]["preprocess"]) == pre_keys, name
        (tmp_path / name).write_text(text)
        if example["model"]["source"] == "timm":
            pytest.importorskip("timm")
        m = load_run_model(load_config(tmp_path / name))
        assert (
            m.source == example["model"]["source"] and m.num_classes == 10 and m.class_names[3] == "class_3"
        )
        assert m.preprocess_config.mean == pytest.approx(DOC_IMAGENET_MEAN)
        with torch.no_grad():
            torch.testing.assert_close(m(x), want, rtol=1e-4, atol=1e-4, msg=name)
    # the user's images: my_images/<class>/<image>, then the ONNX example end to end
    for k, img in enumerate(photos[:2]):
        d = tmp_path / "my_images" / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(d / f"{k}.png")
    assert (
        main(
            [
                "run",
                str(tmp_path / "own_onnx.yaml"),
                "--out",
                str(tmp_path / "runs" / "mine"),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    from weakspot.evaluate import ResultsStore

    pred = ResultsStore(tmp_path / "runs" / "mine").predictions()
    assert len(pred) == 2 * 6 and set(pred.label) == {0, 1}


def test_a_size_given_alone_gets_a_resize_that_fits_it(tmp_path, mnist_cnn):
    """``preprocess: {size: [28, 28]}`` used to inherit the 224-input resize (256 px), so a
    28 × 28 model saw a 28-px crop of a 256-px image: 5% on MNIST digits without a warning."""
    assert Preprocess().resize_px == 256
    assert Preprocess(size=(28, 28)).resize_px == 32
    assert Preprocess(size=(299, 299)).resize_px == 342  # timm's inception crop_pct 0.875
    assert Preprocess(size=(28, 28), resize_px=None).resize_px is None
    with pytest.raises(Exception, match="resize_px"):
        Preprocess(size=(28, 28), resize_px="big")
    example = mnist_cnn.preprocess_config(torch.rand(1, 1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(mnist_cnn.module.eval(), example), tmp_path / "digits.pt")
    ds = open_dataset(kind="mnist_5k", limit=200)
    x = torch.stack([ds.load(i) for i in range(len(ds))])
    y = torch.tensor(ds.labels)
    pre = {"size": [28, 28], "mean": [0.1307], "std": [0.3081], "channels": 1}
    model = load_model(str(tmp_path / "digits.pt"), class_names=[str(i) for i in range(10)], preprocess=pre)
    assert (model.predict_proba(x).argmax(1) == y).float().mean() > 0.95
