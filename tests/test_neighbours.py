"""Exact k nearest neighbours: float32 candidates certified against float32's rounding, float64
where they cannot be."""

import pytest
import torch
import torch.nn.functional as F

from pyfastviz.inspect import nearest_neighbours
from pyfastviz.inspect import neighbours as neighbours_module


def brute_force(features, queries, k, metric):
    """float64 distances of every pair, self excluded when queries is None: (Q, k) each."""
    q = (features if queries is None else queries).double()
    f = features.double()
    if metric == "cosine":  # 1 - cos from unit rows' differences, which do not cancel
        tiny = torch.finfo(torch.float64).tiny
        q, f = F.normalize(q, dim=1, eps=tiny), F.normalize(f, dim=1, eps=tiny)
        full = (q[:, None] - f[None]).square().sum(2) / 2
        full[(q == 0).all(1)] = full[:, (f == 0).all(1)] = 1
    else:
        full = (q[:, None] - f[None]).norm(dim=2)
    if queries is None:
        full.fill_diagonal_(float("inf"))
    return full.topk(k, dim=1, largest=False)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("batch_size", [7, 13, 64, 500])  # 7, 13 don't divide N = 101
@pytest.mark.parametrize("all_vs_all", [False, True])
def test_blocked_neighbours_equal_brute_force(metric, batch_size, all_vs_all):
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(101, 16, generator=generator)
    queries = None if all_vs_all else torch.randn(30, 16, generator=generator)
    q = features if all_vs_all else queries
    if metric == "cosine":
        full = 1 - F.normalize(q, dim=1) @ F.normalize(features, dim=1).T
    else:
        full = torch.cdist(q, features)
    if all_vs_all:
        full.fill_diagonal_(float("inf"))
    expected_d, expected_i = full.topk(6, dim=1, largest=False)
    distances, indices = nearest_neighbours(features, queries, k=6, metric=metric, batch_size=batch_size)
    assert torch.equal(indices, expected_i)
    torch.testing.assert_close(distances, expected_d, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_near_duplicates_of_large_rows_are_ranked_exactly(metric):
    """ReLU features of norm ~38 with two copies per row at distances 0.010 and 0.013: float32's
    |q|^2 + |b|^2 - 2 q.b ranked the farther copy first for 23 of 50 rows."""
    generator = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(200, 1280, generator=generator)) * 1.5
    rows = base[:50].double()

    def copies(distance):
        direction = F.normalize(torch.randn(50, 1280, generator=generator, dtype=torch.float64), dim=1)
        return (rows + distance * direction).float()

    features = torch.cat([base, copies(0.010), copies(0.013)])
    distances, indices = nearest_neighbours(features, base[:50], k=3, metric=metric)
    assert torch.equal(indices, torch.stack([torch.arange(50), torch.arange(200, 250), torch.arange(250, 300)], 1))
    exact = (features[indices].double() - base[:50, None].double()).norm(dim=2)
    if metric == "l2":
        torch.testing.assert_close(distances.double(), exact, atol=1e-6, rtol=1e-4)


def test_no_queries_give_no_neighbours():
    distances, indices = nearest_neighbours(torch.randn(5, 3), torch.empty(0, 3), k=2)
    assert distances.shape == indices.shape == (0, 2) and indices.dtype == torch.long


def test_neighbour_arguments_are_checked():
    features = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3\]"):
        nearest_neighbours(features, k=4)  # self excluded
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 4\]"):
        nearest_neighbours(features, features[:1], k=5)
    with pytest.raises(ValueError, match="features must be a floating-point"):
        nearest_neighbours(features[0])
    with pytest.raises(ValueError, match="queries have D=2"):
        nearest_neighbours(features, torch.randn(1, 2))
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbours(features, metric="manhattan")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        nearest_neighbours(features, k=1, batch_size=0)
    broken = features.clone()
    broken[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"features has NaN or inf in 1 row\(s\), first rows \[2\]"):
        nearest_neighbours(broken, k=1)  # would otherwise return index -1 for row 2
    with pytest.raises(ValueError, match="queries has NaN or inf"):
        nearest_neighbours(features, broken[2:3], k=1)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("all_vs_all", [False, True])
