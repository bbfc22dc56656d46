"""Training with degraded data: the constant, incremental and transfer strategies.

* ``clean``       – the baseline: no image degraded.
* ``constant``    – every training image degraded (level drawn per image).
* ``incremental`` – the degraded share of each batch grows linearly per epoch,
  from ``start_share`` (5 %) in the first epoch to ``end_share`` (100 %) in the last.
* ``transfer``    – the head of a trained model is replaced by new fully connected
  layers (256 then 512 units) and the whole network is fine-tuned on degraded data.

Reproducible and resumable: the shuffle order, the degradations and dropout of
epoch ``e`` come from generators keyed on ``(seed, e)`` only, and after every
epoch the model, optimiser, LR schedule and history are written atomically to
``checkpoint_dir/last.pt``. A run killed at any point and resumed gives the same
weights, bit for bit, as an uninterrupted one (CPU).

Thread-count independent: training runs with ``config.threads`` torch threads (1 by
default) whatever the caller set, under ``torch.use_deterministic_algorithms``
(``warn_only``), and restores both afterwards. The thread count is part of the
configuration and so of the checkpoint fingerprint: a checkpoint trained with
another count is refused, never silently resumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from weakspot.errors import ConfigError, InvalidParameterError
from weakspot.evaluate.store import atomic_write_bytes
from weakspot.random import keyed_generator, keyed_seed
from weakspot.robustify.mix import RandomDegradation
from weakspot.robustify.nets import replace_head

__all__ = [
    "STRATEGIES",
    "TrainConfig",
    "TrainResult",
    "degraded_share",
    "train_classifier",
    "load_checkpoint",
    "as_float_images",
]

STRATEGIES = ("clean", "constant", "incremental", "transfer")
Strategy = Literal["clean", "constant", "incremental", "transfer"]


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "constant"
    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    start_share: float = Field(0.05, ge=0, le=1, description="incremental: degraded share in epoch 1")
    end_share: float = Field(1.0, ge=0, le=1, description="incremental: degraded share in the last epoch")
    transfer_hidden: tuple[int, ...] = (256, 512)
    transfer_lr_scale: float = Field(0.5, gt=0, le=1, description="transfer: lr multiplier for fine-tuning")
    labels: Literal["labels", "clean-predictions"] = Field(
        "labels",
        description="targets: the labels, or (label-free) the soft predictions of a frozen model on "
        "the clean image, passed as train_classifier(soft_targets=...)",
    )
    temperature: float = Field(2.0, gt=0, le=100, description="clean-predictions: softmax temperature T")
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="torch CPU threads used during training (set for the run and restored after): the "
        "weights do not depend on the caller's thread count; part of the checkpoint fingerprint",
    )


def degraded_share(strategy: str, epoch: int, epochs: int, start: float = 0.05, end: float = 1.0) -> float:
    """Share of each batch that is degraded in ``epoch`` (0-based) of ``epochs``."""
    if strategy == "clean":
        return 0.0
    if strategy in ("constant", "transfer"):
        return 1.0
    if strategy == "incremental":
        if epochs <= 1:
            return end
        return start + (end - start) * epoch / (epochs - 1)
    raise InvalidParameterError("strategy", strategy, " | ".join(STRATEGIES))


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float in [0, 1]; float passes through."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


@dataclass
class TrainResult:
    """The trained model and what happened: one dict per epoch in ``history``
    (``epoch``, ``loss``, ``train_acc``, ``share``, ``lr``, ``seconds``)."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    checkpoint: Path | None = None


