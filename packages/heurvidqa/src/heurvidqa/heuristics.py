r"""Entity and action heuristics from frozen prompters, and how they enter the QA loss (§1.2).

Entity: a box B on the patch grid (area 30–50 % of the frame, aspect in [0.3, 3.33], the same in
every frame) [C: ALPRO]. The entity prompter sees V⊙B (outside the box the *normalised* pixels
are set to 0, i.e. the CLIP mean colour [R]) and gives

    q^E = softmax(l2n(W_v f_EP(V⊙B)_cls) · P_E^T / τ_P),   ignored when max_k q^E_k < 0.2

(the intended rule; ALPRO's code compares the argmax *index* with 0.2). The student sees the full
video; z^E = g_E(Σ_n m_n h_n / Σ_n m_n) over fusion outputs at the visual positions inside B.

Action: a contiguous half W of the T sampled frames (head, tail or random start) [R]. The action
prompter sees V[W]: q^A = softmax(l2n(W_v f_AP(V[W])_cls) · P_A^T / τ_P); the student uses
z^A = g_A(mean_{t∈W, n} x_{t,n}) over un-pooled TimeSformer tokens (or, configurable, the pooled
fusion output of a second pass on V[W]).

Losses: L_E = mean_{non-ignored} −Σ_k q^E_k log softmax(z^E)_k, L_A = mean −Σ_k q^A_k log
softmax(z^A)_k; L = L_QA + λ_E L_E + λ_A L_A.

Prompt banks: each term's prompts are encoded, L2-normalised, and averaged over the templates
*without renormalising* (ALPRO), kept as buffers.

The box is drawn uniformly from every grid box that satisfies the area and aspect limits [R: ALPRO
draws area and aspect, then snaps; enumerating the snapped boxes keeps the limits exact on the
coarse 4×4 grid of the CPU size, where snapping can leave the range]. When no grid box satisfies
them, the boxes of the nearest area are used.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heurvidqa.config import HeuristicConfig
from heurvidqa.model import DualEncoder
from heurvidqa.vocab import action_prompts, entity_prompts

__all__ = [
    "Heuristics",
    "build_prompt_bank",
    "crop_video",
    "region_mask",
    "sample_crop_boxes",
    "sample_windows",
    "soft_cross_entropy",
    "soft_labels",
]


@functools.lru_cache(maxsize=32)
def _grid_boxes(grid: int, area: tuple[float, float], aspect: tuple[float, float]) -> np.ndarray:
    """All boxes (y0, x0, y1, x1), exclusive ends, in patch units, within the limits."""
    rows = []
    for h in range(1, grid + 1):
        for w in range(1, grid + 1):
            rows.append((h, w, h * w / grid**2, w / h))
    hw = np.array(rows)
    ok = (hw[:, 2] >= area[0] - 1e-9) & (hw[:, 2] <= area[1] + 1e-9)
    ok &= (hw[:, 3] >= aspect[0] - 1e-9) & (hw[:, 3] <= aspect[1] + 1e-9)
    if not ok.any():  # coarse grid: the boxes of the nearest area (aspect limits kept if possible)
        asp = (hw[:, 3] >= aspect[0] - 1e-9) & (hw[:, 3] <= aspect[1] + 1e-9)
        cand = asp if asp.any() else np.ones(len(hw), bool)
        dist = np.abs(hw[:, 2] - (area[0] + area[1]) / 2)
        ok = cand & (dist == dist[cand].min())
    boxes = []
    for h, w, _, _ in hw[ok]:
        h, w = int(h), int(w)
        for y in range(grid - h + 1):
            for x in range(grid - w + 1):
                boxes.append((y, x, y + h, x + w))
    return np.array(boxes, dtype=np.int64)


def sample_crop_boxes(batch: int, grid: int, cfg: HeuristicConfig,
                      rng: np.random.Generator) -> torch.Tensor:  # fmt: skip
    """(B, 4) boxes ``(y0, x0, y1, x1)`` in patch units (multiply by the patch size for pixels)."""
    boxes = _grid_boxes(grid, (cfg.crop_area_min, cfg.crop_area_max),
                        (cfg.crop_aspect_min, cfg.crop_aspect_max))  # fmt: skip
    return torch.from_numpy(boxes[rng.integers(len(boxes), size=batch)])


def region_mask(boxes: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, N) 0/1: patch n = row·grid + col (row-major, as the patch embedding flattens) in B."""
    r = torch.arange(grid)
    rows = (r[None] >= boxes[:, 0:1]) & (r[None] < boxes[:, 2:3])  # (B, grid)
    cols = (r[None] >= boxes[:, 1:2]) & (r[None] < boxes[:, 3:4])
    return (rows[:, :, None] & cols[:, None, :]).flatten(1).float()


def crop_video(pixels: torch.Tensor, boxes: torch.Tensor, patch: int) -> torch.Tensor:
    """V⊙B: (B, T, 3, H, W) with everything outside each sample's box set to 0."""
    h, w = pixels.shape[-2:]
    ys = torch.arange(h, device=pixels.device) // patch
    xs = torch.arange(w, device=pixels.device) // patch
    b = boxes.to(pixels.device)
    my = (ys[None] >= b[:, 0:1]) & (ys[None] < b[:, 2:3])
    mx = (xs[None] >= b[:, 1:2]) & (xs[None] < b[:, 3:4])
    m = (my[:, :, None] & mx[:, None, :]).to(pixels.dtype)  # (B, H, W)
    return pixels * m[:, None, None]


