"""Heads on extracted features: per-pixel linear probe, the DDPM-segmentation MLP ensemble, the
correspondence nearest-neighbour and conv heads with PCK@α, and the label-scarce protocol.

Shapes: features ``(N, C, h, w)`` (any h, w: they are resized to the label size), labels
``(N, H, W)`` int with ``ignore_index`` for unlabeled pixels.

**MLP ensemble** (DDPM-segmentation protocol, Baranchuk et al.):
10 MLPs ``C → 128 → 32 → K`` (``256 → 128`` when K ≥ 30), ReLU + BatchNorm1d, weights
N(0, 0.02); Adam 1e-3, batch 64, ≤ 100 epochs; after epoch 3, stop once the loss has not
improved for 50 iterations; prediction = per-pixel mode of the 10 argmaxes; per image, labels
with fewer than 20 pixels are ignored (set to ``ignore_index``) in training. Under ``torchrun``
each rank trains its share of the 10 MLPs (``labcore.dist.shard``) and the votes are summed.

**Correspondence** (DHF-derived): features bilinearly resized to 128² and concatenated; ``nn`` =
raw features, ``conv`` = one bias-free 3×3 conv dim → dim trained with a CLIP-style symmetric
cross-entropy over the keypoint pixels at a fixed logit scale 1/0.07 (AdamW 5e-4, wd 0.01).
Prediction = argmax cosine over all target pixels after bilinear upsampling to the image size;
PCK@α with radius α·max(side) of the image or of the bbox, in original pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labcore.cli import UserError
from labcore.metrics import ConfusionMatrix

__all__ = [
    "ConvCorrespondenceHead",
    "LinearProbe",
    "MLPEnsemble",
    "label_scarce_protocol",
    "nn_correspondence",
    "pck",
    "pixel_features",
    "rare_labels_ignored",
    "train_conv_head",
]


def pixel_features(feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) → (N·H·W, C) after bilinear resizing to ``size`` (the DDPM-seg layout)."""
    x = feats.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def rare_labels_ignored(labels: torch.Tensor, min_pixels: int = 20, ignore_index: int = 255):
    """Per image, set labels with fewer than ``min_pixels`` pixels to ``ignore_index``."""
    out = labels.clone().long()
    for i in range(out.shape[0]):
        vals, counts = torch.unique(out[i], return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist()):
            if v != ignore_index and c < min_pixels:
                out[i][out[i] == v] = ignore_index
    return out