def _fingerprint(
    config: TrainConfig,
    mix: RandomDegradation,
    n: int,
    shape: tuple,
    model: nn.Module,
    soft_targets: torch.Tensor | None = None,
) -> str:
    arch = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    cfg = config.model_dump(mode="json")
    if cfg["labels"] == "labels":  # labelled training: the fingerprint of earlier versions is kept
        cfg.pop("labels"), cfg.pop("temperature")
    text = json.dumps([cfg, mix.name, n, list(shape), arch], sort_keys=True)
    if soft_targets is not None:
        text += hashlib.sha256(soft_targets.float().contiguous().numpy().tobytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`train_classifier` (a dict with ``model``,
    ``optimizer``, ``scheduler``, ``epoch``, ``config``, ``history``, ``fingerprint``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; train first with 'weakspot robustify'")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"checkpoint {path} cannot be read ({exc}); delete it and train again") from None


def _batch_mask(b: int, share: float, g: torch.Generator) -> torch.Tensor | None:
    if share >= 1.0:
        return None
    k = int(round(share * b))
    mask = torch.zeros(b, dtype=torch.bool)
    mask[torch.randperm(b, generator=g)[:k]] = True
    return mask


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mix: RandomDegradation,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    device: str | torch.device = "cpu",
    desc: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    soft_targets: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model`` on ``images``/``labels`` with the strategy of ``config``.

    Label-free (``config.labels == "clean-predictions"``): ``soft_targets`` ``(N, K)`` are a
    frozen model's ``softmax(z / T)`` on the *clean* images (see
    :func:`weakspot.robustify.enhance.clean_soft_targets`), ``labels`` may be ``None``, and the
    loss is ``T² · KL(soft ‖ softmax(model(x̃) / T))`` on the degraded ``x̃``; ``train_acc`` is then
    the agreement with the clean prediction.

    Args:
        model: maps ``(B, C, H, W)`` images in [0, 1] to logits ``(B, K)``; for the
            ``transfer`` strategy a trained model whose last ``nn.Linear`` is replaced.
            Trained in place (and returned).
        images: ``(N, C, H, W)`` uint8 or float in [0, 1] (kept on the CPU; batches
            move to ``device``).
        labels: ``(N,)`` int64 class ids.
        mix: the random degradation applied to the degraded share of each batch.
        config: :class:`TrainConfig`.
        checkpoint_dir: where ``last.pt`` is written after every epoch; with
            ``resume=True`` an existing compatible checkpoint is continued.
        progress: show a tqdm progress bar per epoch.
    """
    config = config or TrainConfig()
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    det_warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(
            model,
            images,
            labels,
            mix,
            config,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress,
            device=device,
            desc=desc,
            on_epoch=on_epoch,
            soft_targets=soft_targets,
        )
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det_before, warn_only=det_warn_before)


def _train(
    model,
    images,
    labels,
    mix,
    config: TrainConfig,
    *,
    checkpoint_dir,
    resume,
    progress,
    device,
    desc,
    on_epoch,
    soft_targets=None,
) -> TrainResult:
    if config.labels == "clean-predictions":
        if soft_targets is None or soft_targets.ndim != 2 or soft_targets.shape[0] != images.shape[0]:
            raise InvalidParameterError(
                "soft_targets",
                None if soft_targets is None else tuple(soft_targets.shape),
                "(N, K) clean-image soft predictions of the frozen model (clean_soft_targets)",
            )
        labels = soft_targets.argmax(1)
    else:
        soft_targets = None
        if labels is None:
            raise InvalidParameterError(
                "labels", None, "class labels, or labels='clean-predictions' (label-free)"
            )
    if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise InvalidParameterError(
            "images/labels",
            f"{tuple(images.shape)} / {tuple(labels.shape)}",
            "(N, C, H, W) and (N,) with the same N",
        )
    if images.shape[0] == 0:
        raise InvalidParameterError("images", "0 images", "at least one training image")
    device = torch.device(device)
    if config.strategy == "transfer":
        replace_head(model, config.transfer_hidden, generator_seed=keyed_seed(config.seed, "transfer-head"))
    model.to(device)
    lr = config.lr * (config.transfer_lr_scale if config.strategy == "transfer" else 1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    fp = _fingerprint(config, mix, n, tuple(images.shape[1:]), model, soft_targets)
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    result = TrainResult(model=model, checkpoint=ckpt)
    start = 0
    if ckpt is not None and resume and ckpt.is_file():
        state = load_checkpoint(ckpt, device)
        if state.get("fingerprint") != fp:
            raise ConfigError(
                f"checkpoint {ckpt} was written by a different configuration or data set; "
                "use a new output folder or --no-resume to start over"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        result.history = list(state["history"])
        start = result.resumed_from_epoch = int(state["epoch"])

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        share = degraded_share(config.strategy, epoch, config.epochs, config.start_share, config.end_share)
        order = torch.randperm(n, generator=keyed_generator(config.seed, "shuffle", epoch))
        g_deg = keyed_generator(config.seed, "degrade", epoch)
        g_mask = keyed_generator(config.seed, "mask", epoch)
        model.train()
        tot_loss, tot_ok, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{desc or config.strategy} {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
            unit="batch",
        )
        # dropout draws from torch's global generator: isolate and key it per epoch
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(keyed_seed(config.seed, "dropout", epoch))
            for step in bar:
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                x = as_float_images(images[idx])
                y = labels[idx]
                if share > 0:
                    x = mix(x, g_deg, _batch_mask(len(idx), share, g_mask))
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                if soft_targets is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    logp = torch.log_softmax(logits / config.temperature, dim=1)
                    loss = (
                        F.kl_div(logp, soft_targets[idx].to(device), reduction="batchmean")
                        * config.temperature**2
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot_loss += loss.item() * len(idx)
                tot_ok += int((logits.argmax(1) == y).sum())
                seen += len(idx)
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_ok / seen:.3f}")
        rec = {
            "epoch": epoch + 1,
            "loss": tot_loss / seen,
            "train_acc": tot_ok / seen,
            "share": share,
            "lr": float(sched.get_last_lr()[0]),
            "seconds": time.perf_counter() - t0,
        }
        result.history.append(rec)
        if ckpt is not None:
            _save(
                ckpt,
                {
                    "format": 1,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "config": config.model_dump(mode="json"),
                    "mix": mix.name,
                    "history": result.history,
                    "fingerprint": fp,
                },
            )
        if on_epoch is not None:
            on_epoch(rec)
    model.eval()
    return result
