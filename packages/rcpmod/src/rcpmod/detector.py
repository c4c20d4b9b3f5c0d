"""The RCPMOD detector in the PyOD / scikit-learn shape.

``RCPMOD(contamination=0.1, preset="cpu256", **hyper).fit(views, mask)`` trains one MLP
autoencoder per view, pairwise over all C(V, 2) view pairs (the autoencoders are shared and
carried from pair to pair, each pair with its own Adam), and scores every sample of each pair
(see :mod:`rcpmod.score`). The final score of a sample is the mean of its non-zero pair scores
(official ``run.py``). Higher = more abnormal.

Per mini-batch of pair (a, b) (official ``model.py``; see :mod:`rcpmod.losses`)::

    L = L_rec + λ1·L_oac + λ2·L_nac + w(t)·(L_triplet + L_KoLeo)

* ``L_oac``: NT-Xent (τ = 0.5) between the two views' normalised latents, negatives including
  the potential-outlier memory bank (raw features of the ``max(1, ⌊5 % · rows⌋)`` lowest
  cross-view-cosine samples of each of the last ``memory_size`` batches, re-encoded with
  gradient). Complete samples only while ``epoch < impute_start_epoch`` (50), then every sample
  with CRT-imputed latents for its missing view.
* ``L_nac``: mean over k = 1..K of the NT-Xent between the encodings of each sample's k-th
  neighbour in view a and its k-th neighbour in view b (latent-space lists refreshed every
  ``change_knn_epoch`` epochs, epoch 0 included; CRT lists for missing views).
* ``L_triplet``: margin 0, positive a random one of the K *input-space* neighbours (redrawn per
  epoch), negative the ``neg_rank``-th (50th) latent neighbour (refreshed every
  ``change_neg_epoch`` epochs); ``L_KoLeo`` on the present-view latents of the batch.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.utils import shuffle as sk_shuffle

from rcpmod.losses import koleo, nt_xent, reconstruction, spreading_weight, triplet
from rcpmod.neighbors import crt_impute, knn_search, neighbor_lists
from rcpmod.nets import ViewAutoencoder
from rcpmod.presets import PRESETS
from rcpmod.score import attribute_score, consistency_score, consistency_score_against, minmax

__all__ = ["RCPMOD", "check_views"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_views(views, mask=None, n_features=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Validate multi-view input: a list of >= 2 finite 2-D arrays with the same rows, and an
    ``(n, V)`` boolean present-view mask with at least one present view per sample. Values of
    missing views are ignored (set to 0). Raises ``ValueError`` with one line."""
    if not isinstance(views, list | tuple) or len(views) < 2:
        raise ValueError("views must be a list of at least 2 arrays (one (n, d_v) array per view)")
    out = []
    for v, x in enumerate(views):
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"view {v} is not numeric") from None
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"view {v} must be 2-D (n, d_v) with d_v >= 1, got shape {x.shape}")
        out.append(x)
    n = out[0].shape[0]
    if any(x.shape[0] != n for x in out):
        raise ValueError(f"views have different numbers of rows: {[x.shape[0] for x in out]}")
    if n_features is not None and [x.shape[1] for x in out] != list(n_features):
        raise ValueError(f"views have {[x.shape[1] for x in out]} features, "
                         f"the detector was fitted on {list(n_features)}")  # fmt: skip
    if mask is None:
        mask = np.ones((n, len(out)), dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != (n, len(out)):
            raise ValueError(f"mask must have shape ({n}, {len(out)}), got {mask.shape}")
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise ValueError("mask must be boolean (True = view present) or 0/1")
        mask = mask.astype(bool)
    if not mask.any(1).all():
        bad = int(np.flatnonzero(~mask.any(1))[0])
        raise ValueError(f"sample {bad} has all views missing")
    for v, x in enumerate(out):
        if not np.isfinite(x[mask[:, v]]).all():
            raise ValueError(f"view {v} has NaN or infinite values in present samples")
        out[v] = np.where(mask[:, v, None], x, 0.0)
    return out, mask


@dataclass
class _PairState:
    """What scoring new samples for one pair needs (training side)."""

    views: tuple[int, int]
    z_a: torch.Tensor  # (n_p, L) latents (imputed where missing), unnormalised
    z_b: torch.Tensor
    ref: torch.Tensor  # (2 n_p, L) normalised [h_a; h_b]
    complete: np.ndarray  # positions (within the pair) of samples with both views
    att_bounds: tuple
    att_range: tuple[float, float]
    con_range: tuple[float, float]


class RCPMOD(BaseEstimator):
    """Regularized Contrastive Partial Multi-view Outlier Detection (Wang et al., ACM MM 2024).

    Args (``None`` = the value of ``preset``, see :data:`rcpmod.presets.PRESETS`):
        contamination: expected outlier fraction; sets ``threshold_`` (PyOD convention).
        preset: ``scene15 | landuse21 | bdgp | handwritten | fashion`` (official widths and
            schedules) or ``cpu256`` (hidden 256, 90 epochs; for CPUs and the shipped data).
        hidden, latent, epochs: autoencoder widths, latent size, epochs per view pair.
        batch_size, lr: 256 and Adam 1e-3 (official).
        n_neighbors: K = 6. temperature: τ = 0.5. lambda_oac, lambda_nac: λ1 = λ2 = 1.
        memory_size, memory_ratio: bank of the last ``memory_size`` batches' lowest-5 % samples.
        change_knn_epoch: latent neighbour refresh period (50). impute_start_epoch: 50.
        neg_rank, change_neg_epoch: triplet negative = the neg_rank-th latent neighbour.
        warmup_max, sr_final, schedule_epochs, warmup_epochs: the w(t) schedule.
        sr_weight: a constant w instead of the schedule (ablation; official: ``None``).
        rw: weight of the reconstruction score in the fusion.
        use_memory, use_nac, use_sr: ablation switches (all on = the method).
        impute: ``crt`` (method) or ``zero`` (zero latents for missing views; ablation).
        shuffle: ``fresh`` (a new permutation per epoch from ``random_state``; default) or
            ``fixed`` (the official code's ``shuffle(random_state=1)``: the same batches every
            epoch).
        pair_average: ``nonzero`` (official: mean of the non-zero pair scores) or
            ``participating`` (mean over the pairs a sample takes part in).
        dtype: ``float64`` (official) or ``float32``. precision: ``fp32`` (no autocast) or
            ``bf16`` / ``fp16`` autocast of the autoencoders (needs ``dtype="float32"``;
            neighbour search and scores stay float64).
        device: ``cpu``, ``cuda`` or ``auto``. score_block: rows per block of the score.
        random_state: seeds the initialisation, shuffling and positive draws.
        verbose: a progress bar over epochs.

    Attributes after ``fit``: ``decision_scores_`` (n,), ``threshold_``, ``labels_`` (0/1),
    ``consistency_scores_`` and ``attribute_scores_`` (min-max'd components, pair-averaged),
    ``pair_scores_`` (n, C(V,2)), ``pairs_``, ``autoencoders_``, ``n_features_``.
    """

    def __init__(
        self,
        contamination: float = 0.1,
        preset: str = "cpu256",
        hidden: tuple[int, ...] | None = None,
        latent: int | None = None,
        epochs: int | None = None,
        batch_size: int = 256,
        lr: float = 1e-3,
        n_neighbors: int = 6,
        temperature: float = 0.5,
        lambda_oac: float = 1.0,
        lambda_nac: float = 1.0,
        memory_size: int | None = None,
        memory_ratio: float = 0.05,
        change_knn_epoch: int = 50,
        impute_start_epoch: int = 50,
        neg_rank: int | None = None,
        change_neg_epoch: int | None = None,
        warmup_max: float | None = None,
        sr_final: float | None = None,
        schedule_epochs: int | None = None,
        warmup_epochs: int = 100,
        sr_weight: float | None = None,
        rw: float | None = None,
        use_memory: bool = True,
        use_nac: bool = True,
        use_sr: bool = True,
        impute: str = "crt",
        shuffle: str = "fresh",
        pair_average: str = "nonzero",
        dtype: str = "float64",
        precision: str = "fp32",
        device: str = "cpu",
        score_block: int = 256,
        random_state: int = 0,
        verbose: bool = False,
    ):
        self.contamination = contamination
        self.preset = preset
        self.hidden = hidden
        self.latent = latent
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_neighbors = n_neighbors
        self.temperature = temperature
        self.lambda_oac = lambda_oac
        self.lambda_nac = lambda_nac
        self.memory_size = memory_size
        self.memory_ratio = memory_ratio
        self.change_knn_epoch = change_knn_epoch
        self.impute_start_epoch = impute_start_epoch
        self.neg_rank = neg_rank
        self.change_neg_epoch = change_neg_epoch
        self.warmup_max = warmup_max
        self.sr_final = sr_final
        self.schedule_epochs = schedule_epochs
        self.warmup_epochs = warmup_epochs
        self.sr_weight = sr_weight
        self.rw = rw
        self.use_memory = use_memory
        self.use_nac = use_nac
        self.use_sr = use_sr
        self.impute = impute
        self.shuffle = shuffle
        self.pair_average = pair_average
        self.dtype = dtype
        self.precision = precision
        self.device = device
        self.score_block = score_block
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ configuration
    def resolved_params(self) -> dict:
        """The hyperparameters in effect: the preset, overridden by every non-``None`` argument."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        p = dict(PRESETS[self.preset])
        for key in ("hidden", "latent", "epochs", "memory_size", "neg_rank", "change_neg_epoch",
                    "warmup_max", "sr_final", "schedule_epochs", "rw"):  # fmt: skip
            if getattr(self, key) is not None:
                p[key] = getattr(self, key)
        p["hidden"] = tuple(int(h) for h in p["hidden"])
        self._validate(p)
        return p

    def _validate(self, p: dict) -> None:
        if not 0.0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination}")
        choices = {"impute": ("crt", "zero"), "shuffle": ("fresh", "fixed"),
                   "pair_average": ("nonzero", "participating"), "dtype": tuple(_DTYPES),
                   "precision": ("fp32", *_AMP)}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.precision != "fp32" and self.dtype != "float32":
            raise ValueError(f"precision={self.precision!r} autocasts float32 weights; autocast "
                             "leaves float64 untouched, so pass dtype='float32'")  # fmt: skip
        positive = {"batch_size": self.batch_size, "n_neighbors": self.n_neighbors,
                    "change_knn_epoch": self.change_knn_epoch, "latent": p["latent"],
                    "memory_size": p["memory_size"], "neg_rank": p["neg_rank"],
                    "change_neg_epoch": p["change_neg_epoch"], "score_block": self.score_block,
                    "warmup_epochs": self.warmup_epochs}  # fmt: skip
        for name, value in positive.items():
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if p["epochs"] < 0 or any(h < 1 for h in p["hidden"]):
            raise ValueError("epochs must be >= 0 and hidden widths >= 1")
        if self.lr <= 0 or self.temperature <= 0 or not 0 < self.memory_ratio <= 1:
            raise ValueError("lr and temperature must be > 0 and memory_ratio in (0, 1]")

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available")
        return device

    def _amp(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self._dev.type, dtype=_AMP[self.precision])

    def _enc(self, ae: ViewAutoencoder, x: torch.Tensor) -> torch.Tensor:
        with self._amp():
            z = ae.encode(x)
        return z.to(self._dt)

    def _dec(self, ae: ViewAutoencoder, z: torch.Tensor) -> torch.Tensor:
        with self._amp():
            x = ae.decode(z)
        return x.to(self._dt)

    @torch.no_grad()
    def _encode_all(self, ae, x: torch.Tensor, block: int = 8192) -> torch.Tensor:
        return torch.cat([self._enc(ae, x[s : s + block]) for s in range(0, len(x), block)])

    # ------------------------------------------------------------------ training
    def fit(self, views, mask=None, y=None):
        """Train on ``views`` (list of ``(n, d_v)`` arrays) with present-view ``mask`` ``(n, V)``
        and score the same samples (transductive, as the method is). ``y`` is ignored."""
        p = self.resolved_params()
        x, mask = check_views(views, mask)
        n, n_views = mask.shape
        if n < self.n_neighbors + 2:
            raise ValueError(f"need at least n_neighbors + 2 = {self.n_neighbors + 2} samples")
        self._dev, self._dt = self._device(), _DTYPES[self.dtype]
        self._p = p
        self.n_features_ = [v.shape[1] for v in x]
        self.scale_ = [(float(v.min()), float(v.max())) for v in x]
        x = self._scale(x, mask)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.autoencoders_ = [
                ViewAutoencoder(d, p["hidden"], p["latent"]).to(self._dev, self._dt)
                for d in self.n_features_
            ]
        rng = np.random.default_rng(self.random_state)
        self.pairs_ = list(itertools.combinations(range(n_views), 2))
        scores = np.zeros((n, len(self.pairs_)))
        con, att = np.zeros_like(scores), np.zeros_like(scores)
        member = np.zeros_like(scores, dtype=bool)
        self._pair_states: list[_PairState] = []
        self.history_: list[list[dict]] = []
        for j, (a, b) in enumerate(self.pairs_):
            rows = np.flatnonzero(mask[:, a] | mask[:, b])
            state, s, s_con, s_att, hist = self._fit_pair(a, b, x, mask, rows, rng, p)
            scores[rows, j], con[rows, j], att[rows, j] = s, s_con, s_att
            member[rows, j] = True
            self._pair_states.append(state)
            self.history_.append(hist)
        self.pair_scores_ = scores
        self.decision_scores_ = self._average(scores, member)
        self.consistency_scores_ = _mean_over(con, member)
        self.attribute_scores_ = _mean_over(att, member)
        self._process_decision_scores()
        return self

    def _scale(self, x: list[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
        """Global min-max per view (the official pre-processing), missing views back to 0."""
        out = []
        for v, (lo, hi) in enumerate(self.scale_):
            scaled = (x[v] - lo) / (hi - lo) if hi > lo else np.zeros_like(x[v])
            out.append(np.where(mask[:, v, None], scaled, 0.0))
        return out

    def _average(self, scores: np.ndarray, member: np.ndarray) -> np.ndarray:
        if self.pair_average == "nonzero":
            use = scores != 0
        else:
            use = member
        count = use.sum(1)
        return np.where(count > 0, (scores * use).sum(1) / np.maximum(count, 1), 0.0)

    def _process_decision_scores(self) -> None:
        self.threshold_ = float(
            np.percentile(self.decision_scores_, 100 * (1 - self.contamination))
        )
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)

    def _fit_pair(self, a, b, x, mask, rows, rng, p):
        dev, dt = self._dev, self._dt
        ae_a, ae_b = self.autoencoders_[a], self.autoencoders_[b]
        xa = torch.as_tensor(x[a][rows], dtype=dt, device=dev)
        xb = torch.as_tensor(x[b][rows], dtype=dt, device=dev)
        pa, pb = mask[rows, a], mask[rows, b]
        fa, fb = torch.as_tensor(pa, device=dev), torch.as_tensor(pb, device=dev)
        n, k = len(rows), self.n_neighbors
        opt = torch.optim.Adam([*ae_a.parameters(), *ae_b.parameters()], lr=self.lr)
        # triplet positives: input-space lists, fixed for the whole pair
        pos_a, pos_b = neighbor_lists(xa, xb, pa, pb, k)
        bank: deque = deque(maxlen=int(p["memory_size"]))
        fixed_order = sk_shuffle(np.arange(n), random_state=1)
        history = []
        from labcore.cli import progress

        bar = progress(range(p["epochs"]), desc=f"pair {a}-{b}", leave=False,
                       disable=None if self.verbose else True)  # fmt: skip
        nbr_a = nbr_b = neg_a = neg_b = None
        for epoch in bar:
            if epoch % self.change_knn_epoch == 0 or (
                self.use_sr and epoch % p["change_neg_epoch"] == 0
            ):
                za_all, zb_all = self._encode_all(ae_a, xa), self._encode_all(ae_b, xb)
                if epoch % self.change_knn_epoch == 0:
                    nbr_a, nbr_b = neighbor_lists(za_all, zb_all, pa, pb, k)
                if self.use_sr and epoch % p["change_neg_epoch"] == 0:
                    la, lb = neighbor_lists(za_all, zb_all, pa, pb, p["neg_rank"])
                    neg_a, neg_b = la[:, -1], lb[:, -1]
            if self.sr_weight is not None:
                w = float(self.sr_weight)
            else:
                w = spreading_weight(epoch, p["warmup_max"], p["sr_final"], p["schedule_epochs"],
                                     self.warmup_epochs)  # fmt: skip
            use_sr = self.use_sr and w != 0.0  # w(0) = 0: the term contributes nothing
            if use_sr:
                r = rng.integers(0, k, n)
                ppos_a = pos_a[np.arange(n), r % pos_a.shape[1]]
                ppos_b = pos_b[np.arange(n), r % pos_b.shape[1]]
            order = fixed_order if self.shuffle == "fixed" else rng.permutation(n)
            impute_now = epoch + 1 > self.impute_start_epoch
            totals = {"loss": 0.0, "rec": 0.0, "oac": 0.0, "nac": 0.0, "sr": 0.0}
            for s in range(0, n, self.batch_size):
                idx = order[s : s + self.batch_size]
                ti = torch.as_tensor(idx, device=dev)
                bxa, bxb, bfa, bfb = xa[ti], xb[ti], fa[ti], fb[ti]
                need_nbr = self.use_nac or (impute_now and self.impute == "crt")
                # every row this step encodes, per view, encoded once (duplicates share the
                # forward pass; the gradient is the same as encoding each use separately)
                enc_a, enc_b = _Rows(idx), _Rows(idx)
                if need_nbr:
                    enc_a.add("nbr", nbr_a[idx])
                    enc_b.add("nbr", nbr_b[idx])
                if use_sr:
                    keep_a, keep_b = idx[pa[idx]], idx[pb[idx]]
                    enc_a.add("pos", ppos_a[keep_a]).add("neg", neg_a[keep_a])
                    enc_b.add("pos", ppos_b[keep_b]).add("neg", neg_b[keep_b])
                za_rows = enc_a.encode(lambda r: self._enc(ae_a, xa[r]), dev)
                zb_rows = enc_b.encode(lambda r: self._enc(ae_b, xb[r]), dev)
                za, zb = za_rows["batch"], zb_rows["batch"]
                if need_nbr:
                    ka, kb = za_rows["nbr"], zb_rows["nbr"]
                # outlier-aware contrastive term with the memory bank
                if impute_now:
                    if self.impute == "crt":
                        ra, rb = crt_impute(za, ka, ~bfa), crt_impute(zb, kb, ~bfb)
                    else:
                        ra, rb = za * bfa[:, None], zb * bfb[:, None]
                    sel = torch.arange(len(idx), device=dev)
                else:
                    sel = torch.nonzero(bfa & bfb).flatten()
                    ra, rb = za[sel], zb[sel]
                ha, hb = F.normalize(ra, dim=1), F.normalize(rb, dim=1)
                loss_oac = za.new_zeros(())
                if len(sel) > 0:
                    memory = None
                    if self.use_memory and bank:
                        ma = self._enc(ae_a, torch.cat([m[0] for m in bank]))
                        mb = self._enc(ae_b, torch.cat([m[1] for m in bank]))
                        memory = torch.cat([F.normalize(ma, dim=1), F.normalize(mb, dim=1)])
                    loss_oac = nt_xent(ha, hb, memory, self.temperature)
                    if self.use_memory:
                        sims = (ha * hb).sum(1).detach()
                        top = max(int(len(sel) * self.memory_ratio), 1)
                        low = sel[torch.topk(-sims, top).indices]
                        bank.append((bxa[low], bxb[low]))
                loss_rec = reconstruction(bxa[bfa], self._dec(ae_a, za[bfa])) + reconstruction(
                    bxb[bfb], self._dec(ae_b, zb[bfb])
                )
                loss_nac = za.new_zeros(())
                if self.use_nac:
                    kk = min(ka.shape[1], kb.shape[1])
                    loss_nac = nt_xent(F.normalize(ka[:, :kk].transpose(0, 1), dim=-1),
                                       F.normalize(kb[:, :kk].transpose(0, 1), dim=-1),
                                       None, self.temperature)  # fmt: skip
                loss_sr = za.new_zeros(())
                if use_sr:
                    for z, f, rows_v in ((za, bfa, za_rows), (zb, bfb, zb_rows)):
                        if bool(f.any()):
                            loss_sr = loss_sr + triplet(z[f], rows_v["pos"], rows_v["neg"])
                            loss_sr = loss_sr + koleo(z[f])
                loss = (loss_rec + self.lambda_oac * loss_oac + self.lambda_nac * loss_nac
                        + w * loss_sr)  # fmt: skip
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for key, val in (("loss", loss), ("rec", loss_rec), ("oac", loss_oac),
                                 ("nac", loss_nac), ("sr", loss_sr)):  # fmt: skip
                    totals[key] += float(val.detach())
            history.append({"epoch": epoch, "w": w, **totals})
        state, s, s_con, s_att = self._score_pair(a, b, xa, xb, pa, pb, nbr_a, nbr_b, p)
        return state, s, s_con, s_att, history

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _score_pair(self, a, b, xa, xb, pa, pb, nbr_a, nbr_b, p):
        ae_a, ae_b = self.autoencoders_[a], self.autoencoders_[b]
        za, zb = self._encode_all(ae_a, xa), self._encode_all(ae_b, xb)
        if nbr_a is None:  # epochs = 0: lists from the initial encoders
            nbr_a, nbr_b = neighbor_lists(za, zb, pa, pb, self.n_neighbors)
        za, zb = self._impute(za, pa, nbr_a), self._impute(zb, pb, nbr_b)
        ha = F.normalize(za.to(torch.float64), dim=1)
        hb = F.normalize(zb.to(torch.float64), dim=1)
        s_con = consistency_score(ha, hb, self.temperature, self.score_block).cpu().numpy()
        err_a = self._recon_error(ae_a, xa)
        err_b = self._recon_error(ae_b, xb)
        s_att, bounds = attribute_score(err_a, err_b, pa, pb)
        state = _PairState(views=(a, b), z_a=za, z_b=zb, ref=torch.cat([ha, hb]),
                           complete=np.flatnonzero(pa & pb), att_bounds=bounds,
                           att_range=(float(s_att.min()), float(s_att.max())),
                           con_range=(float(s_con.min()), float(s_con.max())))  # fmt: skip
        mm_att, mm_con = minmax(s_att), minmax(s_con)
        return state, p["rw"] * mm_att + mm_con, mm_con, mm_att

    def _impute(self, z: torch.Tensor, present: np.ndarray, nbr: np.ndarray) -> torch.Tensor:
        miss = np.flatnonzero(~present)
        if len(miss) == 0:
            return z
        z = z.clone()
        if self.impute == "crt":
            z[torch.as_tensor(miss, device=z.device)] = z[
                torch.as_tensor(nbr[miss], device=z.device)
            ].mean(1)
        else:
            z[torch.as_tensor(miss, device=z.device)] = 0.0
        return z

    @torch.no_grad()
    def _recon_error(self, ae, x: torch.Tensor, block: int = 8192) -> np.ndarray:
        out = []
        for s in range(0, len(x), block):
            xb = x[s : s + block]
            out.append((self._dec(ae, self._enc(ae, xb)) - xb).square().sum(1).to(torch.float64))
        return torch.cat(out).cpu().numpy()

    def _check_fitted(self) -> None:
        if not hasattr(self, "decision_scores_"):
            raise ValueError("this RCPMOD instance is not fitted yet; call fit(views, mask) first")

    @torch.no_grad()
    def decision_function(self, views, mask=None) -> np.ndarray:
        """Scores of new samples against the fitted training set (inductive; B6): latents from
        the trained encoders, missing views imputed by CRT with neighbours searched among the
        training samples, the consistency score against the training set's 2n embeddings and
        the reconstruction score, both normalised with the training ranges."""
        self._check_fitted()
        x, mask = check_views(views, mask, self.n_features_)
        x = self._scale(x, mask)
        dev, dt, p = self._dev, self._dt, self._p
        scores = np.zeros((len(mask), len(self.pairs_)))
        member = np.zeros_like(scores, dtype=bool)
        for j, st in enumerate(self._pair_states):
            a, b = st.views
            rows = np.flatnonzero(mask[:, a] | mask[:, b])
            if len(rows) == 0:
                continue
            pa, pb = mask[rows, a], mask[rows, b]
            xa = torch.as_tensor(x[a][rows], dtype=dt, device=dev)
            xb = torch.as_tensor(x[b][rows], dtype=dt, device=dev)
            za = self._encode_all(self.autoencoders_[a], xa)
            zb = self._encode_all(self.autoencoders_[b], xb)
            za = self._impute_new(za, zb, pa, st.z_b, st.z_a, st.complete)
            zb = self._impute_new(zb, za, pb, st.z_a, st.z_b, st.complete)
            ha = F.normalize(za.to(torch.float64), dim=1)
            hb = F.normalize(zb.to(torch.float64), dim=1)
            s_con = consistency_score_against(ha, hb, st.ref, self.temperature, self.score_block)
            err_a = self._recon_error(self.autoencoders_[a], xa)
            err_b = self._recon_error(self.autoencoders_[b], xb)
            s_att, _ = attribute_score(err_a, err_b, pa, pb, bounds=st.att_bounds)
            scores[rows, j] = p["rw"] * _scale_to(s_att, st.att_range) + _scale_to(
                s_con.cpu().numpy(), st.con_range
            )
            member[rows, j] = True
        return self._average(scores, member)

    def _impute_new(self, z_own, z_other, present, ref_other, ref_own, complete):
        """Missing view of new samples: mean training latent (own view) of the K nearest
        training samples with both views, searched in the present (other) view's latents."""
        miss = np.flatnonzero(~present)
        if len(miss) == 0:
            return z_own
        if self.impute == "zero":
            z_own = z_own.clone()
            z_own[torch.as_tensor(miss)] = 0.0
            return z_own
        k = min(self.n_neighbors, len(complete))
        both = torch.cat([ref_other, z_other[torch.as_tensor(miss)]])
        nbr = knn_search(both, k, len(ref_other) + np.arange(len(miss)), complete)
        z_own = z_own.clone()
        z_own[torch.as_tensor(miss)] = ref_own[torch.as_tensor(nbr)].mean(1)
        return z_own

    def predict(self, views, mask=None) -> np.ndarray:
        """0/1 outlier labels of new samples: ``decision_function > threshold_``."""
        return (self.decision_function(views, mask) > self.threshold_).astype(int)

    def predict_proba(self, views, mask=None) -> np.ndarray:
        """PyOD's ``linear`` probabilities ``(n, 2)``: scores min-max scaled by the training
        scores' range, clipped to [0, 1]; column 1 is the outlier probability."""
        s = self.decision_function(views, mask)
        lo, hi = self.decision_scores_.min(), self.decision_scores_.max()
        prob = np.clip((s - lo) / (hi - lo) if hi > lo else np.zeros_like(s), 0, 1)
        return np.column_stack([1 - prob, prob])

    def fit_predict(self, views, mask=None, y=None) -> np.ndarray:
        """``fit`` then the training labels ``labels_``."""
        return self.fit(views, mask).labels_


def _scale_to(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _mean_over(values: np.ndarray, member: np.ndarray) -> np.ndarray:
    count = member.sum(1)
    return np.where(count > 0, (values * member).sum(1) / np.maximum(count, 1), 0.0)


class _Rows:
    """Index groups of one view's rows for one step, encoded as one unique set."""

    def __init__(self, batch: np.ndarray):
        self.groups: dict[str, np.ndarray] = {"batch": np.asarray(batch)}

    def add(self, name: str, rows: np.ndarray) -> _Rows:
        self.groups[name] = np.asarray(rows)
        return self

    def encode(self, fn, device) -> dict[str, torch.Tensor]:
        flat = np.concatenate([g.ravel() for g in self.groups.values()])
        uniq, inv = np.unique(flat, return_inverse=True)
        z = fn(torch.as_tensor(uniq, device=device))
        inv_t = torch.as_tensor(inv, device=device)
        out, start = {}, 0
        for name, g in self.groups.items():
            part = z[inv_t[start : start + g.size]]
            out[name] = part.view(*g.shape, z.shape[-1])
            start += g.size
        return out