def sample_windows(
    batch: int, num_frames: int, mode: str, rng: np.random.Generator
) -> torch.Tensor:
    """(B, T/2) frame indices of a contiguous half: head, tail, or a random start."""
    half = num_frames // 2
    if mode == "head":
        start = np.zeros(batch, dtype=np.int64)
    elif mode == "tail":
        start = np.full(batch, num_frames - half, dtype=np.int64)
    else:
        start = rng.integers(0, num_frames - half + 1, size=batch)
    return torch.from_numpy(start[:, None] + np.arange(half)[None])


def soft_cross_entropy(logits: torch.Tensor, q: torch.Tensor,
                       keep: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """mean over kept rows of −Σ_k q_k log softmax(z)_k (0 if no row is kept)."""
    per = -(q * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    if keep is None:
        return per.mean()
    keep = keep.to(per.dtype)
    return (per * keep).sum() / keep.sum().clamp_min(1.0)


@torch.no_grad()
def build_prompt_bank(prompter: DualEncoder, tokenizer, terms: list[str], kind: str,
                      max_len: int = 30, batch: int = 256) -> torch.Tensor:  # fmt: skip
    """(K, 256): per term, the mean of its L2-normalised prompt features (not renormalised)."""
    make = entity_prompts if kind == "entity" else action_prompts
    prompts = [make(t) for t in terms]
    n = len(prompts[0])
    flat = [p for ps in prompts for p in ps]
    was = prompter.training
    prompter.eval()
    feats = []
    dev = next(prompter.parameters()).device
    for i in range(0, len(flat), batch):
        tok = tokenizer(flat[i : i + batch], padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")  # fmt: skip
        feats.append(prompter.text_features(tok.input_ids.to(dev), tok.attention_mask.to(dev)))
    prompter.train(was)
    return torch.cat(feats).view(len(terms), n, -1).mean(1)


@torch.no_grad()
def soft_labels(prompter: DualEncoder, pixels: torch.Tensor, bank: torch.Tensor,
                ignore_below: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(q (B, K) rows summing to 1, ignored (B,) bool = max q < ignore_below)."""
    s = prompter.video_features(pixels).float() @ bank.float().t()
    q = torch.softmax(s.float() / prompter.temp().float(), dim=-1)
    return q, q.max(dim=-1).values < ignore_below


class Heuristics(nn.Module):
    """The frozen prompters and their prompt banks (buffers); always eval, never trained."""

    def __init__(self, entity_prompter: DualEncoder, action_prompter: DualEncoder | None,
                 entity_bank: torch.Tensor, action_bank: torch.Tensor,
                 cfg: HeuristicConfig, patch_size: int, grid: int):  # fmt: skip
        super().__init__()
        self.cfg = cfg
        self.entity_prompter = entity_prompter
        # one shared prompter with two banks when configured (or when none was given)
        self.action_prompter = action_prompter if action_prompter is not None else entity_prompter
        self.register_buffer("entity_bank", entity_bank.detach().clone())
        self.register_buffer("action_bank", action_bank.detach().clone())
        self.patch_size, self.grid = patch_size, grid
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # the prompters stay in eval mode
        return super().train(False)

    @torch.no_grad()
    def labels(self, pixels: torch.Tensor, boxes: torch.Tensor | None,
               window_idx: torch.Tensor | None) -> dict:  # fmt: skip
        """Soft labels for given crop ``boxes`` (B, 4) and/or windows ``window_idx`` (B, T/2)."""
        out: dict = {}
        if boxes is not None:
            crop = crop_video(pixels, boxes, self.patch_size)
            q, ignored = soft_labels(self.entity_prompter, crop, self.entity_bank,
                                     self.cfg.ignore_below)  # fmt: skip
            out.update(boxes=boxes, region=region_mask(boxes, self.grid).to(pixels.device),
                       q_entity=q, ignored=ignored)  # fmt: skip
        if window_idx is not None:
            w = window_idx.to(pixels.device)
            clip = torch.gather(pixels, 1, w[:, :, None, None, None].expand(
                -1, -1, *pixels.shape[2:]))  # fmt: skip
            q, _ = soft_labels(self.action_prompter, clip, self.action_bank, 0.0)
            window = torch.zeros(pixels.shape[:2], device=pixels.device).scatter_(1, w, 1.0)
            out.update(window_idx=w, window=window, window_clip=clip, q_action=q)
        return out

    def forward(self, pixels: torch.Tensor, rng: np.random.Generator,
                entity: bool = True, action: bool = True) -> dict:  # fmt: skip
        """Draw boxes and windows from ``rng``, then :meth:`labels`."""
        b, t = pixels.shape[:2]
        boxes = sample_crop_boxes(b, self.grid, self.cfg, rng) if entity else None
        win = sample_windows(b, t, self.cfg.action_window, rng) if action else None
        return self.labels(pixels, boxes, win)
