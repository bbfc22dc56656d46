"""A learned enhancement front-end trained against a frozen classifier.

A small noise-estimation CNN (:class:`EnhanceNet`) looks at each image and
predicts three things per image:

* a ``C × C`` colour matrix ``M`` (3 × 3 for RGB, a gain for grey),
* a colour shift ``t`` (``C``),
* a ``k × k`` sharpening/denoising kernel ``K`` whose taps sum to 1.

:func:`apply_enhancement` warps the image with them, differentiably and for the
whole batch at once (one grouped convolution, no per-sample Python loop)::

    y = K ⊛ (M x + t)          then clamp to [0, 1]

The network starts as the identity (zero-initialised output layer), so an
untrained front-end leaves images and accuracy unchanged. It is trained
end-to-end through the frozen classifier on randomly degraded images (random
degradation and level, a share kept clean) with cross-entropy plus an
EMA-teacher consistency term and gradient clipping. No clean target images.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from weakspot.degrade.filters import filter2d
from weakspot.errors import InvalidParameterError
from weakspot.random import keyed_generator, keyed_seed
from weakspot.robustify.mix import RandomDegradation
from weakspot.robustify.train import as_float_images

__all__ = [
    "EnhanceNet",
    "EnhancedClassifier",
    "EnhanceConfig",
    "EnhanceResult",
    "apply_enhancement",
    "apply_enhancement_reference",
    "estimate_noise_sigma",
    "train_enhancer",
    "clean_soft_targets",
    "distillation_loss",
    "count_flops",
]


def apply_enhancement(
    images: torch.Tensor, color_matrix: torch.Tensor, color_shift: torch.Tensor, kernel: torch.Tensor
) -> torch.Tensor:
    """Per-image colour transform then ``k × k`` filtering, clamped to [0, 1].

    Args:
        images: ``(B, C, H, W)`` float in [0, 1].
        color_matrix: ``(B, C, C)``; output channel ``i`` = Σ_j M[i, j] · input channel ``j``.
        color_shift: ``(B, C)`` added after the matrix (intensity units of [0, 1]).
        kernel: ``(B, k, k)`` (k odd) applied to every channel as a correlation with
            reflect borders, one grouped convolution for the batch.

    Returns ``(B, C, H, W)``; differentiable in every argument (the clamp passes
    gradients inside [0, 1]).
    """
    y = torch.einsum("bij,bjhw->bihw", color_matrix, images) + color_shift[:, :, None, None]
    if torch.jit.is_tracing():  # the grouped conv bakes groups = B·C into a trace
        return _filter_unfold(y, kernel).clamp(0.0, 1.0)
    return filter2d(y, kernel, border="reflect").clamp(0.0, 1.0)


def _filter_unfold(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-sample correlation as unfold + weighted sum: batch-size generic under tracing
    (TorchScript export); same result as the grouped convolution."""
    k = int(kernel.shape[-1])  # fixed by the network: a constant in the trace
    r = k // 2
    yp = F.pad(y, (r, r, r, r), mode="reflect")
    cols = F.unfold(yp.flatten(0, 1).unsqueeze(1), k)  # (B·C, k·k, H·W)
    cols = cols.reshape(y.shape[0], y.shape[1], k * k, -1)
    out = (cols * kernel.reshape(kernel.shape[0], 1, k * k, 1)).sum(2)
    return out.reshape(y.shape)


