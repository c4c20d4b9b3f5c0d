import itertools

import pytest
import torch
import torch.nn.functional as F

from aucseg import AUCLoss, SegmentationLoss, auc_loss

K = 6


def surrogate_fn(name, gamma=1.0):
    return {
        "square": lambda t: (gamma - t) ** 2,
        "exp": lambda t: torch.exp(-gamma * t),
        "hinge": lambda t: torch.clamp(gamma - t, min=0),
    }[name]


def brute_force(
    logits, target, surrogate, transform, scale, gamma=1.0, ignore=255, ova_reduction="sum"
):
    """Every pixel pair of the batch, explicitly (the paper's definition, no closed form).

    ovo: the mean over ordered pairs of present classes; ova: per present class the mean over
    (positive, negative) pixel pairs, summed over classes (official) or averaged ("mean")."""
    k = logits.shape[1]
    p = torch.sigmoid(logits.movedim(1, -1).reshape(-1, k))
    y = target.reshape(-1)
    keep = y != ignore
    p, y = p[keep], y[keep]
    present = [c for c in range(k) if (y == c).any()]
    ell = surrogate_fn(surrogate, gamma)
    terms = []
    for i in present:
        a = p[y == i, i]
        negs = [p[y != i, i]] if transform == "ova" else [p[y == j, i] for j in present if j != i]
        terms += [ell(a[:, None] - b[None, :]).mean() for b in negs]
    factor = 0.5 if (scale == "code" and surrogate == "square") else 1.0
    terms = torch.stack(terms)
    if transform == "ova" and ova_reduction == "sum":
        return factor * terms.sum()
    return factor * terms.mean()


def random_batch(seed, absent=(3,), n_ignore=30, shape=(2, 10, 12)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], K, *shape[1:], generator=g, dtype=torch.float64) * 2
    classes = torch.tensor([c for c in range(K) if c not in absent])
    target = classes[torch.randint(len(classes), shape, generator=g)]
    flat = target.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:n_ignore]] = 255
    return logits, target


CASES = list(itertools.product(["square", "exp", "hinge"], ["ovo", "ova"], ["code", "paper"]))


@pytest.mark.parametrize(("surrogate", "transform", "scale"), CASES)
def test_equals_brute_force_value_and_gradient(surrogate, transform, scale):
    logits, target = random_batch(0)  # N = 240 pixels, 30 ignored, class 3 absent
    l1 = logits.clone().requires_grad_()
    l2 = logits.clone().requires_grad_()
    fast = auc_loss(l1, target, surrogate=surrogate, transform=transform, scale=scale)
    ref = brute_force(l2, target, surrogate, transform, scale)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-12)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(l1.grad, l2.grad, rtol=1e-8, atol=1e-12)
    assert l1.grad.abs().sum() > 0


@pytest.mark.parametrize("surrogate", ["square", "exp", "hinge"])
def test_ova_sums_over_present_classes_by_default_and_mean_is_the_option(surrogate):
    logits, target = random_batch(8)  # 5 of 6 classes present
    for reduction in ("sum", "mean"):
        l1 = logits.clone().requires_grad_()
        l2 = logits.clone().requires_grad_()
        fast = auc_loss(l1, target, surrogate=surrogate, transform="ova", ova_reduction=reduction)
        ref = brute_force(l2, target, surrogate, "ova", "code", ova_reduction=reduction)
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-12)
        fast.backward()
        ref.backward()
        torch.testing.assert_close(l1.grad, l2.grad, rtol=1e-8, atol=1e-12)
    total = auc_loss(logits, target, surrogate=surrogate, transform="ova")
    mean = auc_loss(logits, target, surrogate=surrogate, transform="ova", ova_reduction="mean")
    torch.testing.assert_close(total, 5 * mean)  # B_c = 5 present classes
    # the default is the sum; ovo ignores the option
    assert AUCLoss(transform="ova").ova_reduction == "sum"
    torch.testing.assert_close(
        auc_loss(logits, target, ova_reduction="mean"), auc_loss(logits, target)
    )
    with pytest.raises(ValueError, match="ova_reduction"):
        auc_loss(logits, target, transform="ova", ova_reduction="max")


def test_gamma_other_than_one_matches_brute_force():
    logits, target = random_batch(1)
    for surrogate in ("square", "exp"):
        fast = auc_loss(logits, target, surrogate=surrogate, gamma=0.5)
        torch.testing.assert_close(fast, brute_force(logits, target, surrogate, "ovo", "code", 0.5))
    with pytest.raises(ValueError, match="gamma >= 1"):
        auc_loss(logits, target, surrogate="hinge", gamma=0.5)


def test_code_scale_is_half_of_the_paper_mean():
    logits, target = random_batch(2)
    code = auc_loss(logits, target, scale="code")
    paper = auc_loss(logits, target, scale="paper")
    torch.testing.assert_close(code, 0.5 * paper)


