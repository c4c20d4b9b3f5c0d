"""Official-checkpoint import: a state dict in the official code's layout (names and shapes as the
spec describes the official modules), and a reference forward written in the official conventions
(displacement read as (q, k), λ as (k, 1, 1), log-probabilities out)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import coalesce, erdos_renyi_graph, to_undirected

from labcore.cli import UserError
from n2gnn import N2Graph, N2Node
from n2gnn.official import (
    from_official_state_dict,
    load_official,
    official_config,
    read_official_checkpoint,
    to_official_state_dict,
)

D_IN, D, Q, K, NP, NCLS = 6, 8, 4, 3, 5, 3
U = "node_state_updater."


def official_state_dict(graph_level=False, n_c=1, seed=0):
    """Names and shapes of the official N2Node / N2Graph (d_model=D, q_dim=Q, n_q=K)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.5):
        return scale * torch.randn(*shape, generator=g)

    def linear(name, out, inp):
        return {f"{name}.weight": r(out, inp), f"{name}.bias": r(out, scale=0.1)}

    def norm(name, width):
        return {f"{name}.weight": 1 + r(width, scale=0.1), f"{name}.bias": r(width, scale=0.1)}

    sd = {
        **linear("node_state_interface.0", Q, D_IN),
        **linear("feat_ff.0", D, D_IN),
        "pnode_state": r(1, NP, Q, scale=1.0),
        "class_neuron": r(n_c, NCLS, Q, scale=1.0),
        "out_ff.lambda_copies": r(K, 1, 1, scale=1.0),
    }
    for psi in ("collection1", "pnode_agg1.pnode_agg", "inspection", "collection2",
                "pnode_agg2.pnode_agg", "dispatch"):  # fmt: skip
        sd[f"{U}{psi}.lambda_copies"] = r(K, 1, 1, scale=1.0)
    sd.update(linear(f"{U}pnode_agg1.glob2disp.0", Q * K, D))
    sd.update(linear(f"{U}pnode_agg1.glob2value.0", D, D))
    sd.update(linear(f"{U}edge_wise_ff", D, D))  # built, never used in forward
    sd.update(linear(f"{U}hstate_interface.0", Q, 2 * D + Q))
    sd.update(linear(f"{U}pnode_agg2.glob2disp.0", Q * K, 3 * D + Q))
    sd.update(linear(f"{U}pnode_agg2.glob2value.0", Q, 3 * D + Q))
    sd.update(linear(f"{U}feat_ff.0", D, Q))
    for name in ("phidden_norm", "hidden_norm", "pout_norm", "out_norm"):
        sd.update(norm(U + name, Q))
    sd.update(norm(U + "feat_norm", D))
    sd[U + "time_embedding.weight"] = r(6, D)  # built, never used in forward
    if graph_level:
        sd.update(linear("pnode_agg.0", 1, NP * K))
        sd.update(norm("out_norm", Q))
    return sd


