r"""Training objectives of DSA (official ``SL/DSA.py`` and ``SSL/DSA_FreeMatch.py``).

Supervised, with the rotating blank head :math:`b_t = t \bmod S` (``blank_num`` = 1):

.. math:: L_x = \frac{1}{|H_t|}\sum_{s\in H_t} \mathrm{CE}(z_s, y), \quad
          H_t = \{0..S-1\} \setminus \{b_t, b_t+1\}[:\text{blank\_num}]

CBE decorrelation (lambda_fd = 1): :math:`L_{fd} = \frac1S\sum_i |\rho(\mathrm{vec}\,P_i,
\mathrm{sg}[\mathrm{vec}\,P_{i+1 \bmod S}])|` over the flattened private slices.

FreeMatch per head (USB ``freematch``): with weak-view probabilities :math:`q` of the
unlabeled batch and EMA :math:`\lambda` = 0.999, the self-adaptive threshold state is updated

.. math:: \tau \leftarrow \lambda\tau + (1-\lambda)\,\overline{\max_c q},\quad
          \tilde p \leftarrow \lambda\tilde p + (1-\lambda)\,\bar q,\quad
          h \leftarrow \lambda h + (1-\lambda)\,\mathrm{hist}(\arg\max q)

then :math:`\mathrm{mask}(u) = [\max q_u \ge \alpha\,\tau\,\tilde p[\hat y_u]/\max\tilde p]`
with the DSA code's ``taut_alpha`` :math:`\alpha` = 0.9 (USB: 1). SAF (USB sign):
:math:`L_{saf} = -\sum_c \mathrm{SN}(\tilde p/h)_c \log \mathrm{SN}(\bar p_s/\bar h_s)_c` over the
masked strong-view probabilities (0 when nothing is masked in).

Ensemble pseudo-label: label = argmax of the summed weak-view softmax divided by the number of
firing heads (the code sums *all* heads; ``mode="masked"`` averages only the firing ones), kept when
at least ``count_thr`` heads fire; ``count_thr = int(2 + 2 min((epoch+1)/50, 1))``.
:math:`L_{ens} = \frac1{|H_t|}\sum_{s\in H_t}\frac1B\sum_u \mathrm{keep}_u\,\mathrm{CE}(z^s_{s,u},
\hat y_u)`. Max-correlation on labelled data:
:math:`L_{mc} = \frac1S\sum_s 1 - \rho(p_s[y]\cdot(y+1),\; y+1)` (heads with an undefined
correlation are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "SATState",
    "blank_heads",
    "count_threshold",
    "ensemble_loss",
    "ensemble_pseudo_label",
    "feature_decorrelation_loss",
    "freematch_unlabeled_loss",
    "max_correlation_loss",
    "pearson",
    "saf_loss",
    "supervised_loss",
]


def blank_heads(step: int, num_heads: int, blank_num: int = 1) -> list[int]:
    """Heads skipped at ``step``: ``[t mod S, t mod S + 1][:blank_num]`` (no wrap, as the code)."""
    if num_heads <= 1 or blank_num <= 0:
        return []
    b = step % num_heads
    return [i for i in (b, b + 1)[:blank_num] if i < num_heads]


def supervised_loss(logits: list[torch.Tensor], targets: torch.Tensor, step: int,
                    blank_num: int = 1) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy over the heads that are not blanked at ``step``."""
    skip = set(blank_heads(step, len(logits), blank_num))
    terms = [F.cross_entropy(z.float(), targets) for s, z in enumerate(logits) if s not in skip]
    return torch.stack(terms).mean()


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two flattened tensors (``torch.corrcoef`` of the pair)."""
    return torch.corrcoef(torch.stack([a.reshape(-1).float(), b.reshape(-1).float()]))[0, 1]


def feature_decorrelation_loss(private: list[torch.Tensor]) -> torch.Tensor:
    """CBE's ``lambda_fd`` term: mean_i |corr(P_i, stopgrad P_{i+1 mod S})|."""
    s = len(private)
    terms = [pearson(private[i], private[(i + 1) % s].detach()).abs() for i in range(s)]
    return torch.stack(terms).mean()


@dataclass
class SATState:
    """FreeMatch's self-adaptive threshold state of one head: tau, p_model, label_hist."""

    tau: torch.Tensor
    p_model: torch.Tensor
    label_hist: torch.Tensor
    ema: float = 0.999

    @classmethod
    def create(cls, num_classes: int, ema: float = 0.999, device=None) -> SATState:
        p = torch.full((num_classes,), 1.0 / num_classes, device=device)
        return cls(p.mean(), p.clone(), p.clone(), ema)

    @torch.no_grad()
    def update(self, probs_w: torch.Tensor) -> None:
        """EMA update from weak-view probabilities (U, K) (the whole global batch under DDP)."""
        probs_w = probs_w.float()
        max_p, idx = probs_w.max(dim=-1)
        lam = self.ema
        self.tau = lam * self.tau + (1 - lam) * max_p.mean()
        self.p_model = lam * self.p_model + (1 - lam) * probs_w.mean(dim=0)
        hist = torch.bincount(idx, minlength=self.p_model.shape[0]).to(self.p_model.dtype)
        self.label_hist = lam * self.label_hist + (1 - lam) * hist / hist.sum()

    @torch.no_grad()
    def mask(self, probs_w: torch.Tensor, taut_alpha: float = 1.0) -> torch.Tensor:
        """[max q >= alpha * tau * p_model[argmax q] / max p_model] as float (U,)."""
        max_p, idx = probs_w.float().max(dim=-1)
        mod = self.p_model / self.p_model.max()
        return (max_p >= taut_alpha * self.tau * mod[idx]).float()

    def state_dict(self) -> dict:
        return {"tau": self.tau, "p_model": self.p_model, "label_hist": self.label_hist}


