"""k-reciprocal re-ranking: equal to the step-by-step reference, and fixing a known mistake."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_utils.metrics.reference import re_ranking_reference
from reid_utils.metrics.rerank import _smallest, re_ranking


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one thread avoids OpenMP barrier stalls when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clustered_features(seed, num_q, num_g, dim, spread=0.5):
    """Images of a few identities: identity centre + Gaussian noise."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(2, (num_q + num_g) // 6), num_q + num_g)
    x = rng.standard_normal((ids.max() + 1, dim))[ids] + spread * rng.standard_normal((num_q + num_g, dim))
    return x[:num_q], x[num_q:]


@pytest.mark.parametrize(
    "num_q, num_g, dim, k1, k2, lambda_value",
    [
        (30, 150, 16, 20, 6, 0.3),  # the paper's parameters
        (10, 50, 8, 20, 6, 0.3),
        (5, 20, 4, 5, 3, 0.5),  # odd k1: round(5 / 2) = 2
        (20, 100, 32, 7, 1, 0.0),  # no query expansion, Jaccard only
        (3, 7, 2, 20, 10, 0.3),  # k1 and k2 larger than the whole set
        (40, 200, 8, 10, 4, 1.0),  # original distance only
    ],
)
def test_equals_reference_float64(num_q, num_g, dim, k1, k2, lambda_value):
    q, g = clustered_features(num_q + num_g + k1, num_q, num_g, dim)
    expected = re_ranking_reference(q, g, k1, k2, lambda_value)
    for chunk_size in (7, 1024):  # several blocks, and a single one
        got = re_ranking(q, g, k1, k2, lambda_value, chunk_size=chunk_size)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (num_q, num_g)
        # float64 throughout, only the summation order differs: agreement to rounding error.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_float32_tensor_close_to_reference():
    q, g = clustered_features(1, 30, 150, 16)
    expected = re_ranking_reference(q, g)
    got = re_ranking(torch.tensor(q, dtype=torch.float32), torch.tensor(g, dtype=torch.float32))
    assert torch.is_tensor(got) and got.dtype == torch.float32
    diff = np.abs(got.numpy() - expected)
    # float32 rounding (1e-7) could in principle swap two neighbours at a boundary and change a
    # few entries; allow that, but almost everything must agree to 1e-5.
    assert (diff <= 1e-5).mean() >= 0.999 and diff.mean() <= 1e-4


def test_fixes_a_known_mistake():
    # The query (identity A) sits between a small cluster A (3 gallery images around the origin)
    # and a larger cluster B (6 images around x = 2.7), plus B0, an image of B on the edge of
    # cluster B closest to the query.
    q = np.array([[1.0, 0.0]])
    g = np.array(
        [
            [1.9, 0.0],  # 0: B0, distance 0.9: the raw nearest neighbour, a wrong identity
            [0.0, 0.0], [-0.1, 0.15], [-0.1, -0.16],  # 1-3: identity A, distances 1.0-1.11
            [2.6, 0.0], [2.7, 0.1], [2.7, -0.11], [2.85, 0.0], [2.6, 0.12], [2.6, -0.13],  # 4-9: B
            # (no two distances from one image are equal, so no neighbour list depends on ties)
        ]
    )
    sq_dist = ((q - g) ** 2).sum(1)
    assert sq_dist.argmin() == 0  # the mistake
    # With k1 = 4: N(q, 4) = {q, B0, A1, A2, A3}. The A images have q among their 4 nearest
    # (their 2 cluster mates, then q, then B0), so R(q, 4) = {q, A1, A2, A3}; B0's 4 nearest
    # are B images (0.70-0.81 away, closer than q's 0.9), so B0 is not a k-reciprocal neighbour and
    # R*(B0) = {B0}. V(q) and V(B0) share nothing: Jaccard distance 1, and
    # d*(q, B0) = 0.7 * 1 + 0.3 * 0.81 / 1.85^2 (row maximum: the farthest image, 7).
    final = re_ranking(q, g, k1=4, k2=1, lambda_value=0.3)
    assert final[0, 0] == pytest.approx(0.7 + 0.3 * 0.81 / 1.85**2)
    assert final[0].argmin() in (1, 2, 3)  # fixed: identity A first
    assert set(np.argsort(final[0])[:3]) == {1, 2, 3}  # all of A before anything of B
    np.testing.assert_allclose(final, re_ranking_reference(q, g, 4, 1, 0.3), atol=1e-10)
    # The paper's defaults also fix it (with 11 images every set is large, but A still wins).
    assert re_ranking(q, g)[0].argmin() in (1, 2, 3)


def test_input_checks():
    q, g = clustered_features(0, 3, 10, 4)
    with pytest.raises(ValueError, match="k1 and k2"):
        re_ranking(q, g, k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(q, g, lambda_value=1.5)
    with pytest.raises(ValueError, match=r"\(Q, D\) and \(G, D\)"):
        re_ranking(q, g[:, :3])


def test_smallest_handles_ties():
    d = torch.tensor([[5.0, 5.0, 1.0, 5.0], [2.0, 2.0, 2.0, 2.0], [3.0, 0.0, 1.0, 2.0]])
    values, idx = _smallest(d, 2)
    assert torch.equal(torch.gather(d, 1, idx), values)
    assert sorted(values[0].tolist()) == [1.0, 5.0]  # the 1 is kept although tied 5s come first
    assert sorted(values[2].tolist()) == [0.0, 1.0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = torch.from_numpy(rng.integers(0, 4, (5, 9)).astype(np.float32))
        k = int(rng.integers(1, 10))
        values, idx = _smallest(a, k)
        assert torch.equal(values.sort(dim=1).values, a.sort(dim=1).values[:, :k])
        assert torch.equal(torch.gather(a, 1, idx), values)
        assert all(len(set(row.tolist())) == k for row in idx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    q, g = clustered_features(3, 30, 150, 16)
    cpu = re_ranking(torch.tensor(q), torch.tensor(g))
    cuda = re_ranking(torch.tensor(q).cuda(), torch.tensor(g).cuda())
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-10)
