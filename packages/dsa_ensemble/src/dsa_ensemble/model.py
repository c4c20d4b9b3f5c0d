"""``DSAModel``: any backbone (a timm model, the CIFAR WideResNet-28-2, a small CNN) + S heads.

The backbone gives a (B, C, H, W) map: timm models through ``forward_features`` (token outputs of
ViT-style models are reshaped to their patch grid), other modules through ``forward_features`` if
they have it, else their ``forward``. The head block is chosen by ``head_type``:

- ``"single"``: one head (the supervised baseline);
- ``"mhe"``: S identical Linear heads on one pooled feature;
- ``"cbe"``: the DSA split without adapters (train with the decorrelation loss, lambda_fd = 1);
- ``"dsa"``: expansion, private/shared split, structure-diverse adapters, per-head init and noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsa_ensemble.heads import DSAHead, HeadOutput, MultiHeadEnsemble, SingleHead

__all__ = ["HEAD_TYPES", "DSAModel", "SmallCNN", "WideResNet", "build_backbone", "wrn28_2"]

HEAD_TYPES = ("single", "mhe", "cbe", "dsa")


class _WRNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activate_before_residual: bool,
                 bn_momentum: float):  # fmt: skip
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=bn_momentum)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.abr = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equal and self.abr:
            x = F.leaky_relu(self.bn1(x), 0.1)
            out = x
        else:
            out = F.leaky_relu(self.bn1(x), 0.1)
        out = F.leaky_relu(self.bn2(self.conv1(out if self.equal else x)), 0.1)
        out = self.conv2(out)
        return (x if self.equal else self.shortcut(x)) + out


class WideResNet(nn.Module):
    """The FixMatch/DSA CIFAR WideResNet (LeakyReLU 0.1, BN momentum 0.001) without its classifier.

    ``forward_features`` returns the last block's map (B, 64*widen, H/4, W/4) before the final BN,
    which is where the official DSA block attaches. WRN-28-2 at 32x32: (B, 128, 8, 8).
    """

    def __init__(self, depth: int = 28, widen_factor: int = 2, in_chans: int = 3,
                 bn_momentum: float = 0.001):  # fmt: skip
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, ch[0], 3, 1, 1, bias=False)
        blocks = []
        for i, stride in enumerate((1, 2, 2)):
            for j in range(n):
                cin = ch[i] if j == 0 else ch[i + 1]
                blocks.append(_WRNBlock(cin, ch[i + 1], stride if j == 0 else 1,
                                        activate_before_residual=(i == 0),
                                        bn_momentum=bn_momentum))  # fmt: skip
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch[3]
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.conv1(x))

    forward = forward_features


def wrn28_2(in_chans: int = 3, bn_momentum: float = 0.001) -> WideResNet:
    """WideResNet-28-2 (1.47M backbone parameters), the CIFAR-10 recipe's trunk."""
    return WideResNet(28, 2, in_chans, bn_momentum)


class SmallCNN(nn.Module):
    """A small CNN trunk for 8x8 digits (the spec's CPU calibration): 3 conv-BN-ReLU, C=64, 4x4."""

    def __init__(self, in_chans: int = 1, width: int = 64, bn_momentum: float = 0.1):
        super().__init__()
        self.num_features = width
        self.net = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32, momentum=bn_momentum), nn.ReLU(),
            nn.Conv2d(32, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width, momentum=bn_momentum), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width, momentum=bn_momentum), nn.ReLU(),
        )  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    forward = forward_features


