"""Retrieval utilities against naive loops and hand-made cases."""
import numpy as np
import pytest
import torch

from reid_utils.metrics import retrieval
from reid_utils.schema import GROUPS, group_probabilities

torch.set_num_threads(1)


def random_probs(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(n, g.num_classes, generator=gen).softmax(dim=1) for g in GROUPS]


def onehot_probs(groups, confidence=0.99):
    """(N, 12) class indices -> 12 (N, C) near-one-hot probabilities."""
    probs = []
    for g, group in enumerate(GROUPS):
        c = group.num_classes
        p = torch.full((len(groups), c), (1 - confidence) / (c - 1))
        p[torch.arange(len(groups)), groups[:, g]] = confidence
        probs.append(p)
    return probs


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_compute_distance_matches_naive_loops(metric):
    torch.manual_seed(0)
    q, g = torch.randn(7, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    naive = torch.zeros(7, 11, dtype=torch.float64)
    for i in range(7):
        for j in range(11):
            if metric == "euclidean":
                naive[i, j] = torch.sqrt(((q[i] - g[j]) ** 2).sum())
            else:
                naive[i, j] = 1 - (q[i] @ g[j]) / (q[i].norm() * g[j].norm())
    distmat = retrieval.compute_distance(q, g, metric=metric, chunk_size=3)  # several chunks
    assert distmat.shape == (7, 11) and distmat.dtype == torch.float32
    assert torch.allclose(distmat.double(), naive, atol=1e-5)


def test_compute_distance_numpy_input_and_self_distance_zero():
    feats = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    distmat = retrieval.compute_distance(feats, feats)
    assert torch.allclose(distmat.diagonal(), torch.zeros(4), atol=1e-3)
    with pytest.raises(ValueError, match="metric"):
        retrieval.compute_distance(feats, feats, metric="manhattan")


def test_normalize_unit_rows():
    assert torch.allclose(retrieval.normalize(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8]]))


def test_rank_gallery_matches_argsort():
    distmat = torch.rand(9, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(retrieval.rank_gallery(distmat, 10), distmat.argsort(dim=1)[:, :10])
    assert retrieval.rank_gallery(distmat, 100).shape == (9, 50)


def test_attribute_weighted_distance():
    groups = torch.zeros(3, 12, dtype=torch.long)
    groups[1, 11] = 3  # gallery 1 differs in one group
    groups[2, :] = 1  # gallery 2 differs in every group
    g_probs = onehot_probs(groups, confidence=1.0)
    q_probs = [p[:1] for p in g_probs]
    disagreement = retrieval.attribute_disagreement(q_probs, g_probs)
    assert torch.allclose(disagreement, torch.tensor([[0.0, 1 / 12, 1.0]]))
    distmat = torch.tensor([[1.0, 1.0, 1.0]])
    weighted = retrieval.attribute_weighted_distance(distmat, q_probs, g_probs, weight=0.5)
    assert torch.allclose(weighted, torch.tensor([[1.0, 1 + 0.5 / 12, 1.5]]))


def test_threshold_results_variable_length_and_sorted():
    distmat = torch.tensor([[0.5, 0.1, 0.9, 0.3], [2.0, 3.0, 4.0, 5.0]])
    results = retrieval.threshold_results(distmat, 0.6)
    assert [r.tolist() for r in results] == [[1, 3, 0], []]
    assert retrieval.threshold_results(distmat, 0.6, max_results=2)[0].tolist() == [1, 3]


def slow_best_f1(distmat, q_pids, g_pids):
    pairs = [(distmat[i, j].item(), q_pids[i] == g_pids[j]) for i in range(len(q_pids)) for j in range(len(g_pids))]
    best_t, best_f1 = None, -1.0
    for t, _ in pairs:
        tp = sum(1 for d, m in pairs if d <= t and m)
        ret = sum(1 for d, _ in pairs if d <= t)
        rel = sum(1 for _, m in pairs if m)
        p, r = tp / ret, tp / rel
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best_f1 + 1e-12:
            best_t, best_f1 = t, f1
    return best_t, best_f1


def test_choose_threshold_maximises_f1_exactly():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 4, 6), rng.integers(0, 4, 15)
    distmat = torch.from_numpy(rng.random((6, 15)) + 0.6 * (q_pids[:, None] != g_pids[None, :])).float()
    t = retrieval.choose_threshold(distmat, q_pids, g_pids, chunk_size=4)
    best_t, best_f1 = slow_best_f1(distmat, q_pids, g_pids)
    assert retrieval.threshold_scores(distmat, q_pids, g_pids, t)["f1"] == pytest.approx(best_f1)
    assert t == pytest.approx(best_t)


