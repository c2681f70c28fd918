"""Convolution filters as pictures: the first layer's in RGB, deeper ones per input channel."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from pyfastviz._inputs import check_model
from pyfastviz.models import find_layer, image_grid, layer_names


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The weight of the model's first nn.Conv2d (in named_modules order), (F, C, kh, kw)."""
    check_model(model)
    convs = layer_names(model, nn.Conv2d)
    if not convs:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Conv2d layer")
    return find_layer(model, convs[0]).weight.detach().clone()


def filters_image(weights: torch.Tensor, channel: int | None = None, scale: int = 8, ncols: int | None = None,
                  pad: int = 2) -> Image.Image:
    """Filters (F, C, kh, kw) -> a PIL grid, each filter min-max normalised on its own.

    channel=None shows RGB filters (C == 3) in colour and single-channel ones in grey;
    channel=i shows input channel i of every filter in grey (for deeper layers).
    Each weight becomes a `scale` x `scale` block of pixels.
    """
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor (F, C, kh, kw), got {type(weights).__name__}")
    if weights.dim() != 4 or weights.shape[0] == 0:
        raise ValueError(f"weights must have shape (F, C, kh, kw) with F >= 1, got {tuple(weights.shape)}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    w = weights.detach().float().cpu()
    if not torch.isfinite(w).all():
        raise ValueError("the filter weights contain NaN or infinite values")
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < w.shape[1]:
            raise ValueError(f"channel={channel!r} is not an input channel in [0, {w.shape[1]})")
        w = w[:, channel : channel + 1]
    elif w.shape[1] not in (1, 3):
        raise ValueError(f"the filters have {w.shape[1]} input channels; pass channel= to show one of them")
    low = w.amin(dim=(1, 2, 3), keepdim=True)
    span = (w.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    pixels = ((w - low) / span * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    tiles = [Image.fromarray(p.permute(1, 2, 0).numpy()).resize((p.shape[2] * scale, p.shape[1] * scale),
                                                              Image.Resampling.NEAREST) for p in pixels]
    return image_grid(tiles, ncols=ncols, pad=pad)


def filter_grid(model: nn.Module, layer: str | None = None, channel: int | None = None, **kwargs) -> Image.Image:
    """filters_image of the Conv2d called `layer` (default: the first one); kwargs go to filters_image."""
    if layer is None:
        return filters_image(first_layer_filters(model), channel, **kwargs)
    module = find_layer(check_model(model), layer)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"layer={layer!r} is a {type(module).__name__}, not an nn.Conv2d")
    return filters_image(module.weight, channel, **kwargs)
