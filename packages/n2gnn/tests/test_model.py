import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch_geometric.data import Batch, Data
from torch_geometric.utils import coalesce, erdos_renyi_graph, to_undirected

from n2gnn.bench import MOLPCBA
from n2gnn.cell import N2Cell
from n2gnn.model import N2Graph, N2Node, edge_sum_features, gcn_operator, official_parameter_count

SMALL = dict(hidden=16, state=8, pieces=3, num_pseudo=5, num_steps=3, dropout=0.0)


def graph(n, p=0.2, feats=6, seed=0, edge_dim=None):
    g = torch.Generator().manual_seed(seed)
    ei = erdos_renyi_graph(n, p) if n > 1 else torch.empty(2, 0, dtype=torch.long)
    ea = torch.randn(ei.size(1), edge_dim, generator=g) if edge_dim else None
    return Data(x=torch.randn(n, feats, generator=g), edge_index=ei, edge_attr=ea)


def permute(data, perm):
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    out = Data(x=data.x[perm], edge_index=inv[data.edge_index])
    if data.edge_attr is not None:
        out.edge_attr = data.edge_attr
    return out


def test_node_permutation_equivariance():
    torch.manual_seed(0)
    model = N2Node(in_channels=6, out_channels=4, edge_dim=2, **SMALL).eval()
    data = graph(30, seed=1, edge_dim=2)
    perm = torch.randperm(30)
    out = model(data.x, data.edge_index, data.edge_attr)
    out_p = model(*(lambda d: (d.x, d.edge_index, d.edge_attr))(permute(data, perm)))
    assert (out_p - out[perm]).abs().max() <= 1e-5
    assert out.abs().max() > 1e-3  # non-trivial logits


def test_graph_invariance_and_batch_independence():
    torch.manual_seed(0)
    model = N2Graph(in_channels=6, out_channels=3, **SMALL).eval()
    graphs = [graph(n, seed=s) for s, n in enumerate([5, 40, 17, 9])]
    alone = torch.cat([model(g.x, g.edge_index) for g in graphs])
    b = Batch.from_data_list(graphs)
    batched = model(b.x, b.edge_index, batch=b.batch)
    assert batched.shape == (4, 3)
    assert (batched - alone).abs().max() <= 1e-5  # the 5-node graph is padded to 40: N_b, masks
    g = graphs[1]
    perm = torch.randperm(40)
    gp = permute(g, perm)
    assert (model(gp.x, gp.edge_index) - alone[1]).abs().max() <= 1e-5
    assert (alone[0] - alone[1]).abs().max() > 1e-4  # graphs differ: pseudo nodes are per graph


def test_node_logits_batch_independence():
    torch.manual_seed(0)
    model = N2Node(in_channels=6, out_channels=3, **SMALL).eval()
    graphs = [graph(n, seed=s) for s, n in enumerate([8, 25, 12])]
    b = Batch.from_data_list(graphs)
    alone = torch.cat([model(g.x, g.edge_index) for g in graphs])
    assert (model(b.x, b.edge_index, batch=b.batch) - alone).abs().max() <= 1e-5


def test_molpcba_parameter_count_independent_of_depth():
    counts = {L: N2Graph(num_steps=L, **MOLPCBA) for L in (1, 6, 12)}
    own = {L: sum(p.numel() for p in m.parameters()) for L, m in counts.items()}
    assert set(own.values()) == {441_337}
    assert {official_parameter_count(m) for m in counts.values()} == {458_617}


@pytest.mark.parametrize(
    "cls,kwargs,expected",
    [
        (N2Graph, dict(in_channels=3, out_channels=2, num_steps=8, num_pseudo=32), 391_481),
        (N2Graph, dict(in_channels=37, out_channels=2, state=128, num_pseudo=32), 838_585),
        (N2Node, dict(in_channels=745, out_channels=8, num_pseudo=256), 548_280),
        (N2Node, dict(in_channels=128, out_channels=40, num_pseudo=320), 435_960),
        (N2Node, dict(in_channels=300, out_channels=5, hidden=64, num_pseudo=256), 262_456),
    ],
)
def test_table_s6_parameter_counts(cls, kwargs, expected):
    assert official_parameter_count(cls(**kwargs)) == expected


