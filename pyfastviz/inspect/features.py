"""Feature vectors of images (penultimate layer or a pooled named layer)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._inputs import check_images, check_model, input_dtype, widened
from pyfastviz._state import evaluation_mode
from pyfastviz.models import ActivationTap, layer_names
from pyfastviz.models.layers import run_eagerly

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
    """The input, (B, D), of the nn.Linear that runs last in model(batch) (the classifier, also
    when an earlier-defined module such as a squeeze-and-excitation block holds Linears too);
    the hooks are always removed."""
    linears = layer_names(model, nn.Linear)
    if not linears:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Linear: pass layer= to pool a named layer")
    calls, latest = Counter(), {}

    def record(name, module, args):
        calls[name] += 1
        latest.update(name=name, input=args[0])

    handles = [model.get_submodule(name).register_forward_pre_hook(partial(record, name)) for name in linears]
    try:
        with run_eagerly(model):
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not latest:
        raise ValueError(f"no nn.Linear of the model ({type(model).__name__}) ran in its forward pass; pass layer=")
    if calls[latest["name"]] != 1:
        raise ValueError(f"the last nn.Linear to run ({latest['name']!r}) ran {calls[latest['name']]} times per "
                         "forward; pass layer=")
    features = latest["input"]
    if features.dim() != 2 or features.shape[0] != batch.shape[0]:
        raise ValueError(f"the last nn.Linear to run ({latest['name']!r}) takes a {tuple(features.shape)} input, not "
                         f"one row per image ({batch.shape[0]}, D): it is inside a block, not a classifier head "
                         "(a model built without one, num_classes=0?); pass layer=")
    return features


def extract_features(model: nn.Module, images_or_loader, layer: str | None = None, batch_size: int = 32,
                     device: str | torch.device | None = None, progress: bool = True) -> torch.Tensor:
    """Feature vectors (N, D), float32 (float64 for a float64 model), on `device`, where batches
    are moved (default: the model's device).

    images_or_loader: preprocessed (N, C, H, W), or an iterable of such batches (e.g.
    data.image_loader; (images, ...) tuples are fine), moved to the model's dtype.
    layer=None: the input of the nn.Linear that runs last (the penultimate features), which
    must be one row per image; else `layer`'s output, read as (N, C, *spatial) and averaged
    over *spatial (outputs that are not, e.g. channels last after an nn.Linear or nn.LayerNorm
    inside ConvNeXt blocks, are refused: see ActivationTap.channels_first). The model runs in
    eval mode, without gradients, and is left as found.
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
            batch = check_images(batch.to(device, input_dtype(model) if batch.is_floating_point() else None), model)
            if layer is None:
                out = _last_linear_input(model, batch)
            else:
                with ActivationTap(model, layer) as tap:
                    model(batch)
                out = tap.channels_first(layer, batch.shape[0])
                out = out.mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out
            features.append(widened(out))
    if not features:
        raise ValueError("images_or_loader gave no images")
    return torch.cat(features)


def _check_features(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, D), got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point (N, D) tensor, got {x.dtype} {tuple(x.shape)}")
    # a row's sum is finite only if its elements are (NaN and inf propagate); check the others' elements
    suspects = (~torch.isfinite(x.sum(1, dtype=torch.promote_types(x.dtype, torch.float32)))).nonzero().flatten()
    bad_rows = suspects[(~torch.isfinite(x[suspects])).any(1)]
    if len(bad_rows):
        raise ValueError(f"{name} has NaN or inf in {len(bad_rows)} row(s), first rows {bad_rows[:5].tolist()}")
    return x.detach()