def apply_enhancement_reference(images, color_matrix, color_shift, kernel) -> torch.Tensor:
    """Slow per-image loop version of :func:`apply_enhancement` (for tests)."""
    out = []
    k = kernel.shape[-1]
    for i in range(images.shape[0]):
        x = images[i]
        y = (color_matrix[i] @ x.reshape(x.shape[0], -1)).reshape(x.shape) + color_shift[i][:, None, None]
        yp = F.pad(y.unsqueeze(0), (k // 2,) * 4, mode="reflect")
        w = kernel[i].expand(x.shape[0], 1, k, k)
        out.append(F.conv2d(yp, w, groups=x.shape[0])[0])
    return torch.stack(out).clamp(0.0, 1.0)


def estimate_noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel noise standard deviation ``(B, C)`` (Immerkær 1996).

    The image is filtered with the Laplacian-difference mask
    ``[[1,-2,1],[-2,4,-2],[1,-2,1]]`` (which cancels smooth structure) and
    σ = sqrt(π/2) / (6 (W-2)(H-2)) · Σ|response|. Exact for white Gaussian noise on
    a constant image; used as an explicit input feature of :class:`EnhanceNet`.
    """
    b, c, h, w = images.shape
    m = images.new_tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    r = F.conv2d(images.reshape(b * c, 1, h, w), m[None, None])
    return (math.sqrt(math.pi / 2) / 6.0 * r.abs().mean(dim=(1, 2, 3))).reshape(b, c)


class EnhanceNet(nn.Module):
    """The noise-estimation network: image → (colour matrix, colour shift, kernel).

    Input ``(B, C, H, W)`` float in [0, 1], resized to at most ``analysis_px``
    (bilinear, antialiased) for the analysis; three stride-2 Conv-ReLU layers,
    global average pooling, concatenated with the explicit noise estimate
    (:func:`estimate_noise_sigma`) and a two-layer head. The output layer is
    zero-initialised so the front-end starts as the identity.

    ``forward`` returns ``color_matrix (B, C, C)``, ``color_shift (B, C)`` and
    ``kernel (B, k, k)`` (taps sum to 1: it redistributes, never changes the mean).

    Example:
        >>> import torch
        >>> net = EnhanceNet(channels=3, kernel_size=5)
        >>> m, t, k = net(torch.rand(2, 3, 32, 32))
        >>> tuple(m.shape), tuple(t.shape), tuple(k.shape)
        ((2, 3, 3), (2, 3), (2, 5, 5))
    """

    def __init__(self, channels: int = 3, kernel_size: int = 5, width: int = 16, analysis_px: int = 64):
        super().__init__()
        if channels not in (1, 3):
            raise InvalidParameterError("channels", channels, "1 or 3")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InvalidParameterError("kernel_size", kernel_size, "an odd integer >= 1, e.g. 5")
        self.channels, self.kernel_size, self.analysis_px = channels, kernel_size, analysis_px
        c, w = channels, width
        self.features = nn.Sequential(
            nn.Conv2d(c, w, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        n_out = c * c + c + kernel_size * kernel_size
        last = nn.Linear(4 * w, n_out)
        self.head = nn.Sequential(nn.Linear(2 * w + c, 4 * w), nn.ReLU(inplace=True), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        delta = torch.zeros(kernel_size, kernel_size)
        delta[kernel_size // 2, kernel_size // 2] = 1.0
        self.register_buffer("delta", delta, persistent=False)
        self.register_buffer("eye", torch.eye(c), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c = images.shape[:2]
        x = images
        if max(x.shape[-2:]) > self.analysis_px:
            x = F.interpolate(
                x, size=(self.analysis_px,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        sigma = estimate_noise_sigma(x)
        feats = torch.cat([self.features(x - 0.5).flatten(1), sigma * 10.0], dim=1)
        out = self.head(feats)
        matrix = self.eye + out[:, : c * c].reshape(b, c, c)
        shift = out[:, c * c : c * c + c]
        r = out[:, c * c + c :].reshape(b, self.kernel_size, self.kernel_size)
        kernel = self.delta + r - r.mean(dim=(1, 2), keepdim=True)
        return matrix, shift, kernel

    def enhance(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] → enhanced images, same shape."""
        return apply_enhancement(images, *self(images))


class EnhancedClassifier(nn.Module):
    """``classifier(front_end.enhance(images))``: plugs the front-end in front of any
    model that maps images in [0, 1] to logits."""

    def __init__(self, front_end: EnhanceNet, classifier: nn.Module):
        super().__init__()
        self.front_end, self.classifier = front_end, classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.front_end.enhance(images))


class EnhanceConfig(BaseModel):
    """Hyper-parameters of front-end training (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(6, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    kernel_size: int = Field(5, ge=1)
    width: int = Field(16, ge=2)
    p_clean: float = Field(0.25, ge=0, le=1, description="share of training images left clean (severity 0)")
    consistency_weight: float = Field(1.0, ge=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    clip_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    labels: Literal["labels", "clean-predictions"] = Field(
        "labels",
        description="training targets: the data set's labels, or (label-free) the frozen "
        "classifier's own soft predictions on the clean image",
    )
    temperature: float = Field(2.0, gt=0, le=100, description="clean-predictions: softmax temperature T")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (3, 5, 7 …) so the kernel has a centre tap")
        return v


@dataclass
class EnhanceResult:
    front_end: EnhanceNet
    teacher: EnhanceNet
    history: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def _ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
        pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)


def train_enhancer(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    mix: RandomDegradation,
    config: EnhanceConfig | None = None,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> EnhanceResult:
    """Train an :class:`EnhanceNet` in front of the frozen ``classifier``.

    Each batch is degraded by ``mix``'s ranges with ``config.p_clean`` of the images
    left clean (severity 0).

    ``config.labels == "clean-predictions"`` (label-free; ``labels`` may be ``None``): the
    frozen classifier's soft predictions on the *clean* training images, ``softmax(z/T)`` with
    ``T = config.temperature``, are computed once, and the task loss is
    ``T² · KL(p_clean,T ‖ softmax(classifier(enhance(x̃))/T))`` on the degraded ``x̃``: any
    folder of photos from the target camera is enough. ``train_acc`` in the history is then
    the agreement with the clean prediction.

    Loss = cross-entropy of ``classifier(enhance(x))`` against the labels
    + ``consistency_weight`` × KL(teacher ‖ student) between the classifier's
    predictions through the EMA-teacher front-end and through the student.
    Gradients are clipped to ``clip_grad_norm``. The classifier is never updated
    (eval mode, ``requires_grad`` off during training, restored afterwards).

    Returns the student and the EMA teacher; the teacher is the one to deploy
    (smoother, usually as good or better).
    """
    config = config or EnhanceConfig()
    device = torch.device(device)
    soft = None
    if config.labels == "clean-predictions":
        soft = clean_soft_targets(classifier.to(device), images, config.temperature, device=device)
        labels = soft.argmax(1)
    elif labels is None:  # checked before the classifier is touched
        raise InvalidParameterError(
            "labels", None, "class labels, or labels='clean-predictions' (label-free)"
        )
    c = int(images.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(keyed_seed(config.seed, "enhance-init"))
        student = EnhanceNet(c, config.kernel_size, config.width).to(device)
    teacher = copy.deepcopy(student).requires_grad_(False)
    mix = RandomDegradation(mix.ranges, p_clean=config.p_clean, levels=mix.levels)
    classifier.eval().to(device)
    saved = [p.requires_grad for p in classifier.parameters()]
    classifier.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=config.lr)
    n = images.shape[0]
    steps = math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps, pct_start=0.15
    )
    result = EnhanceResult(student, teacher)
    from tqdm.auto import tqdm

    try:
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=keyed_generator(config.seed, "enhance-shuffle", epoch))
            g = keyed_generator(config.seed, "enhance-degrade", epoch)
            tot = {"ce": 0.0, "cons": 0.0, "ok": 0, "seen": 0}
            bar = tqdm(
                range(steps), desc=f"enhance {epoch + 1}/{config.epochs}", disable=not progress, leave=False
            )
            for step in bar:
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x = mix(as_float_images(images[idx]), g).to(device)
                y = labels[idx].to(device)
                logits = classifier(student.enhance(x))
                if soft is None:
                    ce = F.cross_entropy(logits, y)
                else:
                    ce = distillation_loss(logits, soft[idx].to(device), config.temperature)
                with torch.no_grad():
                    p_teacher = torch.softmax(classifier(teacher.enhance(x)), dim=1)
                cons = F.kl_div(torch.log_softmax(logits, dim=1), p_teacher, reduction="batchmean")
                loss = ce + config.consistency_weight * cons
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), config.clip_grad_norm)
                opt.step()
                sched.step()
                _ema_update(teacher, student, config.ema_decay)
                b = len(idx)
                tot["ce"] += ce.item() * b
                tot["cons"] += cons.item() * b
                tot["ok"] += int((logits.argmax(1) == y).sum())
                tot["seen"] += b
                if progress and step % 10 == 0:
                    bar.set_postfix(ce=f"{tot['ce'] / tot['seen']:.3f}", acc=f"{tot['ok'] / tot['seen']:.3f}")
            rec = {
                "epoch": epoch + 1,
                "ce": tot["ce"] / tot["seen"],
                "consistency": tot["cons"] / tot["seen"],
                "train_acc": tot["ok"] / tot["seen"],
                "seconds": time.perf_counter() - t0,
            }
            result.history.append(rec)
            if on_epoch is not None:
                on_epoch(rec)
    finally:
        for p, r in zip(classifier.parameters(), saved, strict=True):
            p.requires_grad_(r)
    student.eval()
    teacher.eval()
    return result


@torch.inference_mode()
def clean_soft_targets(
    classifier: nn.Module, images: torch.Tensor, temperature: float, *, batch_size: int = 64, device="cpu"
) -> torch.Tensor:
    """``softmax(classifier(x) / T)`` ``(N, K)`` on the clean images (eval mode, batched, on the CPU)."""
    was = classifier.training
    classifier.eval()
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = as_float_images(images[s : s + batch_size]).to(device)
        out.append(torch.softmax(classifier(x).float() / temperature, dim=1).cpu())
    classifier.train(was)
    return torch.cat(out)


def distillation_loss(logits: torch.Tensor, soft_targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(soft_targets ‖ softmax(logits / T))``, mean over the batch (Hinton et al. 2015;
    the T² keeps gradient magnitudes comparable across temperatures)."""
    logp = torch.log_softmax(logits / temperature, dim=1)
    return F.kl_div(logp, soft_targets, reduction="batchmean") * temperature**2


def count_flops(fn: Callable[[torch.Tensor], Any] | nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one call ``fn(example)`` (2 per multiply-add; convolutions, matrix
    products, einsums), counted with :class:`torch.utils.flop_counter.FlopCounterMode`.
    Divide by the batch size for FLOPs per image."""
    from torch.utils.flop_counter import FlopCounterMode

    was = fn.training if isinstance(fn, nn.Module) else None
    if isinstance(fn, nn.Module):
        fn.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(example)
    if isinstance(fn, nn.Module) and was:
        fn.train()
    return int(counter.get_total_flops())
