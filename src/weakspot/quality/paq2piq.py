"""PaQ-2-PiQ (Ying et al., CVPR 2020): a ResNet-18 body with RoI pooling over the
whole image and a grid of patches, giving a global quality score and a local
patch map from one forward pass. Higher = better (MOS scale, about 0–100), the
opposite sense of NIQE/BRISQUE.

No weights are bundled and nothing downloads: pass the file you have
(the authors' ``RoIPoolModel-fit.10.bs.120.pth`` or pyiqa's
``P2P_RoIPoolModel-fit.10.bs.120-*.pth``) to :func:`load_paq2piq`, or set
``WEAKSPOT_PAQ2PIQ_WEIGHTS``. pyiqa reports only the global score; here
:meth:`PaQ2PiQ.predict` returns the local map too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from weakspot._checks import check_images
from weakspot.errors import ModelLoadError

__all__ = ["PaQ2PiQ", "PaQ2PiQResult", "load_paq2piq", "WEIGHTS_ENV"]

WEIGHTS_ENV = "WEAKSPOT_PAQ2PIQ_WEIGHTS"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class _ConcatPool(nn.Module):
    """Global max and average pooling, concatenated along channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=(-2, -1), keepdim=True), x.mean(dim=(-2, -1), keepdim=True)], 1)


@dataclass
class PaQ2PiQResult:
    """``score (B,)`` global quality and ``local_map (B, rows, cols)`` patch qualities."""

    score: torch.Tensor
    local_map: torch.Tensor


class PaQ2PiQ(nn.Module):
    """The RoIPool model. ``forward(x, rois)`` takes normalised images ``(B, 3, H, W)``
    and boxes ``(R, 5)`` = (image index, x1, y1, x2, y2) in input pixels → ``(R,)``."""

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18
        from torchvision.ops import RoIPool

        r = resnet18(weights=None)
        self.body = nn.Sequential(*list(r.children())[:-2])  # stride 32, 512 channels
        self.head = nn.Sequential(
            _ConcatPool(),
            nn.Flatten(),
            nn.BatchNorm1d(1024),
            nn.Dropout(0.25),
            nn.Linear(1024, 512),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(512),
            nn.Dropout(0.5),
            nn.Linear(512, 1),
        )
        self.roi_pool = RoIPool((2, 2), spatial_scale=1 / 32)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        return self.head(self.roi_pool(feats, rois.to(feats.dtype))).view(-1)

    @staticmethod
    def grid_rois(batch: int, height: int, width: int, grid=(20, 20), device=None) -> torch.Tensor:
        """The whole-image box then ``rows × cols`` cell boxes for each image → ``(B·(1+rows·cols), 5)``."""
        rows, cols = grid
        ys = torch.linspace(0, height, rows + 1)
        xs = torch.linspace(0, width, cols + 1)
        y1, x1 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
        y2, x2 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
        cells = torch.stack([x1, y1, x2, y2], -1).reshape(-1, 4)
        boxes = torch.cat([torch.tensor([[0.0, 0.0, width, height]]), cells])
        idx = torch.arange(batch, dtype=torch.float32).repeat_interleave(boxes.shape[0]).unsqueeze(1)
        return torch.cat([idx, boxes.repeat(batch, 1)], 1).to(device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, grid=(20, 20)) -> PaQ2PiQResult:
        """Global score and ``grid`` patch map of ``(B, 3, H, W)`` images in [0, 1] (higher = better)."""
        check_images(images)
        self.eval()
        b, _, h, w = images.shape
        x = (images.to(self.mean.device) - self.mean) / self.std
        rois = self.grid_rois(b, h, w, grid, device=x.device)
        out = self(x, rois).view(b, 1 + grid[0] * grid[1]).float().cpu()
        return PaQ2PiQResult(out[:, 0], out[:, 1:].reshape(b, *grid))


def load_paq2piq(path: str | Path | None = None, device: str | torch.device = "cpu") -> PaQ2PiQ:
    """Build PaQ-2-PiQ and load weights from ``path`` (or ``$WEAKSPOT_PAQ2PIQ_WEIGHTS``).

    Accepts a plain state dict or one nested under ``model``/``params``/``state_dict``,
    with or without a ``module.``/``net.`` prefix. Raises :class:`ModelLoadError`
    saying what to do when no file is given or it does not fit the architecture.
    """
    path = path or os.environ.get(WEIGHTS_ENV)
    if not path:
        raise ModelLoadError(
            "PaQ-2-PiQ weights are not bundled and cannot be downloaded here; pass the file you have "
            f"(e.g. RoIPoolModel-fit.10.bs.120.pth) or set {WEIGHTS_ENV}=/path/to/weights.pth. "
            "NIQE and BRISQUE need no weights"
        )
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"PaQ-2-PiQ weights file not found: {p}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of all kinds
        raise ModelLoadError(f"cannot read PaQ-2-PiQ weights {p}: {exc}") from None
    for key in ("model", "params", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{p} does not hold a state dict (got {type(sd).__name__})")
    for prefix in ("module.", "net."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    model = PaQ2PiQ()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelLoadError(f"{p} is not a PaQ-2-PiQ (ResNet-18 RoIPool) state dict: {first}") from None
    return model.to(device).eval()