def build_backbone(name: str, in_chans: int = 3, weights: str | None = None,
                   bn_momentum: float = 0.001) -> nn.Module:  # fmt: skip
    """``"wrn28_2"``, ``"wrn28_8"``, ``"small_cnn"`` or any timm model name (``pretrained=False``;
    ``weights`` is a local state-dict file loaded into the timm model, never a download)."""
    from labcore.cli import UserError

    if name == "wrn28_2":
        return wrn28_2(in_chans, bn_momentum)
    if name == "wrn28_8":
        return WideResNet(28, 8, in_chans, bn_momentum)
    if name == "small_cnn":
        return SmallCNN(in_chans)
    import timm

    if not timm.is_model(name):
        raise UserError(
            f"unknown backbone {name!r}: not wrn28_2/wrn28_8/small_cnn nor a timm model"
        )
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    if weights:
        from pathlib import Path

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"no such weights file: {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state) if isinstance(state, dict) else state
            missing, _ = model.load_state_dict(state, strict=False)
        except Exception as e:
            raise UserError(f"{path}: cannot load weights into {name} ({type(e).__name__}: {e})"
                            ) from None  # fmt: skip
        if len(missing) == len(model.state_dict()):
            raise UserError(f"{path}: no tensor matches {name}'s parameter names")
    return model


def _as_map(feat: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """(B, C, H, W) from a backbone output; (B, N, C) tokens become their patch grid."""
    if feat.ndim == 4:
        return feat
    if feat.ndim == 3:
        prefix = getattr(backbone, "num_prefix_tokens", 0)
        tokens = feat[:, prefix:]
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"cannot arrange {tokens.shape[1]} tokens as a square grid")
        return tokens.transpose(1, 2).reshape(feat.shape[0], feat.shape[2], side, side)
    if feat.ndim == 2:
        return feat[:, :, None, None]
    raise ValueError(f"unsupported backbone output shape {tuple(feat.shape)}")


class DSAModel(nn.Module):
    """A backbone and a multi-head block; ``forward(x)`` returns a list of S logit tensors.

    Args:
        backbone: an ``nn.Module`` (timm model, :class:`WideResNet`, ...) or a name for
            :func:`build_backbone`.
        num_classes: K.
        heads: S (ignored for ``head_type="single"``).
        head_type: ``"single" | "mhe" | "cbe" | "dsa"``.
        in_chans, input_size: used to build a named backbone and to find C by one dry forward when
            the backbone does not state ``num_features``.
        **head_kwargs: passed to :class:`~dsa_ensemble.heads.DSAHead` (cbe/dsa), e.g.
            ``head_bn="shared"``, ``adapter_widths=(64, 128, 64)``, ``expand=False``.
    """

    def __init__(self, backbone: nn.Module | str, num_classes: int, heads: int = 5,
                 head_type: str = "dsa", in_chans: int = 3, input_size: int = 32,
                 bn_momentum: float = 0.001, **head_kwargs):  # fmt: skip
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {head_type!r}")
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, in_chans, bn_momentum=bn_momentum)
        self.backbone = backbone
        self.head_type = head_type
        c = self._feature_channels(in_chans, input_size)
        if head_type == "single":
            self.head = SingleHead(c, num_classes, bn_momentum)
        elif head_type == "mhe":
            self.head = MultiHeadEnsemble(c, num_classes, heads, bn_momentum)
        else:
            head_kwargs.setdefault("bn_momentum", bn_momentum)
            self.head = DSAHead(c, num_classes, heads, adapters=head_type == "dsa", **head_kwargs)
        self.num_heads = self.head.num_heads
        self.num_classes = num_classes

    def _feature_channels(self, in_chans: int, input_size: int) -> int:
        c = getattr(self.backbone, "num_features", None)
        if isinstance(c, int) and c > 0 and not hasattr(self.backbone, "patch_embed"):
            return c
        was = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            f = self.features(torch.zeros(1, in_chans, input_size, input_size))
        self.backbone.train(was)
        return f.shape[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        fwd = getattr(self.backbone, "forward_features", None)
        feat = fwd(x) if fwd is not None else self.backbone(x)
        return _as_map(feat, self.backbone)

    def forward_heads(self, x: torch.Tensor) -> HeadOutput:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor, return_private: bool = False):
        """S logit tensors; with ``return_private`` the full :class:`HeadOutput`."""
        out = self.forward_heads(x)
        return out if return_private else out.logits
