import pytest
import torch

from n2gnn.proximity import Proximity


def brute_force(psi: Proximity, X, Y, x_pieces, y_pieces):
    """ψ(a, b) = Σ_c λ_c ⟨a^c, b^c⟩ / (k q), one scalar at a time (one piece = k equal ones)."""
    k, q = psi.pieces, X.shape[-1]
    lam = psi.weight.detach()
    Xp = X if x_pieces else X.unsqueeze(-3).expand(*X.shape[:-2], k, *X.shape[-2:])
    Yp = Y if y_pieces else Y.unsqueeze(-3).expand(*Y.shape[:-2], k, *Y.shape[-2:])
    B, a, b = Xp.shape[0], Xp.shape[-2], Yp.shape[-2]
    out = torch.zeros(B, a, b, dtype=torch.float64)
    for s in range(B):
        for i in range(a):
            for j in range(b):
                out[s, i, j] = sum(
                    lam[c].double() * torch.dot(Xp[s, c, i].double(), Yp[s, c, j].double())
                    for c in range(k)
                ) / (k * q)
    return out


@pytest.mark.parametrize(
    "x_pieces,y_pieces", [(False, False), (True, False), (False, True), (True, True)]
)
def test_shape_cases_match_brute_force(x_pieces, y_pieces):
    torch.manual_seed(0)
    k, q = 3, 5
    psi = Proximity(k, clip=None)
    X = torch.randn(2, k, 4, q) if x_pieces else torch.randn(2, 4, q)
    Y = torch.randn(2, k, 6, q) if y_pieces else torch.randn(2, 6, q)
    out = psi(X, Y, x_pieces, y_pieces)
    assert out.shape == (2, 4, 6)
    ref = brute_force(psi, X, Y, x_pieces, y_pieces)
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-5)


def test_signed_and_unnormalised():
    torch.manual_seed(1)
    psi = Proximity(4, clip=None)
    out = psi(torch.randn(1, 30, 8), torch.randn(1, 4, 20, 8), y_pieces=True)
    assert (out > 0).any() and (out < 0).any()  # not a softmax
    assert not torch.allclose(out.sum(-1), torch.ones(1, 30))  # rows are not normalised


def test_row_clip_scales_rows_and_passes_scaled_gradient():
    psi = Proximity(2, clip=10.0)
    with torch.no_grad():
        psi.weight.fill_(1.0)
    X = torch.tensor([[[4.0, 4.0], [0.1, 0.0]]], requires_grad=True)  # row 0 sums to 3·8/2 = 12
    Y = torch.ones(1, 3, 2)
    out = psi(X, Y)
    raw = X.detach() @ Y.transpose(-1, -2) / 2
    assert raw[0, 0].sum() == pytest.approx(12.0)
    assert out[0, 0].sum().item() == pytest.approx(10.0)  # clipped row sums to the bound
    torch.testing.assert_close(out[0, 1], raw[0, 1])  # small row untouched
    out[0, 0].sum().backward()
    # the scale 10/12 is a constant: d/dX0 Σ_j (10/12)·X0·Y_j/2 = (10/48)·3/2 per coordinate
    torch.testing.assert_close(X.grad[0, 0], torch.full((2,), 10 / 12 * 3 / 2))


def test_negative_row_clipped_to_minus_bound():
    psi = Proximity(1, clip=5.0)
    with torch.no_grad():
        psi.weight.fill_(-1.0)
    out = psi(torch.full((1, 1, 4), 3.0), torch.full((1, 2, 4), 3.0))
    assert out.sum().item() == pytest.approx(-5.0)
