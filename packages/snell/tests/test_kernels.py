"""Kernel and gate math against brute-force references (spec U2, U3, U4, U5, U10)."""

import math

import pytest
import torch

from snell.kernels import gate_delta, kernel_delta, magnitude_threshold

ALPHA = torch.tensor([[0.1, -0.1]])


def official_factors(n, m, r=8, P=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = r // P
    A = (torch.rand(1, P, n, d, generator=g, dtype=dtype) * 2 - 1) / math.sqrt(n * d)
    B = (torch.rand(1, P, m, d, generator=g, dtype=dtype) * 2 - 1) / math.sqrt(m * d)
    return A, B


def brute_force_piecewise(A, B, alpha):
    """ΔW[i, j] = Σ_p α_p ‖A_p[i] − B_p[j]‖₂ with explicit broadcasting."""
    diff = A[0][:, :, None, :] - B[0][:, None, :, :]  # (P, n, m, d)
    return (alpha[0][:, None, None] * diff.square().sum(-1).sqrt()).sum(0)


def test_piecewise_kernel_matches_brute_force():
    A, B = official_factors(17, 23, dtype=torch.float64)
    alpha = ALPHA.double()
    torch.testing.assert_close(kernel_delta(A, B, alpha)[0], brute_force_piecewise(A, B, alpha))


def test_other_kernels_match_formulas():
    A, B = official_factors(9, 11, dtype=torch.float64)
    a = A[0].permute(1, 0, 2).reshape(9, 8)
    b = B[0].permute(1, 0, 2).reshape(11, 8)
    torch.testing.assert_close(kernel_delta(A, B, None, "linear")[0], a @ b.T)
    c = torch.tensor([[0.3, 2.0, -0.1]], dtype=torch.float64)
    sq = ((a[:, None] - b[None]) ** 2).sum(-1)
    torch.testing.assert_close(kernel_delta(A, B, c, "rbf")[0], 0.3 * torch.exp(-2 * sq) - 0.1)
    torch.testing.assert_close(
        kernel_delta(A, B, c, "sigmoid")[0], 0.3 / (1 + torch.exp(-2 * a @ b.T)) - 0.1
    )
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_delta(A, B, c, "cosine")


def _ranks(matrix):
    """(rank at rtol 1e-3, float64 numerical rank) from one SVD."""
    sv = torch.linalg.svdvals(matrix)
    eps_tol = sv[0] * max(matrix.shape) * torch.finfo(matrix.dtype).eps
    return int((sv > 1e-3 * sv[0]).sum()), int((sv > eps_tol).sum())


@pytest.mark.parametrize("m", [768, 3072])
def test_rank_far_above_r(m):
    """U2: official init, r = 8: rank(ΔW) ≥ 10r (rtol 1e-3) and full in float64."""
    n, r = 768, 8
    A, B = official_factors(n, m, r, dtype=torch.float64)
    rank, full = _ranks(kernel_delta(A, B, ALPHA.double())[0])
    assert rank >= 10 * r and full == min(n, m)


def test_squared_distance_and_lora_stay_low_rank():
    """U2 contrast: squared distances (‖a‖² + ‖b‖² − 2aᵀb per piece) give rank ≤ r + 2P;
    LoRA with nonzero B has rank exactly r."""
    n, r = 768, 8
    A, B = official_factors(n, n, r, dtype=torch.float64)
    sq = torch.einsum("sp,spnm->snm", ALPHA.double(), torch.cdist(A, B) ** 2)
    assert _ranks(sq[0])[0] <= r + 4
    assert _ranks(kernel_delta(A, B, None, "linear")[0])[1] == r


def test_rank_stays_high_after_training_steps():
    """U2 after 50 Adam steps fitting a random target."""
    n, m, r = 768, 768, 8
    A, B = official_factors(n, m, r)
    A, B = A.requires_grad_(), B.requires_grad_()
    target = torch.randn(n, m, generator=torch.Generator().manual_seed(1)) * 1e-3
    opt = torch.optim.Adam([A, B], lr=1e-3)
    for _ in range(50):
        opt.zero_grad()
        (kernel_delta(A, B, ALPHA)[0] - target).square().mean().backward()
        opt.step()
    rank, full = _ranks(kernel_delta(A.detach().double(), B.detach().double(), ALPHA.double())[0])
    assert rank >= 10 * r and full == n


@pytest.mark.parametrize("s", [0.1, 0.25, 0.5, 0.9, 0.99, 0.333])
def test_threshold_equals_torch_quantile(s):
    x = torch.rand(3, 1001, generator=torch.Generator().manual_seed(2))
    ref = torch.quantile(x, s, dim=1, keepdim=True)
    torch.testing.assert_close(magnitude_threshold(x, s), ref, rtol=0, atol=1e-6)
    kth = torch.sort(x, dim=1).values[:, math.ceil(s * 1001) - 1 : math.ceil(s * 1001)]
    assert torch.equal(magnitude_threshold(x, s, "kth"), kth)
    # ties at and around the order statistics: few distinct values, rows with different ties
    t = torch.randint(0, 7, (4, 1001), generator=torch.Generator().manual_seed(3)).float()
    t[3] = 5.0
    ref = torch.quantile(t, s, dim=1, keepdim=True)
    torch.testing.assert_close(magnitude_threshold(t, s), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("s", [0.1, 0.5, 0.9, 0.99])
def test_sparsity_honoured_per_split(s):
    """U3 on the raw gate: each split zeroes its own fraction s."""
    delta = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(3))
    delta[1] *= 100.0  # a global threshold would zero all of split 0 and none of split 1
    out = gate_delta(delta, s)
    N = 64 * 96
    for i in range(3):
        assert abs((out[i] == 0).sum().item() / N - s) <= 2 / N + 1e-4


def test_zero_sparsity_is_plain_klora():
    """U4: s = 0 returns ΔW itself (no gate, no |ΔW| factor)."""
    delta = torch.randn(1, 8, 9)
    assert gate_delta(delta, 0.0) is delta


def test_official_gate_value_and_gradient():
    """U5: ΔWˢ = ΔW ⊙ sg(|ΔW| ⊙ M) and ∂L/∂ΔW = G ⊙ |ΔW| ⊙ M."""
    g = torch.Generator().manual_seed(4)
    delta = torch.randn(1, 40, 50, generator=g).requires_grad_()
    G = torch.randn(1, 40, 50, generator=g)
    s = 0.7
    out = gate_delta(delta, s, "official")
    (out * G).sum().backward()
    mag = delta.detach().abs()
    M = (mag > torch.quantile(mag.flatten(), s)).float()
    torch.testing.assert_close(out.detach(), delta.detach() * mag * M, rtol=1e-6, atol=0)
    torch.testing.assert_close(delta.grad, G * mag * M, rtol=1e-5, atol=0)
    assert (delta.grad[M == 0] == 0).all()
    assert (delta.grad[M == 1] != 0).all()


def test_paper_soft_gate_matches_eq5_and_its_gradient():
    g = torch.Generator().manual_seed(5)
    delta = torch.randn(2, 30, 20, generator=g).requires_grad_()
    G = torch.randn(2, 30, 20, generator=g)
    s = 0.6
    out = gate_delta(delta, s, "paper_soft")
    (out * G).sum().backward()
    w = delta.detach()
    k = math.ceil(s * 600)
    tau = w.abs().reshape(2, -1).sort(dim=1).values[:, k - 1].view(2, 1, 1)
    M = (w.abs() > tau).float()
    torch.testing.assert_close(out.detach(), w * (w.abs() - tau).clamp_min(0))
    torch.testing.assert_close(delta.grad, G * (2 * w.abs() - tau) * M, rtol=1e-5, atol=1e-7)
    assert all(((out[i] == 0).sum().item() >= k) for i in range(2))


def test_bad_sparsity_and_gate_are_rejected():
    with pytest.raises(ValueError, match="sparsity"):
        gate_delta(torch.randn(1, 3, 3), 1.0)
    with pytest.raises(ValueError, match="unknown gate"):
        gate_delta(torch.randn(1, 3, 3), 0.5, "hard")


def test_threshold_above_2_pow_24_elements():
    """U10: a 4096 x 4097 matrix (> 2^24 entries) is gated (torch.quantile refuses this size)."""
    delta = torch.rand(1, 4096, 4097, generator=torch.Generator().manual_seed(6))
    N = 4096 * 4097
    assert N > 2**24
    out = gate_delta(delta, 0.9)
    assert abs((out == 0).sum().item() / N - 0.9) <= 2 / N + 1e-4
