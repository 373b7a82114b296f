"""Losses against slow references and hand-computed values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_utils import losses
from reid_utils.errors import ConfigError
from reid_utils.schema import GROUP_SLICES, GROUPS, groups_to_binary, targets_for_form

torch.set_num_threads(1)


def random_groups(n, seed=0, unknown_rows=()):
    rng = np.random.default_rng(seed)
    groups = np.stack([rng.integers(0, g.num_classes, n) for g in GROUPS], axis=1)
    groups[list(unknown_rows)] = -1
    return torch.from_numpy(groups)


# ---------------------------------------------------------------------------------------------
# Identity


def test_label_smoothing_matches_hand_written_reference():
    torch.manual_seed(0)
    logits, labels, eps = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0]), 0.1
    q = torch.full((6, 5), eps / 5) + (1 - eps) * F.one_hot(labels, 5)
    reference = -(q * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert torch.allclose(losses.identity_cross_entropy(logits, labels, eps), reference, atol=1e-6)


def test_identity_loss_ignores_negative_labels():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    full = losses.identity_cross_entropy(logits[:2], torch.tensor([0, 2]), 0.0)
    mixed = losses.identity_cross_entropy(logits, torch.tensor([0, 2, -1, -1]), 0.0)
    assert torch.allclose(full, mixed)
    assert losses.identity_cross_entropy(logits, torch.full((4,), -1), 0.1).item() == 0.0


def test_am_softmax_hand_case():
    # cos = [0.5, 0.2], label 0, s=10, m=0.3 -> logits [2, 2] -> loss log 2
    loss = losses.AMSoftmaxLoss(scale=10, margin=0.3)(torch.tensor([[0.5, 0.2]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    # label 1: logits [5, -1] -> loss = log(1 + e^6)
    loss = losses.AMSoftmaxLoss(scale=10, margin=0.3)(torch.tensor([[0.5, 0.2]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(6)), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Metric


def slow_triplet(features, pids, margin):
    """Per-anchor loop, straight from the definition."""
    terms = []
    for a in range(len(pids)):
        pos = [torch.dist(features[a], features[p]) for p in range(len(pids)) if p != a and pids[p] == pids[a]]
        neg = [torch.dist(features[a], features[n]) for n in range(len(pids)) if pids[n] != pids[a]]
        if not pos or not neg:
            continue
        diff = max(pos) - min(neg)
        terms.append(F.softplus(diff) if margin is None else torch.clamp(diff + margin, min=0))
    return torch.stack(terms).mean()


def test_triplet_four_sample_hand_case():
    # 1-D points: pid 0 at 0 and 1, pid 1 at 3 and 5.
    features = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchors: (d_ap, d_an) = (1, 3), (1, 2), (2, 2), (2, 4); margin 0.5 -> relu: 0, 0, 0.5, 0
    assert losses.batch_hard_triplet_loss(features, pids, 0.5).item() == pytest.approx(0.5 / 4)
    soft = sum(math.log1p(math.exp(d)) for d in (-2, -1, 0, -2)) / 4
    assert losses.batch_hard_triplet_loss(features, pids, None).item() == pytest.approx(soft, abs=1e-5)


@pytest.mark.parametrize("margin", [0.3, None])
def test_triplet_matches_slow_reference(margin):
    torch.manual_seed(1)
    features = torch.randn(16, 8, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5])  # pids 3 and 5 are alone
    fast = losses.batch_hard_triplet_loss(features, pids, margin)
    assert fast.item() == pytest.approx(slow_triplet(features.float(), pids, margin).item(), abs=1e-5)


def test_triplet_gradient_finite_and_zero_without_valid_anchor():
    features = torch.randn(4, 3, requires_grad=True)
    loss = losses.batch_hard_triplet_loss(features, torch.tensor([0, 0, 1, 1]), 0.3)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    assert losses.batch_hard_triplet_loss(features, torch.tensor([0, 1, 2, 3]), 0.3).item() == 0.0


def test_center_loss_value_and_learnable_centers():
    center = losses.CenterLoss(num_ids=3, feat_dim=2)
    with torch.no_grad():
        center.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]))
    features = torch.tensor([[1.0, 0.0], [1.0, 3.0], [9.0, 9.0]])
    loss = center(features, torch.tensor([0, 1, -1]))  # (1 + 4) / 2; the -1 row is ignored
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert center.centers.grad is not None and center.centers.grad[2].abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# Attributes


def test_binary_targets_match_schema_and_mask_unknown():
    groups = random_groups(20, unknown_rows=[3])
    groups[5, 10] = -1  # one unknown group: its 8 colour columns are masked
    known = [i for i in range(20) if i not in (3, 5)]
    targets, mask = losses.binary_targets(groups)
    assert torch.equal(targets[known], targets_for_form(groups[known], "binary"))
    assert not mask[3].any() and mask[5].sum() == 30 - 8 and mask[known].all()


def test_positive_ratios_by_hand():
    groups = torch.zeros(4, 12, dtype=torch.long)
    groups[0, 0], groups[1, 0] = 3, 3  # age old twice out of three known rows
    groups[:2, 1] = 1  # backpack yes in rows 0, 1
    groups[3] = -1  # unknown row ignored
    ratios = losses.positive_ratios(groups)
    assert ratios.shape == (30,)
    assert ratios[3].item() == pytest.approx(2 / 3) and ratios[0].item() == pytest.approx(1 / 3)
    assert ratios[4].item() == pytest.approx(2 / 3) and ratios[13].item() == pytest.approx(1.0)  # upblack


def test_grouped_cross_entropy_matches_per_group_reference():
    torch.manual_seed(0)
    logits, groups = torch.randn(8, 41), random_groups(8, unknown_rows=[6, 7])
    reference = sum(F.cross_entropy(logits[:6, sl], groups[:6, g]) for g, sl in enumerate(GROUP_SLICES)) / 12
    assert torch.allclose(losses.grouped_cross_entropy(logits, groups), reference, atol=1e-6)


def test_grouped_cross_entropy_class_weights():
    torch.manual_seed(0)
    logits, groups = torch.randn(5, 41), random_groups(5)
    weights = [torch.rand(g.num_classes) + 0.5 for g in GROUPS]
    terms = [
        weights[g][groups[i, g]] * F.cross_entropy(logits[i : i + 1, sl], groups[i : i + 1, g])
        for i in range(5)
        for g, sl in enumerate(GROUP_SLICES)
    ]
    assert losses.grouped_cross_entropy(logits, groups, weights).item() == pytest.approx(
        (sum(terms) / 60).item(), abs=1e-6
    )


def test_exp_and_frequency_weight_formulas():
    a = torch.tensor([0.1, 0.5, 0.9])
    pos, neg = losses.exp_weights(a)
    assert torch.allclose(pos, torch.exp(1 - a)) and torch.allclose(neg, torch.exp(a))
    assert pos[0].item() == pytest.approx(math.exp(0.9)) and neg[0].item() == pytest.approx(math.exp(0.1))
    pos, neg = losses.frequency_weights(a)
    assert torch.allclose(pos, torch.tensor([5.0, 1.0, 1 / 1.8])) and torch.allclose(neg, torch.tensor([1 / 1.8, 1.0, 5.0]))
    # the groups-form exp weights reduce to the binary ones on a binary group
    ratios = torch.full((30,), 0.2)
    class_weights = losses.group_class_weights(ratios, "exp")
    assert torch.allclose(class_weights[1], torch.exp(torch.tensor([0.2, 0.8])))


def test_weighted_bce_matches_slow_reference():
    torch.manual_seed(0)
    logits, groups = torch.randn(6, 30, dtype=torch.float64), random_groups(6, unknown_rows=[5])
    ratios = losses.positive_ratios(random_groups(50, seed=3))
    pos, neg = losses.exp_weights(ratios)
    y = torch.from_numpy(groups_to_binary(groups[:5].numpy())).double()
    total = 0.0
    for i in range(5):
        for j in range(30):
            p = torch.sigmoid(logits[i, j])
            total -= pos[j] * y[i, j] * torch.log(p) + neg[j] * (1 - y[i, j]) * torch.log(1 - p)
    assert losses.weighted_bce(logits, groups, pos, neg).item() == pytest.approx(total.item() / 150, rel=1e-5)
    plain = F.binary_cross_entropy_with_logits(logits[:5].float(), y.float())
    assert losses.weighted_bce(logits, groups).item() == pytest.approx(plain.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Multi-task


def outputs(batch=8, num_ids=4, form="groups", dim=6, seed=0, parts=1, branches=1):
    torch.manual_seed(seed)
    width = 41 if form == "groups" else 30
    id_logits = [torch.randn(batch, num_ids, requires_grad=True) for _ in range(parts)]
    attribute_logits = [torch.randn(batch, width, requires_grad=True) for _ in range(branches)]
    return {
        "features": torch.randn(batch, dim, requires_grad=True),
        "id_logits": id_logits[0] if parts == 1 else id_logits,
        "attribute_logits": attribute_logits[0] if branches == 1 else attribute_logits,
    }


PIDS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_multitask_components_sum_to_total():
    out, groups = outputs(), random_groups(8, unknown_rows=[7])
    criterion = losses.MultiTaskLoss(
        alpha=0.3, triplet_weight=1.0, triplet_margin=0.3, center_weight=0.01, num_ids=4, feat_dim=6
    )
    total, parts = criterion(out, PIDS, groups)
    expected = 0.3 * parts["attribute"] + 0.7 * parts["id"] + parts["triplet"] + 0.01 * parts["center"]
    assert parts["total"] == pytest.approx(total.item()) == pytest.approx(expected, rel=1e-6)
    assert parts["id"] == pytest.approx(losses.identity_cross_entropy(out["id_logits"], PIDS, 0.1).item())
    assert parts["attribute"] == pytest.approx(losses.grouped_cross_entropy(out["attribute_logits"], groups).item())
    assert parts["triplet"] == pytest.approx(losses.batch_hard_triplet_loss(out["features"], PIDS, 0.3).item())
    assert set(parts) == {"id", "attribute", "triplet", "center", "distill", "total"}
    assert parts["distill"] == 0.0  # no teacher
    total.backward()
    assert criterion.center_loss.centers.grad is not None


def test_alpha_extremes_cut_gradients():
    out, groups = outputs(), random_groups(8)
    total, parts = losses.MultiTaskLoss(alpha=1.0)(out, PIDS, groups)
    total.backward()
    assert parts["id"] > 0  # still reported
    assert out["id_logits"].grad is None or not out["id_logits"].grad.any()
    assert out["attribute_logits"].grad.abs().sum() > 0

    out = outputs()
    total, _ = losses.MultiTaskLoss(alpha=0.0)(out, PIDS, groups)
    total.backward()
    assert out["attribute_logits"].grad is None or not out["attribute_logits"].grad.any()
    assert out["id_logits"].grad.abs().sum() > 0


def test_unknown_attribute_rows_get_no_gradient():
    out, groups = outputs(form="binary"), random_groups(8, unknown_rows=[2, 5])
    total, _ = losses.MultiTaskLoss(alpha=1.0, attribute_form="binary")(out, PIDS, groups)
    total.backward()
    grad = out["attribute_logits"].grad
    assert not grad[[2, 5]].any() and grad[[0, 1, 3, 4, 6, 7]].abs().sum() > 0


def test_lists_average_parts_and_sum_branches():
    out, groups = outputs(parts=3, branches=4, form="binary"), random_groups(8)
    ratios = losses.positive_ratios(random_groups(40, seed=5))
    criterion = losses.MultiTaskLoss(alpha=0.5, attribute_form="binary", attribute_weighting="exp", positive_ratios=ratios)
    _, parts = criterion(out, PIDS, groups)
    id_mean = sum(losses.identity_cross_entropy(p, PIDS, 0.1) for p in out["id_logits"]) / 3
    pos, neg = losses.exp_weights(ratios)
    attribute_sum = sum(losses.weighted_bce(b, groups, pos, neg) for b in out["attribute_logits"])
    assert parts["id"] == pytest.approx(id_mean.item(), rel=1e-6)
    assert parts["attribute"] == pytest.approx(attribute_sum.item(), rel=1e-6)


def test_attribute_only_and_amsoftmax():
    out, groups = outputs(), random_groups(8)
    out["id_logits"] = None
    total, parts = losses.MultiTaskLoss(alpha=0.5)(out, PIDS, groups)
    assert parts["id"] == 0.0 and total.item() == pytest.approx(0.5 * parts["attribute"])

    out = outputs()
    cos = torch.tanh(out["id_logits"])
    out["id_logits"] = cos
    _, parts = losses.MultiTaskLoss(alpha=0.0, id_loss="amsoftmax", am_scale=30, am_margin=0.35)(out, PIDS, groups)
    assert parts["id"] == pytest.approx(losses.AMSoftmaxLoss(30, 0.35)(cos, PIDS).item())


@pytest.mark.parametrize("form", ["groups", "binary"])
@pytest.mark.parametrize("weighting", ["exp", "frequency"])
def test_weighted_multitask_is_finite(form, weighting):
    out, groups = outputs(form=form), random_groups(8)
    ratios = losses.positive_ratios(random_groups(30, seed=2))
    criterion = losses.MultiTaskLoss(alpha=0.5, attribute_form=form, attribute_weighting=weighting, positive_ratios=ratios)
    total, _ = criterion(out, PIDS, groups)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(out["attribute_logits"].grad).all()


def test_bad_configuration_messages():
    with pytest.raises(ConfigError, match="id_loss"):
        losses.MultiTaskLoss(id_loss="arcface")
    with pytest.raises(ConfigError, match="alpha"):
        losses.MultiTaskLoss(alpha=1.5)
    with pytest.raises(ConfigError, match="positive_ratios"):
        losses.MultiTaskLoss(attribute_weighting="exp")
    with pytest.raises(ConfigError, match="num_ids"):
        losses.MultiTaskLoss(center_weight=0.1)
