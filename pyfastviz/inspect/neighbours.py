"""Exact k nearest neighbours of feature vectors, in blocks on the features' device.

Candidates come from float32 blocks (fast on every GPU, where float64 may run 32-64x slower),
k + SPARE_CANDIDATES per query; their distances are then taken in float64 from the row
differences. A query's result is certified exact when no row outside its candidates can be
nearer than its k-th, given float32's worst-case rounding error; the few queries it cannot
certify (e.g. many equidistant rows) are searched again in float64 blocks, certified the same
way, and those float64 cannot certify either (distances that vanish beside the rows' norms)
against every row's exact distance.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._inputs import check_choice, check_count

from .features import _check_features

METRICS = ("cosine", "l2")
SPARE_CANDIDATES = 8
_FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
_MATMUL_INPUT_ROUNDOFF = {"ieee": 0.0, "tf32": 2.0 ** -11, "bf16": 2.0 ** -8}
_LEGACY_PRECISION = {"highest": "ieee", "high": "tf32", "medium": "bf16"}


def _prepared(rows: torch.Tensor, metric: str, dtype: torch.dtype) -> torch.Tensor:
    """rows in dtype, unit length for cosine (zero rows stay zero)."""
    rows = rows.to(dtype)
    return nn.functional.normalize(rows, dim=1, eps=torch.finfo(dtype).tiny) if metric == "cosine" else rows


def _scores(queries: torch.Tensor, block: torch.Tensor, metric: str) -> torch.Tensor:
    """(Q, D) _prepared x (B, D) raw rows in the queries' dtype -> (Q, B): cosine distance, or
    squared L2 distance. The block's norms scale the products rather than a normalised copy of it."""
    dots = queries @ block.T
    norms = torch.linalg.vector_norm(block, dim=1)
    if metric == "cosine":
        return 1 - dots / norms.clamp_min(torch.finfo(norms.dtype).tiny)
    return torch.linalg.vector_norm(queries, dim=1, keepdim=True).square() + norms.square() - 2 * dots