def reference_forward(sd, x, A_hat, T, graph_level=False):
    """One graph, eval mode, in the official conventions; log-probabilities."""

    def nl(name, z):
        return F.leaky_relu(F.linear(z, sd[f"{name}.weight"], sd[f"{name}.bias"]), 0.01)

    def ln(name, z):
        return F.layer_norm(z, z.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"])

    def psi(name, X, Y):  # X, Y: (m, q) one piece or (k, m, q) pieces; Σ_c λ_c X^c Y^cᵀ / (kq)
        lam = sd[f"{name}.lambda_copies"].view(-1)
        Xs = X if X.dim() == 3 else X.expand(K, -1, -1)
        Ys = Y if Y.dim() == 3 else Y.expand(K, -1, -1)
        out = sum(lam[c] * Xs[c] @ Ys[c].T for c in range(K)) / (K * Q)
        s = out.sum(-1, keepdim=True).abs()
        return out * torch.where(s > 1e4, 1e4 / s, torch.ones_like(s))

    def displacement(name, G):  # (np, q·k) read as (np, q, k) -> pieces (k, np, q)
        return nl(name, G).view(NP, Q, K).permute(2, 0, 1)

    n = x.size(0)
    Qs, M, R = nl("node_state_interface.0", x), nl("feat_ff.0", x), sd["pnode_state"][0]
    for _ in range(T):
        G = psi(U + "collection1", R, Qs) @ M / n
        G_hat = psi(U + "pnode_agg1.pnode_agg", R, R) @ G
        R_hat = ln(U + "phidden_norm", R + displacement(U + "pnode_agg1.glob2disp.0", G_hat))
        M_p = nl(U + "pnode_agg1.glob2value.0", G_hat)
        M_loc = A_hat @ torch.cat([M, psi(U + "inspection", Qs, R_hat) @ M_p, Qs], -1)
        Q_hat = ln(U + "hidden_norm", Qs + nl(U + "hstate_interface.0", M_loc))
        G2 = torch.cat([psi(U + "collection2", R_hat, Q_hat) @ M_loc / n, M_p], -1)
        G2_hat = psi(U + "pnode_agg2.pnode_agg", R_hat, R_hat) @ G2
        R = ln(U + "pout_norm", R_hat + displacement(U + "pnode_agg2.glob2disp.0", G2_hat))
        M_gl = psi(U + "dispatch", Q_hat, R) @ nl(U + "pnode_agg2.glob2value.0", G2_hat)
        M = ln(U + "feat_norm", M + nl(U + "feat_ff.0", M_gl))
        Qs = ln(U + "out_norm", Q_hat + M_gl)
    C = sd["class_neuron"]
    C = C[0] if C.size(0) == 1 else C
    if graph_level:
        coords = R.permute(2, 0, 1).reshape(Q, K * NP)  # (q, k·np)
        h = ln("out_norm", nl("pnode_agg.0", coords).T)  # (1, q)
        return F.log_softmax(psi("out_ff", h, C), -1)
    return F.log_softmax(psi("out_ff", Qs, C), -1)


def small_graph(n=9, seed=0):
    torch.manual_seed(seed)
    ei = coalesce(to_undirected(erdos_renyi_graph(n, 0.4)))
    A = torch.zeros(n, n)
    A[ei[0], ei[1]] = 1.0
    A.fill_diagonal_(1.0)
    dinv = A.sum(1).pow(-0.5)
    return torch.randn(n, D_IN), ei, dinv[:, None] * A * dinv[None, :]


@pytest.mark.parametrize("graph_level,n_c", [(False, 1), (True, 1), (True, K)])
def test_official_checkpoint_gives_the_official_forward(graph_level, n_c):
    sd = official_state_dict(graph_level, n_c)
    model = load_official(sd, num_steps=2).eval()
    assert isinstance(model, N2Graph if graph_level else N2Node)
    c = model.config
    assert (c.in_channels, c.hidden, c.state, c.pieces, c.num_pseudo) == (D_IN, D, Q, K, NP)
    assert (c.out_channels, c.class_pieces, c.num_steps) == (NCLS, n_c, 2)
    x, ei, A_hat = small_graph()
    with torch.no_grad():
        ours = F.log_softmax(model(x, ei), -1)  # the model returns logits
        ref = reference_forward(sd, x, A_hat, T=2, graph_level=graph_level)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_without_the_row_permutation_the_forward_differs():
    sd = official_state_dict()
    ours = from_official_state_dict(sd)
    for i in (1, 2):  # load the displacement rows as they are, (q, k) read as (k, q)
        for leaf in ("weight", "bias"):
            ours[f"cell.disp{i}.0.{leaf}"] = sd[f"{U}pnode_agg{i}.glob2disp.0.{leaf}"]
    model = N2Node(official_config(sd, num_steps=2)).eval()
    model.load_state_dict(ours)
    x, ei, A_hat = small_graph()
    with torch.no_grad():
        diff = (F.log_softmax(model(x, ei), -1) - reference_forward(sd, x, A_hat, T=2)).abs()
    assert diff.max() > 1e-3


def test_displacement_rows_are_permuted_from_qk_to_kq():
    sd = official_state_dict()
    w = sd[f"{U}pnode_agg1.glob2disp.0.weight"]
    ours = from_official_state_dict(sd)["cell.disp1.0.weight"]
    for c in range(K):
        for j in range(Q):
            assert torch.equal(ours[c * Q + j], w[j * K + c])


def test_export_is_the_inverse_and_unused_modules_are_dropped():
    sd = official_state_dict(graph_level=True)
    model = load_official(sd, num_steps=1)
    back = to_official_state_dict(model)
    assert set(back) == set(sd)
    for name, value in sd.items():
        if "edge_wise_ff" in name or "time_embedding" in name:
            assert not back[name].any()  # unused in forward: not imported, exported as zeros
        else:
            assert torch.equal(back[name], value), name


def test_checkpoint_file_with_rng_states_and_dataparallel_prefix(tmp_path):
    sd = official_state_dict()
    path = tmp_path / "node as neuron_best.pth"
    torch.save({"torch_rng_state": torch.get_rng_state(), "numpy_rng_state": np.random.get_state(),  # noqa: NPY002
                "epoch": 7, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "best_val_loss": 0.5}, path)  # fmt: skip
    read = read_official_checkpoint(path)
    assert set(read) == set(sd)
    model = load_official(path, num_steps=1, edge_dim=2)
    assert (model.config.in_channels, model.config.edge_dim) == (D_IN - 2, 2)


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda sd: [sd.pop("class_neuron"), sd.pop("out_ff.lambda_copies")], "regression"),
        (lambda sd: sd.update({"extra.weight": torch.zeros(1)}), "unknown keys"),
        (lambda sd: sd.update({f"{U}hidden_norm.weight": torch.ones(Q + 1)}), "does not fit"),
    ],
)
def test_bad_official_state_dicts_are_user_errors(mutate, msg):
    sd = official_state_dict()
    mutate(sd)
    with pytest.raises(UserError, match=msg):
        load_official(sd, num_steps=1)


def test_unreadable_checkpoint_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"broken\.pth"):
        read_official_checkpoint(bad)