def test_rows_float32_cannot_tell_apart_are_searched_in_float64(metric, all_vs_all, monkeypatch):
    """120 float64 rows about 1e-6 apart around one point of norm 17: float32's rounding could
    reorder them, so no candidate list is certain and those queries are searched again in float64."""
    generator = torch.Generator().manual_seed(4)
    centre = torch.randn(1, 32, generator=generator, dtype=torch.float64) + 3
    cluster = centre + 1e-6 * torch.randn(120, 32, generator=generator, dtype=torch.float64)
    features = torch.cat([cluster, torch.randn(60, 32, generator=generator, dtype=torch.float64)])
    queries = None if all_vs_all else centre + 1e-6 * torch.randn(5, 32, generator=generator, dtype=torch.float64)
    searches = []
    search = neighbours_module._search
    monkeypatch.setattr(neighbours_module, "_search", lambda q, *args: searches.append(q.dtype) or search(q, *args))
    distances, indices = nearest_neighbours(features, queries, k=5, metric=metric, batch_size=32)
    expected_d, expected_i = brute_force(features, queries, 5, metric)
    assert searches[0] == torch.float32 and torch.float64 in searches
    assert torch.equal(indices, expected_i)
    torch.testing.assert_close(distances, expected_d, atol=1e-15, rtol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("all_vs_all", [False, True])
def test_rows_float64_cannot_tell_apart_are_compared_with_every_row(metric, all_vs_all, monkeypatch):
    """Rows 1e-7 apart around a point of norm 16, relative to which float64's rounding of
    |q|^2 + |b|^2 - 2 q.b is as large as the distances: only the row differences rank them."""
    generator = torch.Generator().manual_seed(9)
    features = 1 + 1e-7 * torch.randn(150, 256, generator=generator, dtype=torch.float64)
    queries = None if all_vs_all else 1 + 1e-7 * torch.randn(6, 256, generator=generator, dtype=torch.float64)
    exhaustive = []
    every_row = neighbours_module._every_row
    monkeypatch.setattr(neighbours_module, "_every_row",
                        lambda q, *args: exhaustive.append(len(q)) or every_row(q, *args))
    distances, indices = nearest_neighbours(features, queries, k=3, metric=metric, batch_size=64)
    expected_d, expected_i = brute_force(features, queries, 3, metric)
    assert exhaustive and torch.equal(indices, expected_i)
    torch.testing.assert_close(distances, expected_d, atol=0, rtol=1e-9)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_duplicate_rows_are_each_others_nearest(metric):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(200, 24, generator=generator).repeat(2, 1)  # row i == row i + 200
    distances, indices = nearest_neighbours(features, k=1, metric=metric)
    assert torch.equal(indices[:, 0], torch.arange(400).roll(200))
    assert distances.abs().max() < 1e-6


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_rows_beyond_float32s_range_are_searched_in_float64(scale):
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(80, 16, generator=generator, dtype=torch.float64) * scale
    queries = torch.randn(7, 16, generator=generator, dtype=torch.float64) * scale
    for metric in ("cosine", "l2"):
        distances, indices = nearest_neighbours(features, queries, k=4, metric=metric)
        expected_d, expected_i = brute_force(features, queries, 4, metric)
        assert torch.equal(indices, expected_i)
        torch.testing.assert_close(distances, expected_d, rtol=1e-9, atol=0)


def test_zero_rows_are_a_cosine_distance_of_one_from_everything():
    features = torch.cat([torch.zeros(3, 8), torch.randn(30, 8, generator=torch.Generator().manual_seed(7))])
    distances, indices = nearest_neighbours(features, torch.zeros(1, 8), k=4)
    assert torch.equal(distances, torch.ones(1, 4))


def test_default_matmul_settings_round_nothing():
    assert neighbours_module._matmul_input_roundoff(torch.device("cpu")) == 0.0


@pytest.mark.parametrize("roundoff", [2.0 ** -11, 2.0 ** -8])  # TF32, bf16 matmuls
def test_a_wider_bound_still_finds_the_exact_neighbours(roundoff, monkeypatch):
    """Set in a test, torch's precision settings would leak into later tests: the reading is patched."""
    monkeypatch.setattr(neighbours_module, "_matmul_input_roundoff", lambda device: roundoff)
    features = torch.randn(300, 64, generator=torch.Generator().manual_seed(8))
    distances, indices = nearest_neighbours(features, k=5)
    assert torch.equal(indices, brute_force(features, None, 5, "cosine")[1])


def test_finite_rows_whose_sums_overflow_are_features():
    features = torch.tensor([[3e38] * 4, [1.5e38] * 4, [2.9e38] * 4])
    distances, indices = nearest_neighbours(features, k=1, metric="l2")
    assert indices.flatten().tolist() == [2, 2, 0]