def test_pixel_permutation_invariance():
    logits, target = random_batch(3)
    b, k, h, w = logits.shape
    perm = torch.randperm(b * h * w, generator=torch.Generator().manual_seed(0))
    flat_logits = logits.movedim(1, -1).reshape(-1, k)[perm]
    permuted = flat_logits.reshape(b, h, w, k).movedim(-1, 1)
    permuted_target = target.reshape(-1)[perm].reshape(b, h, w)
    # also a different batch/spatial split of the same pixels
    reshaped = flat_logits.reshape(4, h * w // 2, 1, k).movedim(-1, 1)
    for s in ("square", "exp"):
        a = auc_loss(logits, target, surrogate=s)
        torch.testing.assert_close(a, auc_loss(permuted, permuted_target, surrogate=s))
        torch.testing.assert_close(
            a, auc_loss(reshaped, permuted_target.reshape(4, -1, 1), surrogate=s)
        )


def test_perfect_separation_gives_zero():
    target = torch.randint(K, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    logits = torch.where(F.one_hot(target, K).movedim(-1, 1).bool(), 60.0, -60.0).double()
    assert auc_loss(logits, target).item() < 1e-20
    assert auc_loss(logits, target, transform="ova").item() < 1e-20
    # and it is positive as soon as the scores are not perfect
    assert auc_loss(torch.zeros_like(logits), target).item() == pytest.approx(0.5)


def test_fewer_than_two_present_classes_gives_zero_with_a_graph():
    logits = torch.randn(1, K, 4, 4, requires_grad=True)
    one_class = torch.full((1, 4, 4), 2)
    one_class[0, 0] = 255
    for t in (one_class, torch.full((1, 4, 4), 255)):
        loss = auc_loss(logits, t)
        assert loss.item() == 0.0 and not torch.isnan(loss)
        loss.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("transform", ["ovo", "ova"])
def test_infinite_logits_with_fewer_than_two_classes_give_zero_not_nan(transform):
    logits = torch.randn(1, K, 4, 4)
    logits[0, 1, 0, 1] = float("inf")
    logits[0, 3, 2, 2] = float("-inf")
    logits.requires_grad_()
    one_class = torch.full((1, 4, 4), 2)
    for t in (one_class, torch.full((1, 4, 4), 255)):
        loss = auc_loss(logits, t, transform=transform)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None
    # every pixel ignored: CE is 0 too, and the total stays finite
    out = SegmentationLoss(w_auc=1.0)(logits, torch.full((1, 4, 4), 255))
    assert out["loss"].item() == 0.0 and out["ce"].item() == 0.0


def test_infinite_logits_with_two_classes_are_finite_and_match_brute_force():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64)
    target = torch.randint(2, (1, 4, 5), generator=g)
    logits[0, 0, 0, 0], logits[0, 1, 1, 1] = float("inf"), float("-inf")
    got = auc_loss(logits, target)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, brute_force(logits, target, "square", "ovo", "code"))


def test_two_class_problem_works():  # the official num_classes == 2 branch raises a TypeError
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    target = torch.randint(2, (2, 5, 5), generator=g)
    torch.testing.assert_close(
        auc_loss(logits, target), brute_force(logits, target, "square", "ovo", "code")
    )


def test_labels_outside_range_are_ignored_and_shape_errors_are_clear():
    logits, target = random_batch(4, n_ignore=0)
    with_bad = target.clone()
    with_bad[0, 0, :3] = 255
    keep = auc_loss(logits, with_bad)
    ref = brute_force(logits, with_bad, "square", "ovo", "code")
    torch.testing.assert_close(keep, ref)
    with pytest.raises(ValueError, match="upsample the logits"):
        auc_loss(logits[..., :5], target)
    with pytest.raises(ValueError, match="surrogate"):
        AUCLoss(surrogate="log")(logits, target)


def test_half_precision_input_is_computed_in_float32():
    logits, target = random_batch(6)
    ref = auc_loss(logits, target)
    got = auc_loss(logits.to(torch.bfloat16), target)
    assert got.dtype == torch.bfloat16
    assert abs(got.double().item() - ref.item()) < 1e-2


def test_segmentation_loss_is_weighted_auc_plus_ce_at_label_size():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, K, 4, 4, generator=g)
    target = torch.randint(K, (2, 16, 16), generator=g)
    target[0, :2] = 255
    up = F.interpolate(logits, (16, 16), mode="bilinear", align_corners=False)
    ce = F.cross_entropy(up, target, ignore_index=255)
    auc = auc_loss(up, target)
    out = SegmentationLoss(w_auc=4.0)(logits, target)
    torch.testing.assert_close(out["loss"], 4.0 * auc + ce)
    torch.testing.assert_close(SegmentationLoss(w_auc=0.0)(logits, target)["loss"], ce)