class LinearProbe:
    """Per-pixel multinomial logistic regression on standardised features (scikit-learn).

    ``fit`` samples ``n_pixels`` labelled training pixels (seeded); ``predict`` labels every
    pixel. The calibration probe of the spec's T11."""

    def __init__(
        self,
        n_pixels: int = 20000,
        C: float = 1.0,
        max_iter: int = 200,
        seed: int = 0,
        ignore_index: int = 255,
    ) -> None:
        self.n_pixels, self.C, self.max_iter = n_pixels, C, max_iter
        self.seed, self.ignore_index = seed, ignore_index

    def fit(self, feats: torch.Tensor, labels: torch.Tensor) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = pixel_features(feats, labels.shape[-2:]).numpy()
        y = labels.reshape(-1).numpy()
        keep = np.flatnonzero(y != self.ignore_index)
        rng = np.random.default_rng(self.seed)
        if len(keep) > self.n_pixels:
            keep = rng.choice(keep, self.n_pixels, replace=False)
        self.scaler_ = StandardScaler().fit(x[keep])
        self.clf_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.clf_.fit(self.scaler_.transform(x[keep]), y[keep])
        return self

    def predict(self, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = pixel_features(feats, size).numpy()
        pred = self.clf_.predict(self.scaler_.transform(x))
        return torch.from_numpy(pred).reshape(feats.shape[0], *size)

    def miou(self, feats, labels, num_classes: int) -> float:
        pred = self.predict(feats, tuple(labels.shape[-2:]))
        return ConfusionMatrix(num_classes, self.ignore_index).update(pred, labels).miou()


def _mlp(dim: int, k: int) -> nn.Sequential:
    h1, h2 = (256, 128) if k >= 30 else (128, 32)
    m = nn.Sequential(
        nn.Linear(dim, h1),
        nn.ReLU(),
        nn.BatchNorm1d(h1),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.BatchNorm1d(h2),
        nn.Linear(h2, k),
    )
    for layer in m:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
    return m


@dataclass
class MLPEnsemble:
    """The DDPM-segmentation pixel classifier ensemble (module docstring)."""

    num_classes: int
    n_models: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 100
    patience_iters: int = 50
    min_epochs: int = 3
    min_label_pixels: int = 20
    ignore_index: int = 255
    seed: int = 0
    max_iters_per_epoch: int | None = None  # None = full epochs (the protocol); demos cap it

    def __post_init__(self):
        for name in ("num_classes", "n_models", "batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"MLPEnsemble.{name} must be >= 1, got {getattr(self, name)}")

    def fit(self, feats: torch.Tensor, labels: torch.Tensor, device="cpu") -> MLPEnsemble:
        from labcore import dist

        labels = rare_labels_ignored(labels, self.min_label_pixels, self.ignore_index)
        x = pixel_features(feats, labels.shape[-2:])
        y = labels.reshape(-1)
        keep = y != self.ignore_index
        x, y = x[keep], y[keep]
        if len(y) == 0:
            raise UserError("no labelled pixels left to train the MLP ensemble")
        self.dim_ = x.shape[1]
        mine = dist.shard(self.n_models).tolist()  # this rank's models (all of them alone)
        self.models_ = {}
        for i in mine:
            self.models_[i] = self._train_one(i, x, y, torch.device(device))
        return self

    def _train_one(self, i: int, x, y, device) -> nn.Module:
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        torch.manual_seed(self.seed * 1000 + i)
        model = _mlp(self.dim_, self.num_classes).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        best, stall, n = float("inf"), 0, len(y)
        model.train()
        for epoch in range(self.max_epochs):
            order = torch.randperm(n, generator=g)
            stop = False
            for it, start in enumerate(range(0, n, self.batch_size)):
                if self.max_iters_per_epoch and it >= self.max_iters_per_epoch:
                    break
                idx = order[start : start + self.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                if value < best:
                    best, stall = value, 0
                else:
                    stall += 1
                if epoch >= self.min_epochs and stall > self.patience_iters:
                    stop = True
                    break
            if stop:
                break
        return model.eval()

    def votes(self, feats: torch.Tensor, size: tuple[int, int], device="cpu") -> torch.Tensor:
        """(N, K, H, W) vote counts summed over the ensemble (over ranks too)."""
        from labcore import dist

        x = pixel_features(feats, size)
        counts = torch.zeros(x.shape[0], self.num_classes, dtype=torch.float64)
        with torch.no_grad():
            for model in self.models_.values():
                pred = torch.cat([model(c.to(device)).argmax(1).cpu() for c in x.split(65536)])
                counts += F.one_hot(pred, self.num_classes).double()
        if dist.world_size() > 1:
            dist.all_reduce(counts)
        return counts.reshape(feats.shape[0], *size, self.num_classes).permute(0, 3, 1, 2)

    def predict(self, feats, size, device="cpu") -> torch.Tensor:
        """Per-pixel mode of the ensemble's argmaxes (ties → the lowest class)."""
        return self.votes(feats, size, device).argmax(1)

    def miou(self, feats, labels, device="cpu") -> float:
        pred = self.predict(feats, tuple(labels.shape[-2:]), device)
        return ConfusionMatrix(self.num_classes, self.ignore_index).update(pred, labels).miou()


def label_scarce_protocol(
    feats: torch.Tensor,
    labels: torch.Tensor,
    n_train: int,
    make_head,
    runs: int = 5,
    seed: int = 0,
    num_classes: int | None = None,
) -> dict:
    """The label-scarce protocol: ``runs`` times, re-shuffle the *pooled* train+test images,
    train on the first ``n_train``, score mIoU on the rest; report mean ± std.

    ``make_head(run)`` returns an object with ``fit(feats, labels)`` and ``miou(feats, labels)``
    (e.g. ``lambda r: MLPEnsemble(K, seed=r)``)."""
    n = feats.shape[0]
    if not 0 < n_train < n:
        raise UserError(f"n_train must lie in [1, {n - 1}] for {n} images, got {n_train}")
    scores = []
    for r in range(runs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + r))
        tr, te = perm[:n_train], perm[n_train:]
        head = make_head(r).fit(feats[tr], labels[tr])
        scores.append(float(head.miou(feats[te], labels[te])))
    return {
        "miou_runs": scores,
        "miou_mean": float(np.mean(scores)),
        "miou_std": float(np.std(scores)),
    }


# -- correspondence -------------------------------------------------------------------------
def nn_correspondence(
    src_feat: torch.Tensor,
    trg_feat: torch.Tensor,
    src_kps: torch.Tensor,
    src_size: tuple[int, int],
    trg_size: tuple[int, int],
) -> torch.Tensor:
    """Nearest-neighbour transfer of keypoints ``(K, 2)`` (x, y in source pixels).

    Both feature maps (C, h, w) are bilinearly upsampled to their image sizes (H, W); each
    source keypoint's feature is matched by cosine to every target pixel; returns (K, 2) x, y."""
    sf = F.interpolate(src_feat[None].float(), size=src_size, mode="bilinear", align_corners=False)[
        0
    ]
    tf = F.interpolate(trg_feat[None].float(), size=trg_size, mode="bilinear", align_corners=False)[
        0
    ]
    x = src_kps[:, 0].round().long().clamp(0, src_size[1] - 1)
    y = src_kps[:, 1].round().long().clamp(0, src_size[0] - 1)
    q = F.normalize(sf[:, y, x].T, dim=1)  # (K, C)
    t = F.normalize(tf.reshape(tf.shape[0], -1), dim=0)  # (C, H·W)
    idx = (q @ t).argmax(1)
    w = trg_size[1]
    return torch.stack([idx % w, idx // w], dim=1).float()


def pck(pred: torch.Tensor, target: torch.Tensor, alpha: float, size: float) -> float:
    """Fraction of keypoints within ``alpha · size`` (size = max side of image or bbox)."""
    d = (pred.float() - target.float()).norm(dim=1)
    return float((d <= alpha * size).float().mean())


class ConvCorrespondenceHead(nn.Module):
    """One bias-free 3×3 conv dim → dim on the concatenated (C, 128, 128) features."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim or dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _kp_feats(feat: torch.Tensor, kps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear sample of (B?, C, h, w) at keypoints in image pixels → (K, C)."""
    h, w = size
    grid = torch.stack([(kps[:, 0] + 0.5) / w * 2 - 1, (kps[:, 1] + 0.5) / h * 2 - 1], dim=1)
    out = F.grid_sample(feat[None], grid[None, None], align_corners=False)
    return out[0, :, 0].T


def train_conv_head(
    pairs, dim: int, steps: int = 100, lr: float = 5e-4, weight_decay: float = 0.01, seed: int = 0
) -> ConvCorrespondenceHead:
    """Train :class:`ConvCorrespondenceHead` with the symmetric CLIP-style loss.

    ``pairs``: a list of dicts with ``src_feat``/``trg_feat`` (C, 128, 128), ``src_kps``/
    ``trg_kps`` (K, 2) in image pixels and ``src_size``/``trg_size`` (H, W). One pair per step,
    cycled. Logit scale fixed at 1/0.07."""
    torch.manual_seed(seed)
    head = ConvCorrespondenceHead(dim)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    scale = 1 / 0.07
    for step in range(steps):
        p = pairs[step % len(pairs)]
        a = F.normalize(
            _kp_feats(head(p["src_feat"][None].float())[0], p["src_kps"], p["src_size"]), dim=1
        )
        b = F.normalize(
            _kp_feats(head(p["trg_feat"][None].float())[0], p["trg_kps"], p["trg_size"]), dim=1
        )
        logits = scale * a @ b.T
        target = torch.arange(len(a))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()