def _matmul_input_roundoff(device: torch.device) -> float:
    """The unit roundoff of a float32 matmul's inputs under torch's precision settings: 0 in IEEE
    float32, 2^-11 with TF32, 2^-8 with bf16; the loosest when the settings cannot be read."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else torch.backends.mkldnn.matmul
    setting = getattr(backend, "fp32_precision", "none")
    if setting == "none":
        try:
            setting = _LEGACY_PRECISION[torch.get_float32_matmul_precision()]
        except RuntimeError:  # torch refuses to read a mix of its legacy and new settings
            setting = "bf16"
    return _MATMUL_INPUT_ROUNDOFF.get(setting, _MATMUL_INPUT_ROUNDOFF["bf16"])


def _error_bound(queries: torch.Tensor, largest_row_norm: float, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """(Q,) bounds on |score in dtype - exact score| for each query (Q, D), float64, against any
    row: beta (|q| + max|b|)^2, beta covering the rounding of normalisation, the matmul's inputs
    (float32: TF32/bf16 per torch's settings) and the D-term sums (worst case, any order)."""
    unit = _FLOAT32_UNIT_ROUNDOFF if dtype == torch.float32 else 2.0 ** -53
    inputs = _matmul_input_roundoff(queries.device) if dtype == torch.float32 else 0.0
    beta = 2 * inputs + 1.01 * (3 * dim + 16) * unit
    return beta * (queries.norm(dim=1) + largest_row_norm) ** 2


def _blocked_smallest(queries: torch.Tensor, features: torch.Tensor, count: int, metric: str,
                      batch_size: int, own_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` smallest scores of queries (Q, D), _prepared, against features' rows (in the
    queries' dtype, batch_size at a time) and their row indices, both (Q, count), smallest first.
    own_rows (Q,): each query's own row of features, excluded (None: exclude none)."""
    best_scores = torch.full((queries.shape[0], count), float("inf"), dtype=queries.dtype, device=queries.device)
    best_rows = torch.full((queries.shape[0], count), -1, dtype=torch.long, device=queries.device)
    for start in range(0, features.shape[0], batch_size):
        block = features[start : start + batch_size].to(queries.dtype)
        scores = _scores(queries, block, metric)
        rows = torch.arange(start, start + block.shape[0], device=queries.device).expand_as(scores)
        if own_rows is not None:
            scores = scores.masked_fill(rows == own_rows[:, None], float("inf"))
        best_scores, picked = torch.cat([best_scores, scores], 1).topk(count, dim=1, largest=False, sorted=True)
        best_rows = torch.cat([best_rows, rows], 1).gather(1, picked)
    return best_scores, best_rows


def _exact_scores(queries: torch.Tensor, features: torch.Tensor, rows: torch.Tensor, metric: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen rows' scores from their differences (no cancellation, as 1 - a.b or
    |a|^2 + |b|^2 - 2 a.b have), float64, re-sorted:
    queries (Q, D) _prepared in float64, rows (Q, c) -> (scores (Q, c), rows (Q, c))."""
    chunk = max(1, (1 << 18) // max(1, rows.shape[1] * features.shape[1]))  # 2 MiB of rows, reused
    zero_queries = torch.linalg.vector_norm(queries, dim=1) == 0
    found = []
    for start in range(0, queries.shape[0], chunk):
        chosen = rows[start : start + chunk]
        gathered = features.index_select(0, chosen.flatten()).double().view(*chosen.shape, -1)  # (q, c, D)
        if metric == "cosine":  # unit rows: 1 - a.b = |a - b|^2 / 2; a zero row is 1 from every row
            norms = torch.linalg.vector_norm(gathered, dim=2, keepdim=True)
            gathered.div_(norms.clamp_min(torch.finfo(torch.float64).tiny))
            zero = (norms.squeeze(2) == 0) | zero_queries[start : start + chunk, None]
        squared = torch.linalg.vector_norm(gathered.sub_(queries[start : start + chunk, None]), dim=2).square()
        found.append(torch.where(zero, 1.0, squared / 2) if metric == "cosine" else squared)
    scores, order = torch.cat(found).sort(dim=1, stable=True)
    return scores, rows.gather(1, order)


def _search(queries: torch.Tensor, features: torch.Tensor, count: int, metric: str, batch_size: int,
            own_rows: torch.Tensor | None, exact_queries: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `count` rows of features nearest to queries (Q, D), _prepared in the dtype that picks
    them: (their scores in that dtype, their exact float64 scores from exact_queries, rows), each
    (Q, count), nearest first."""
    approximate, rows = _blocked_smallest(queries, features, count, metric, batch_size, own_rows)
    return approximate, *_exact_scores(exact_queries, features, rows, metric)


def _block_neighbours(queries: torch.Tensor, features: torch.Tensor, k: int, metric: str, batch_size: int,
                      own_rows: torch.Tensor | None, largest_norm: float, float32_holds: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest exact scores (Q, k), float64, and rows (Q, k) of one block of queries:
    candidates from float32 (where float32_holds the rows' scale), then float64, for the queries
    the previous pass cannot certify, then every row's exact score for those left (rows whose
    distances vanish beside their norms). largest_norm: the features' largest row norm (1: cosine)."""
    exact_queries = _prepared(queries, metric, torch.float64)
    available = features.shape[0] - (own_rows is not None)
    candidates = min(k + SPARE_CANDIDATES, available)
    scores = torch.empty((queries.shape[0], candidates), dtype=torch.float64, device=queries.device)
    rows = torch.empty((queries.shape[0], candidates), dtype=torch.long, device=queries.device)
    uncertain = torch.arange(queries.shape[0], device=queries.device)
    for dtype in (torch.float32, torch.float64) if float32_holds else (torch.float64,):
        mine = None if own_rows is None else own_rows[uncertain]
        approximate, scores[uncertain], rows[uncertain] = _search(
            _prepared(queries[uncertain], metric, dtype), features, candidates, metric, batch_size, mine,
            exact_queries[uncertain])
        if candidates == available:
            return scores[:, :k], rows[:, :k]
        # a row outside the candidates scored >= approximate[:, -1] in dtype, so >= that - bound exactly
        bound = _error_bound(exact_queries[uncertain], largest_norm, features.shape[1], dtype)
        uncertain = uncertain[(approximate[:, -1].double() - bound) < scores[uncertain, k - 1]]
        if not len(uncertain):
            return scores[:, :k], rows[:, :k]
    mine = None if own_rows is None else own_rows[uncertain]
    scores[uncertain], rows[uncertain] = _every_row(exact_queries[uncertain], features, candidates, metric,
                                                    batch_size, mine)
    return scores[:, :k], rows[:, :k]


def _every_row(queries: torch.Tensor, features: torch.Tensor, count: int, metric: str, batch_size: int,
               own_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` smallest exact scores of queries (Q, D), _prepared in float64, against every
    row of features, from the row differences (slow; for the few queries no bound certifies)."""
    best_scores = torch.full((queries.shape[0], count), float("inf"), dtype=torch.float64, device=queries.device)
    best_rows = torch.full((queries.shape[0], count), -1, dtype=torch.long, device=queries.device)
    for start in range(0, features.shape[0], batch_size):
        block = torch.arange(start, min(start + batch_size, features.shape[0]), device=queries.device)
        block = block.expand(queries.shape[0], -1)
        scores, rows = _exact_scores(queries, features, block, metric)
        if own_rows is not None:
            scores = scores.masked_fill(rows == own_rows[:, None], float("inf"))
        best_scores, picked = torch.cat([best_scores, scores], 1).topk(count, dim=1, largest=False, sorted=True)
        best_rows = torch.cat([best_rows, rows], 1).gather(1, picked)
    return best_scores, best_rows


def _largest_norm(rows: torch.Tensor, batch_size: int) -> tuple[float, bool]:
    """(the largest row norm of rows (N, D), from float64 norms; whether float32 holds the rows:
    no nonzero row of norm outside [2^-50, 2^50], whose squares would over- or underflow), in
    one pass over the rows and one sync."""
    largest, outside = rows.new_zeros((), dtype=torch.float64), rows.new_zeros((), dtype=torch.bool)
    for start in range(0, rows.shape[0], batch_size):
        norms = torch.linalg.vector_norm(rows[start : start + batch_size], dim=1, dtype=torch.float64)
        largest = torch.maximum(largest, norms.amax())
        outside |= ((norms > 2.0 ** 50) | ((norms > 0) & (norms < 2.0 ** -50))).any()
    largest, outside = torch.stack([largest, outside.double()]).tolist()
    return largest * (1 + 2.0 ** -40), not outside


def _row_scale(features: torch.Tensor, queries: torch.Tensor | None, metric: str, batch_size: int
               ) -> tuple[float, bool]:
    """(the largest row norm the error bounds assume (1: cosine's unit rows), whether float32
    holds the rows of features and queries (None: the features themselves))."""
    largest, holds = _largest_norm(features, batch_size)
    if queries is not None:
        holds = holds and _largest_norm(queries, batch_size)[1]
    return (1.0 if metric == "cosine" else largest), holds


def nearest_neighbours(features: torch.Tensor, queries: torch.Tensor | None = None, k: int = 5,
                       metric: str = "cosine", batch_size: int = 4096, progress: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of features (N, D) to each query (Q, D), nearest first.

    queries=None: every row of features against the others (itself excluded). metric:
    "cosine" (1 - cosine similarity) or "l2". Exact: candidates from float32 (batch_size x
    batch_size) blocks on the features' device, never an N x N matrix, their distances then taken
    in float64 from the row differences; a query whose candidates float32's rounding could have
    missed a neighbour among is searched again in float64, and if float64's could have too,
    against every row's exact distance. Q may be 0. Returns (distances (Q, k)
    in the features' dtype, at least float32; indices (Q, k)).
    """
    features = _check_features(features, "features")
    check_choice(metric, "metric", METRICS)
    all_vs_all = queries is None
    queries = features if all_vs_all else _check_features(queries, "queries").to(features.device)
    if queries.shape[1] != features.shape[1]:
        raise ValueError(f"queries have D={queries.shape[1]} but features have D={features.shape[1]}")
    available = features.shape[0] - all_vs_all
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(f"k must be an int in [1, {available}] ({features.shape[0]} features"
                         f"{', self excluded' if all_vs_all else ''}), got {k!r}")
    check_count(batch_size, "batch_size")
    largest_norm, float32_holds = _row_scale(features, None if all_vs_all else queries, metric, batch_size)
    out_scores = [torch.empty((0, k), dtype=torch.float64, device=features.device)]
    out_rows = [torch.empty((0, k), dtype=torch.long, device=features.device)]
    for start in tqdm(range(0, queries.shape[0], batch_size), desc="neighbours", disable=not progress, leave=False):
        block = queries[start : start + batch_size]
        own_rows = torch.arange(start, start + block.shape[0], device=features.device) if all_vs_all else None
        scores, rows = _block_neighbours(block, features, k, metric, batch_size, own_rows, largest_norm,
                                         float32_holds)
        out_scores.append(scores)
        out_rows.append(rows)
    scores = torch.cat(out_scores)
    distances = scores if metric == "cosine" else scores.sqrt()
    return distances.to(torch.promote_types(features.dtype, torch.float32)), torch.cat(out_rows)