def test_gcn_operator_matches_dense_reference():
    ei = coalesce(to_undirected(torch.tensor([[0, 1, 1, 3, 2], [1, 2, 3, 3, 0]])))
    A = torch.zeros(5, 5)
    A[ei[0], ei[1]] = 1.0
    A.fill_diagonal_(1.0)  # remaining self-loops; node 3 already has one, node 4 is isolated
    dinv = A.sum(1).pow(-0.5)
    ref = dinv[:, None] * A * dinv[None, :]
    index = torch.tensor([0, 1, 2, 3, 5])  # slot 4 is padding
    dense = gcn_operator(ei, index, 5, 6).to_dense()
    torch.testing.assert_close(dense[index][:, index], ref)
    assert dense[4].abs().sum() == 0 and dense[:, 4].abs().sum() == 0


def test_edge_features_summed_per_source_with_unit_self_loops():
    ei = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 2]])  # node 2 already has a self-loop
    ea = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    expected = torch.tensor([[1 + 3 + 1, 2 + 4 + 1], [5 + 1, 6 + 1], [7, 8], [1, 1]]).float()
    torch.testing.assert_close(edge_sum_features(ei, ea, 4), expected)


def reference_step(cell, M, Q, R, A_hat):
    """One cell step for one graph, written from the equations with explicit per-piece sums."""
    k, q = cell.pieces, cell.state
    n = M.shape[0]

    def psi(name, X, Y):
        lam = cell.psi[name].weight
        Xs = X if X.dim() == 3 else X.expand(k, -1, -1)
        Ys = Y if Y.dim() == 3 else Y.expand(k, -1, -1)
        return sum(lam[c] * Xs[c] @ Ys[c].T for c in range(k)) / (k * q)

    def move(R, delta, norm):
        return norm(R + delta.view(-1, k, q).transpose(0, 1))

    G = psi("collect1", R, Q) @ M / n
    G_hat = psi("refine1", R, R) @ G
    R_hat = move(R, cell.disp1(G_hat), cell.norm_pseudo1)
    M_p = cell.val1(G_hat)
    M_loc = A_hat @ torch.cat([M, psi("inspect", Q, R_hat) @ M_p, Q], -1)
    Q_hat = cell.norm_state1(Q + cell.local(M_loc))
    G2 = torch.cat([psi("collect2", R_hat, Q_hat) @ M_loc / n, M_p], -1)
    G2_hat = psi("refine2", R_hat, R_hat) @ G2
    R_new = move(R_hat, cell.disp2(G2_hat), cell.norm_pseudo2)
    M_gl = psi("dispatch", Q_hat, R_new) @ cell.val2(G2_hat)
    return cell.norm_message(M + cell.out(M_gl)), cell.norm_state2(Q_hat + M_gl), R_new


def test_cell_matches_equation_reference_for_two_steps():
    torch.manual_seed(0)
    cell = N2Cell(hidden=6, state=4, pieces=3).eval()
    n, np_ = 7, 5
    ei = coalesce(to_undirected(erdos_renyi_graph(n, 0.4)))
    A = torch.zeros(n, n)
    A[ei[0], ei[1]] = 1.0
    A.fill_diagonal_(1.0)
    dinv = A.sum(1).pow(-0.5)
    A_hat = dinv[:, None] * A * dinv[None, :]
    M, Q, R0 = torch.randn(n, 6), torch.randn(n, 4), torch.randn(np_, 4)
    adj = gcn_operator(ei, torch.arange(n), n, n)
    mask, N_b = torch.ones(1, n, dtype=torch.bool), torch.full((1, 1, 1), float(n))
    out = cell(M[None], Q[None], R0[None], adj, mask, N_b)
    ref = reference_step(cell, M, Q, R0, A_hat)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a[0], b, atol=1e-5, rtol=1e-4)
    out2 = cell(*out, adj, mask, N_b)
    ref2 = reference_step(cell, *ref, A_hat)
    for a, b in zip(out2, ref2):
        torch.testing.assert_close(a[0], b, atol=1e-5, rtol=1e-4)


