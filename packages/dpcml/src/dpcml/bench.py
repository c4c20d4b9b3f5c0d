"""Speed at MovieLens-1M scale (6,040 users × 3,953 items, random data and embeddings), each
vectorised path beside the per-triplet / per-user loop of the official code.

* sampler: uniform negatives per second (all pairs × S at once vs ``randint`` + set per draw);
* training: triplets per second of the DPCML1 step (d = 32, C = 3, batch 1024, DCRS over all
  users, projection every step) fed by :class:`TripletSampler` vs the official feeding (a
  ``DataLoader`` over a list of triplets with per-item collation) into the same step;
* evaluation: one full-ranking pass (P/R/NDCG@{3,5}, MAP, MRR, AUC, NDCG) with the run.sh model
  size (d = 100, C = 5) vs the official way (broadcast-difference scores per chunk, then a
  per-user Python loop), extrapolated from a subset of users; both timed on growing user
  subsets for the scaling plot (``plot_evaluation_scaling``).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from dpcml.config import DPCMLConfig
from dpcml.data import split_per_user
from dpcml.model import DPCML
from dpcml.ranking import evaluate_ranking, naive_evaluate
from dpcml.sampler import TripletSampler, naive_uniform_negatives, sample_negatives
from labcore.memory import training_state_bytes

__all__ = ["ML1M_ITEMS", "ML1M_USERS", "ml1m_like", "plot_evaluation_scaling", "run_bench"]

ML1M_USERS, ML1M_ITEMS, ML1M_POSITIVES = 6040, 3953, 575_281
# evaluation time vs number of users (the last vectorised size is every user of ML-1M)
EVAL_USERS, EVAL_USERS_QUICK = (100, 300, 1000, 3000, 6040), (100, 300, 1000, 3000, 6040)
NAIVE_USERS, NAIVE_USERS_QUICK = (50, 150, 500, 1000), (25, 50, 100)


def ml1m_like(seed: int = 0) -> sp.csr_matrix:
    """A random binary matrix with ML-1M's shape and about its number of positives
    (log-normal user activity ≥ 5, Zipf-like item popularity)."""
    rng = np.random.default_rng(seed)
    n = np.clip(rng.lognormal(4.0, 1.0, ML1M_USERS), 5, 2000)
    n = np.maximum(5, np.round(n * ML1M_POSITIVES / n.sum())).astype(np.int64)
    pop = 1.0 / np.arange(1, ML1M_ITEMS + 1) ** 0.8
    keys = np.log(pop) + rng.gumbel(size=(ML1M_USERS, ML1M_ITEMS))  # Gumbel top-n per user
    order = np.argsort(-keys, axis=1)
    liked = np.zeros((ML1M_USERS, ML1M_ITEMS), dtype=bool)
    np.put_along_axis(liked, order, np.arange(ML1M_ITEMS)[None, :] < n[:, None], axis=1)
    return sp.csr_matrix(liked.astype(np.float32))


def _rate(fn, work: int) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return work / seconds, seconds


def _train_steps(model, opt, batches, n_steps: int) -> int:
    seen = 0
    for step, (u, p, n) in enumerate(batches):
        if step == n_steps:
            break
        loss = model(u, p, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.project_users_()
        seen += len(u)
    return seen


def _official_predict(model: DPCML, sub_chunk: int = 25):
    """Scores the way the official ``predict`` computes them: the (B, C, I, d) broadcast
    difference, squared and summed, then min over C (in sub-chunks of 25 users to bound memory;
    the official code uses 100, so this baseline is if anything faster than the original)."""

    @torch.no_grad()
    def predict(users: torch.Tensor) -> torch.Tensor:
        v = model.item_embeddings.weight[None, None]  # (1, 1, I, d)
        parts = [-(model.user_vectors(u).unsqueeze(2) - v).square().sum(-1).amin(1)
                 for u in users.split(sub_chunk)]  # fmt: skip
        return torch.cat(parts)

    return predict


def _official_loader(sampler: TripletSampler, batch_size: int):
    """The official feeding: a Dataset of (u, v+, v−) tuples, shuffled, collated per item."""
    users, pos, neg = sampler.epoch()
    triplets = list(zip(users.tolist(), pos.tolist(), neg.tolist()))
    return torch.utils.data.DataLoader(triplets, batch_size=batch_size, shuffle=True)


def run_bench(quick: bool = False, seed: int = 0) -> dict:
    """All measurements; ``quick`` shrinks the naive subsets and step counts (rates unchanged)."""
    rng = np.random.default_rng(seed)
    matrix = ml1m_like(seed)
    split = split_per_user(matrix, seed=1234, rng="numpy")
    train = split.train
    users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    s = 10
    out: dict = {"data": {"users": ML1M_USERS, "items": ML1M_ITEMS, "positives": matrix.nnz,
                          "train_pairs": train.nnz}}  # fmt: skip

    fast, fast_s = _rate(lambda: sample_negatives(train, users, s, rng), len(users) * s)
    sub = rng.choice(users, 2_000 if quick else 20_000, replace=False)
    slow, _ = _rate(lambda: naive_uniform_negatives(train, sub, s, seed), len(sub) * s)
    out["sampler"] = {"vectorised_per_s": fast, "naive_per_s": slow, "speedup": fast / slow,
                      "epoch_seconds": fast_s}  # fmt: skip

    torch.manual_seed(seed)
    cfg = DPCMLConfig(dim=32, n_vectors=3, sampling="uniform", batch_size=1024)
    model = DPCML(ML1M_USERS, ML1M_ITEMS, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = TripletSampler(train, s, "uniform", seed=seed)
    # the epoch's sampling is timed above; here only feeding + step, after one warm-up step
    n_steps = 40 if quick else 300
    batches = sampler.batches(1024)
    _train_steps(model, opt, batches, 1)
    fast, _ = _rate(lambda: _train_steps(model, opt, batches, n_steps), n_steps * 1024)
    n_naive = 10 if quick else 60
    loader = iter(_official_loader(sampler, 1024))
    _train_steps(model, opt, loader, 1)
    slow, _ = _rate(lambda: _train_steps(model, opt, loader, n_naive), n_naive * 1024)
    hard_cfg = DPCMLConfig(dim=32, n_vectors=3, sampling="hard", batch_size=1024)
    hard = DPCML(ML1M_USERS, ML1M_ITEMS, hard_cfg)
    hard_opt = torch.optim.Adam(hard.parameters(), lr=cfg.lr)
    hard_batches = TripletSampler(train, s, "hard", seed=seed).batches(1024)
    _train_steps(hard, hard_opt, hard_batches, 1)
    n_hard = n_steps // 2
    hard_rate, _ = _rate(lambda: _train_steps(hard, hard_opt, hard_batches, n_hard), n_hard * 1024)
    out["training"] = {"vectorised_triplets_per_s": fast, "official_loader_triplets_per_s": slow,
                       "speedup": fast / slow, "hard_pairs_per_s": hard_rate,
                       "state_bytes": training_state_bytes(model, opt).as_dict()}  # fmt: skip

    torch.manual_seed(seed)
    big = DPCML(ML1M_USERS, ML1M_ITEMS, DPCMLConfig())  # run.sh size: d = 100, C = 5
    big.project_users_()
    official = _official_predict(big)
    evaluate_ranking(big, train, split.test, ks=(3, 5), users=np.arange(64))  # warm-up
    fast_sizes = EVAL_USERS_QUICK if quick else EVAL_USERS
    naive_sizes = NAIVE_USERS_QUICK if quick else NAIVE_USERS
    order = rng.permutation(ML1M_USERS)  # nested subsets: the first n users of one permutation
    fast_curve, naive_curve = [], []
    for n in fast_sizes:
        start = time.perf_counter()
        m = evaluate_ranking(big, train, split.test, ks=(3, 5), users=np.sort(order[:n]))
        fast_curve.append(time.perf_counter() - start)
    metrics, fast_s = m, fast_curve[-1]  # the last size is every user
    for n in naive_sizes:
        start = time.perf_counter()
        naive_evaluate(official, train, split.test, (3, 5), users=np.sort(order[:n]))
        naive_curve.append(time.perf_counter() - start)
    naive_s = naive_curve[-1] * ML1M_USERS / naive_sizes[-1]
    out["evaluation"] = {"vectorised_seconds": fast_s, "naive_seconds_extrapolated": naive_s,
                         "naive_users_timed": naive_sizes[-1], "speedup": naive_s / fast_s,
                         "random_model_metrics": metrics,
                         "scaling": {"vectorised": {"users": list(fast_sizes),
                                                    "seconds": fast_curve},
                                     "per_user_loop": {"users": list(naive_sizes),
                                                       "seconds": naive_curve}}}  # fmt: skip
    return out


def plot_evaluation_scaling(path, evaluation: dict):
    """Log-log PNG of full-ranking evaluation time vs users: vectorised vs the per-user loop."""
    from labcore.plot import line_plot

    sc = evaluation["scaling"]
    series = {"vectorised (this package)": (sc["vectorised"]["users"], sc["vectorised"]["seconds"]),
              "per-user loop (official style)": (sc["per_user_loop"]["users"],
                                                 sc["per_user_loop"]["seconds"])}  # fmt: skip
    return line_plot(path, series, xlabel="users evaluated (ML-1M scale, 3,953 items)",
                     ylabel="seconds", loglog=True,
                     title="dpcml full-ranking evaluation time")  # fmt: skip