def _inv(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(1.0 / x, nan=0.0, posinf=0.0, neginf=0.0)


def saf_loss(mask: torch.Tensor, logits_s: torch.Tensor, p_model: torch.Tensor,
             label_hist: torch.Tensor, sign: str = "usb") -> torch.Tensor:  # fmt: skip
    """FreeMatch's self-adaptive fairness loss (USB ``entropy_loss``) on the masked strong view.

    ``sign="usb"`` returns the cross-entropy (USB, minimised); ``"code"`` returns its negative as
    the DSA repository's ``SelfAdaptiveFairnessLoss`` does. Zero when no sample is masked in.
    """
    keep = mask.bool()
    if not keep.any():
        return logits_s.sum() * 0.0
    z = logits_s[keep].float()
    prob_s = z.softmax(dim=-1)
    hist_s = torch.bincount(prob_s.argmax(dim=-1), minlength=z.shape[1]).to(z.dtype)
    hist_s = hist_s / hist_s.sum()
    mod_p = p_model.reshape(1, -1) * _inv(label_hist.reshape(1, -1)).detach()
    mod_p = mod_p / mod_p.sum(dim=-1, keepdim=True)
    mod_s = prob_s.mean(dim=0, keepdim=True) * _inv(hist_s).detach()
    mod_s = mod_s / mod_s.sum(dim=-1, keepdim=True)
    cross = (mod_p * torch.log(mod_s + 1e-12)).sum(dim=1).mean()
    return -cross if sign == "usb" else cross


def freematch_unlabeled_loss(logits_s: torch.Tensor, logits_w: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """FreeMatch's own consistency term: mean_u mask_u CE(strong_u, argmax weak_u)."""
    target = logits_w.detach().argmax(dim=-1)
    return (F.cross_entropy(logits_s.float(), target, reduction="none") * mask).mean()


def count_threshold(epoch: int, start: int = 2, end: int = 4, rampup: int = 50) -> int:
    """The code's ``count_thr_update`` ('Increase'): ``int(a + (b-a) min((e+1)/r, 1))``."""
    return int(start + (end - start) * min((epoch + 1) / rampup, 1.0))


def ensemble_pseudo_label(logits_w: list[torch.Tensor], masks: torch.Tensor, count_thr: float,
                          mode: str = "code") -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Ensemble pseudo-labels of the weak views: (labels (U,), keep (U,) float).

    ``masks``: (S, U) per-head SAT masks. ``mode="code"``: the summed softmax of *all* heads divided
    by the number of firing heads (the official ``target_ensemble_mask``: the argmax equals the
    all-head mean's); ``"masked"``: the mean over the firing heads only (the spec's reading).
    A sample is kept when at least ``count_thr`` heads fire.
    """
    probs = torch.stack([z.detach().float().softmax(dim=-1) for z in logits_w])  # (S, U, K)
    fired = masks.sum(dim=0)  # (U,)
    if mode == "code":
        summed = probs.sum(dim=0)
    elif mode == "masked":
        summed = (probs * masks[..., None]).sum(dim=0)
    else:
        raise ValueError(f"mode must be 'code' or 'masked', got {mode!r}")
    mean = torch.where(fired[:, None] > 0, summed / fired.clamp_min(1)[:, None],
                       torch.zeros_like(summed))  # fmt: skip
    return mean.argmax(dim=-1), (fired >= count_thr).float()


def ensemble_loss(logits_s: list[torch.Tensor], labels: torch.Tensor, keep: torch.Tensor,
                  step: int, blank_num: int = 1) -> torch.Tensor:  # fmt: skip
    """L_ens: over the non-blank heads, the batch mean of keep * CE(strong logits, label)."""
    skip = set(blank_heads(step, len(logits_s), blank_num))
    terms = [(F.cross_entropy(z.float(), labels, reduction="none") * keep).mean()
             for s, z in enumerate(logits_s) if s not in skip]  # fmt: skip
    return torch.stack(terms).mean()


def max_correlation_loss(logits_x: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """L_mc = mean over heads of 1 - corr(p_s[y] * (y+1), y+1) (the code's ``corrcoef_labeled``)."""
    y1 = (targets + 1).float()
    terms = []
    for z in logits_x:
        p_y = z.float().softmax(dim=-1).gather(1, targets[:, None]).squeeze(1)
        rho = pearson(p_y * y1, y1)
        if not torch.isnan(rho):
            terms.append(1.0 - rho)
    if not terms:
        return logits_x[0].sum() * 0.0
    return torch.stack(terms).mean()