class ShapeAudit(TorchDispatchMode):
    """Records the largest number of dims ≥ n in any dense tensor an op produces."""

    def __init__(self, n):
        super().__init__()
        self.n, self.worst = n, (0, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                big = sum(s >= self.n for s in t.shape)
                if big > self.worst[0]:
                    self.worst = (big, (str(func), tuple(t.shape)))
        return out


def test_no_intermediate_with_two_dims_of_node_size():
    torch.manual_seed(0)
    n = 300  # larger than every width: d=16, q=8, 2d+q=40, np=5, k·np=15
    model = N2Graph(in_channels=6, out_channels=2, edge_dim=2, **SMALL)
    g = graph(n, p=0.02, edge_dim=2)
    audit = ShapeAudit(n)
    with audit:
        model(g.x, g.edge_index, g.edge_attr).sum().backward()
    assert audit.worst[0] <= 1, audit.worst


def test_pathways_move_between_steps_and_differ_across_graphs():
    torch.manual_seed(0)
    model = N2Graph(in_channels=6, out_channels=2, **SMALL).eval()
    seen = []
    hook = model.cell.psi["collect1"].register_forward_hook(lambda m, i, o: seen.append(o))
    g1, g2 = graph(20, seed=1), graph(20, seed=2)
    b = Batch.from_data_list([g1, g2])
    _, _, R, _ = model.propagate_states(b.x, b.edge_index, batch=b.batch)
    hook.remove()
    first, last = seen[0], seen[-1]
    assert ((last - first).norm() / first.norm()) > 1e-3  # pathways are recomputed: dynamic
    assert (R[0] - R[1]).abs().max() > 1e-3  # each graph moved its own pseudo nodes
    assert (first < 0).any() and (first > 0).any()  # ψ is signed


def test_cutting_node_to_pseudo_flow_makes_graph_logits_constant():
    torch.manual_seed(0)
    graphs = [graph(n, seed=s) for s, n in enumerate([6, 30, 12, 21])]
    b = Batch.from_data_list(graphs)
    cut = N2Graph(in_channels=6, out_channels=2, node_to_pseudo=False, **SMALL).eval()
    logits = cut(b.x, b.edge_index, batch=b.batch)
    # the readout sees only pseudo nodes, which now never hear from graph nodes: one prediction for
    # every graph, so accuracy is at most the majority-class rate
    assert (logits - logits[0]).abs().max() <= 1e-6
    full = N2Graph(in_channels=6, out_channels=2, **SMALL).eval()
    assert (full(b.x, b.edge_index, batch=b.batch).std(0) > 1e-5).all()


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = N2Graph(in_channels=6, out_channels=3, edge_dim=2, **SMALL)
    b = Batch.from_data_list([graph(10, seed=1, edge_dim=2), graph(14, seed=2, edge_dim=2)])
    torch.nn.functional.cross_entropy(
        model(b.x, b.edge_index, b.edge_attr, b.batch), torch.tensor([0, 2])
    ).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kw", [dict(normalize_by_nodes=False), dict(global_mp=False)])
def test_switches_with_same_weights_change_outputs(kw):
    torch.manual_seed(0)
    g = graph(15)
    code = N2Node(in_channels=6, out_channels=3, **SMALL).eval()
    other = N2Node(in_channels=6, out_channels=3, **SMALL, **kw).eval()
    other.load_state_dict(code.state_dict())
    assert (other(g.x, g.edge_index) - code(g.x, g.edge_index)).abs().max() > 1e-6


@pytest.mark.parametrize(
    "kw,width", [(dict(residual="paper"), (16, 8)), (dict(concat_pseudo_messages=False), (40, 8))]
)
def test_paper_variants_change_layer_shapes(kw, width):
    g = graph(15)
    model = N2Node(in_channels=6, out_channels=3, **SMALL, **kw)
    # residual="paper": NL_f maps the d-wide global message to q; no concat: G2 is 2d+q wide
    layer = model.cell.out if "residual" in kw else model.cell.val2
    assert (layer[0].in_features, layer[0].out_features) == width
    assert torch.isfinite(model(g.x, g.edge_index)).all()


@pytest.mark.parametrize(
    "x,ei,msg",
    [
        (torch.randn(4, 6), torch.tensor([[0, 1], [1, 4]]), "refers to node 4 but x has 4 nodes"),
        (torch.randn(4, 5), torch.tensor([[0, 1], [1, 2]]), "x must have shape (num_nodes, 6)"),
        (torch.randn(4, 6), torch.tensor([[0, 1, 2]]), "edge_index must have shape (2, E)"),
        (torch.randn(4, 6), torch.tensor([[0, -1], [1, 2]]), "negative node indices"),
    ],
)
def test_bad_inputs_raise_one_clear_error(x, ei, msg):
    model = N2Node(in_channels=6, out_channels=2, **SMALL)
    with pytest.raises(ValueError) as err:
        model(x, ei)
    assert msg in str(err.value)


def test_edge_attr_mismatch_is_reported():
    model = N2Node(in_channels=6, out_channels=2, edge_dim=3, **SMALL)
    g = graph(5, p=0.5, edge_dim=2)
    with pytest.raises(ValueError, match="edge_attr must have shape"):
        model(g.x, g.edge_index, g.edge_attr)
    with pytest.raises(ValueError, match="edge_attr is missing"):
        model(g.x, g.edge_index)
