"""A real, small segmenter: a timm backbone (``features_only=True``) and a light FPN decoder.

The paper's model is SegNeXt-L (MSCAN-L + LightHamHead); it is not feasible on a 2-core CPU, so
the demo uses timm ``resnet18`` (random init unless a checkpoint is given). The AUC loss and the
bank are model-agnostic: the paper plugs them into DeepLabV3+, OCRNet, EMANet and ISANet alike.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch.nn.functional as F
from torch import Tensor, nn

from labcore.cli import UserError

__all__ = ["FPNSegmenter", "build_segmenter"]


def _conv_norm_relu(cin: int, cout: int, k: int, norm: str) -> nn.Sequential:
    if norm == "bn":
        layer = nn.BatchNorm2d(cout)
    elif norm == "gn":  # batch-independent: the same numbers for any split of a batch
        layer = nn.GroupNorm(8 if cout % 8 == 0 else 1, cout)
    else:
        raise UserError(f"norm must be 'bn' or 'gn', got {norm!r}")
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), layer, nn.ReLU(True))


class FPNSegmenter(nn.Module):
    r"""Backbone features :math:`C_2..C_5` (strides 4–32) -> FPN top-down path -> per-pixel logits.

    Decoder: lateral 1×1 convs to ``channels`` on the backbone levels at strides ≥ 4;
    :math:`P_l = L_l + \mathrm{up}(P_{l+1})`; every :math:`P_l` is upsampled to stride 4 and
    summed, then a 3×3 conv-norm-ReLU, dropout and a 1×1 classifier. ``norm="bn"`` (default)
    or ``"gn"`` (GroupNorm, for batch-split-invariant runs)
    in the decoder. ``forward(x (B, 3, H, W)) -> logits (B, K, H/4, W/4)``; the loss upsamples them
    to the label size (as the mmseg decode head does); :meth:`predict` returns (B, K, H, W).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        channels: int = 64,
        pretrained: bool = False,
        checkpoint_path: str = "",
        dropout: float = 0.1,
        norm: str = "bn",
    ):
        super().__init__()
        self.backbone = timm.create_model(
            backbone,
            features_only=True,
            pretrained=pretrained or bool(checkpoint_path),
            pretrained_cfg_overlay={"file": checkpoint_path} if checkpoint_path else None,
        )
        # the levels at strides >= 4 (resnets also expose a stride-2 stem level; convnexts not)
        reductions = self.backbone.feature_info.reduction()
        self._levels = [i for i, r in enumerate(reductions) if r >= 4]
        in_ch = [self.backbone.feature_info.channels()[i] for i in self._levels]
        self.strides = [reductions[i] for i in self._levels]
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_ch)
        self.fuse = _conv_norm_relu(channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        feats = self.backbone(x)
        feats = [feats[i] for i in self._levels]
        p = self.lateral[-1](feats[-1])
        outs = [p]
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            p = lat(f) + F.interpolate(p, f.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(p)
        size = outs[-1].shape[-2:]  # the finest level
        fused = sum(F.interpolate(o, size, mode="bilinear", align_corners=False) for o in outs[:-1])
        return self.classifier(self.dropout(self.fuse(fused + outs[-1])))

    def predict(self, x: Tensor) -> Tensor:
        """Logits upsampled to the input size, (B, K, H, W)."""
        return F.interpolate(self(x), x.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(num_classes: int, backbone: str = "resnet18", **kw) -> FPNSegmenter:
    """An :class:`FPNSegmenter`; ``backbone`` is any timm model supporting ``features_only``."""
    path = kw.get("checkpoint_path") or ""
    if path and not Path(path).is_file():
        raise UserError(f"backbone checkpoint not found: {path}")
    try:
        return FPNSegmenter(num_classes, backbone, **kw)
    except RuntimeError as e:
        what = f"backbone {backbone!r}" + (f" from {path}" if path else "")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot build {what}: {first}") from None