def test_choose_threshold_separable_case_and_junk_camera_rules():
    # matches at distance <= 0.2, non-matches >= 0.8: any t in [0.2, 0.8) gives F1 = 1
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 1, 3, -1])
    distmat = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.0], [0.9, 0.15, 0.8, 0.85, 0.0]])
    t = retrieval.choose_threshold(distmat, q_pids, g_pids)  # the junk column (pid -1) is ignored
    assert t == pytest.approx(0.2)
    assert retrieval.threshold_scores(distmat, q_pids, g_pids, t)["f1"] == 1.0
    # with cameras, query 0's same-camera match (gallery 2) is not relevant -> t = 0.15
    t = retrieval.choose_threshold(distmat, q_pids, g_pids, np.array([0, 0]), np.array([1, 1, 0, 1, 1]))
    assert t == pytest.approx(0.15)


def test_junk_scores_flag_and_demote():
    confident = onehot_probs(torch.zeros(2, 12, dtype=torch.long), confidence=0.95)
    uniform = [torch.full((1, g.num_classes), 1 / g.num_classes) for g in GROUPS]
    probs = [torch.cat([c[:1], u, c[1:]]) for c, u in zip(confident, uniform)]  # gallery 1 unsure
    scores = retrieval.junk_scores(probs)
    assert scores[0].item() == pytest.approx(0.95) and scores[1] < 0.5
    mask = retrieval.flag_junk(scores, threshold=0.5)
    assert mask.tolist() == [False, True, False]

    distmat = torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.5, 0.9]])
    demoted = retrieval.demote_junk(distmat, mask)
    ranks = retrieval.rank_gallery(demoted, 3)
    assert ranks[:, -1].tolist() == [1, 1]  # flagged item last for every query
    assert ranks[0].tolist() == [2, 0, 1] and torch.equal(distmat, torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.5, 0.9]]))


def test_attribute_search_ranks_perfect_match_first():
    gen = torch.Generator().manual_seed(0)
    groups = torch.stack([torch.randint(0, g.num_classes, (20,), generator=gen) for g in GROUPS], dim=1)
    # no gallery image is (upcolour red, backpack yes, gender female) except number 13
    groups[:, 10] = torch.where(groups[:, 10] == 2, 0, groups[:, 10])
    groups[13, 10], groups[13, 1], groups[13, 9] = 2, 1, 1
    probs = onehot_probs(groups, confidence=0.9)
    indices, scores = retrieval.attribute_search(
        {"upcolour": "red", "backpack": "yes", "gender": "Female"}, probs, top_k=5
    )
    assert indices[0].item() == 13 and scores[0].item() == pytest.approx(3 * np.log(0.9), rel=1e-5)
    assert indices.shape == (5,) and bool((scores[:-1] >= scores[1:]).all())


def test_attribute_search_with_model_probabilities():
    logits = torch.randn(10, 30, generator=torch.Generator().manual_seed(0))
    indices, scores = retrieval.attribute_search({"hat": "yes"}, group_probabilities(logits, "binary"), top_k=3)
    assert indices.tolist() == logits[:, 11].argsort(descending=True)[:3].tolist()  # hat is binary column 11


def test_attribute_search_rejects_bad_names():
    probs = random_probs(4)
    with pytest.raises(KeyError, match="upcolour"):  # lists the valid groups
        retrieval.attribute_search({"shirtcolour": "red"}, probs)
    with pytest.raises(ValueError, match="black, white, red"):  # lists the valid classes
        retrieval.attribute_search({"upcolour": "turquoise"}, probs)
    with pytest.raises(ValueError, match="empty"):
        retrieval.attribute_search({}, probs)
    with pytest.raises(ValueError, match="12"):
        retrieval.attribute_search({"hat": "yes"}, probs[:11])
