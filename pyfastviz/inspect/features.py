"""Feature vectors of images (penultimate layer or a pooled named layer) and exact k-NN in blocks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._inputs import check_choice, check_count, check_images, check_model
from pyfastviz._state import evaluation_mode
from pyfastviz.models import ActivationTap, layer_names

METRICS = ("cosine", "l2")


def _batches(images_or_loader, batch_size: int) -> Iterable[torch.Tensor]:
    """(N, C, H, W) tensor -> its slices; a loader -> its batches (the first item of tuple batches)."""
    if isinstance(images_or_loader, torch.Tensor):
        if images_or_loader.dim() != 4:
            raise ValueError(f"images_or_loader must be (N, C, H, W) or a loader, got shape "
                             f"{tuple(images_or_loader.shape)}")
        return images_or_loader.split(batch_size)
    if not isinstance(images_or_loader, Iterable):
        raise TypeError(f"images_or_loader must be a tensor or an iterable of batches, "
                        f"got {type(images_or_loader).__name__}")
    return (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in images_or_loader)


def _last_linear_input(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The input of the model's last nn.Linear during model(batch), (B, D); its hook is always removed."""
    linears = layer_names(model, nn.Linear)
    if not linears:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Linear: pass layer= to pool a named layer")
    inputs = []
    handle = model.get_submodule(linears[-1]).register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    try:
        model(batch)
    finally:
        handle.remove()
    if len(inputs) != 1:
        raise ValueError(f"the last nn.Linear ({linears[-1]!r}) ran {len(inputs)} times per forward; pass layer=")
    return inputs[0].flatten(1)


def extract_features(model: nn.Module, images_or_loader, layer: str | None = None, batch_size: int = 32,
                     device: str | torch.device | None = None, progress: bool = True) -> torch.Tensor:
    """Feature vectors (N, D), float32 (float64 for a float64 model), on `device`, where batches
    are moved (default: the model's device).

    images_or_loader: preprocessed (N, C, H, W), or an iterable of such batches (e.g.
    data.image_loader; (images, ...) tuples are fine). layer=None: the input of the last
    nn.Linear (the penultimate features); else `layer`'s output, global-average-pooled. The
    model runs in eval mode, without gradients, and is left as found.
    """
    check_model(model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    parameter = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (parameter.device if parameter is not None
                                                              else torch.device("cpu"))
    features = []
    with evaluation_mode(model), torch.no_grad():
        batches = _batches(images_or_loader, batch_size)
        total = len(batches) if isinstance(batches, tuple) else getattr(images_or_loader, "__len__", lambda: None)()
        for batch in tqdm(batches, total=total, desc="features", disable=not progress, leave=False):
            batch = check_images(batch.to(device), model)
            if layer is None:
                out = _last_linear_input(model, batch)
            else:
                with ActivationTap(model, layer) as tap:
                    model(batch)
                out = tap[layer]
                out = out.mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out
            features.append(out.to(torch.promote_types(out.dtype, torch.float32)))
    if not features:
        raise ValueError("images_or_loader gave no images")
    return torch.cat(features)


def _check_features(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, D), got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point (N, D) tensor, got {x.dtype} {tuple(x.shape)}")
    bad_rows = (~torch.isfinite(x)).any(1).nonzero().flatten()
    if len(bad_rows):
        raise ValueError(f"{name} has NaN or inf in {len(bad_rows)} row(s), first rows {bad_rows[:5].tolist()}")
    return x


def _prepared(rows: torch.Tensor, metric: str) -> torch.Tensor:
    """rows in float64 (unit length for cosine), as _distances takes them: |q|^2 + |b|^2 - 2 q.b
    (and 1 - cos) cancel, and in float32 that loses near-duplicates (rows of norm 38 at distance
    0.01 ranked at random)."""
    rows = rows.double()
    return nn.functional.normalize(rows, dim=1) if metric == "cosine" else rows


def _distances(queries: torch.Tensor, block: torch.Tensor, metric: str) -> torch.Tensor:
    """(Q, D) x (B, D) -> (Q, B), both _prepared."""
    if metric == "cosine":
        return (1 - queries @ block.T).clamp_min(0)
    squared = (queries * queries).sum(1, keepdim=True) + (block * block).sum(1) - 2 * queries @ block.T
    return squared.clamp_min(0).sqrt()


def _rerank(queries: torch.Tensor, features: torch.Tensor, indices: torch.Tensor, metric: str,
            chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen rows' distances from their differences (no cancellation), float64, re-sorted:
    queries (Q, D), indices (Q, k) -> (distances (Q, k), indices (Q, k))."""
    found = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk, None]  # (q, 1, D), _prepared
        chosen = indices[start : start + chunk]
        rows = _prepared(features[chosen.flatten()], metric).view(*chosen.shape, -1)  # (q, k, D)
        found.append(1 - (q * rows).sum(2) if metric == "cosine" else (rows - q).norm(dim=2))
    distances, order = torch.cat(found).clamp_min(0).sort(dim=1, stable=True)
    return distances, indices.gather(1, order)


def nearest_neighbours(features: torch.Tensor, queries: torch.Tensor | None = None, k: int = 5,
                       metric: str = "cosine", batch_size: int = 4096, progress: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of features (N, D) to each query (Q, D), nearest first.

    queries=None: every row of features against the others (itself excluded). metric:
    "cosine" (1 - cosine similarity) or "l2". Exact: candidates from float64 (batch_size x
    batch_size) blocks on the features' device, never an N x N matrix, their distances then taken
    from the row differences. Q may be 0. Returns (distances (Q, k) in the features' dtype, at
    least float32; indices (Q, k)).
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
    dtype = torch.promote_types(features.dtype, torch.float32)
    out_d = [torch.empty((0, k), dtype=torch.float64, device=features.device)]
    out_i = [torch.empty((0, k), dtype=torch.long, device=features.device)]
    for q0 in tqdm(range(0, queries.shape[0], batch_size), desc="neighbours", disable=not progress, leave=False):
        q = _prepared(queries[q0 : q0 + batch_size], metric)  # once per block of queries
        best_d = torch.full((q.shape[0], k), float("inf"), dtype=torch.float64, device=q.device)
        best_i = torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
        for f0 in range(0, features.shape[0], batch_size):
            d = _distances(q, _prepared(features[f0 : f0 + batch_size], metric), metric)
            index = torch.arange(f0, f0 + d.shape[1], device=d.device).expand_as(d)
            if all_vs_all:
                d = d.masked_fill(index == torch.arange(q0, q0 + q.shape[0], device=d.device)[:, None], float("inf"))
            best_d, picked = torch.cat([best_d, d], 1).topk(k, dim=1, largest=False, sorted=True)
            best_i = torch.cat([best_i, index], 1).gather(1, picked)
        best_d, best_i = _rerank(q, features, best_i, metric)
        out_d.append(best_d)
        out_i.append(best_i)
    return torch.cat(out_d).to(dtype), torch.cat(out_i)
