"""A layer's feature maps: recorded, pictured (strongest channels first) and summarised."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from pyfastviz._inputs import check_images, check_model
from pyfastviz._state import evaluation_mode
from pyfastviz.models import ActivationTap, image_grid, map_to_pil


def activations(model: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of `layer` for images (N, C, H, W): (N, C', h, w), detached.
    Raises ValueError if the layer runs more than once per forward (a reused module)."""
    check_model(model)
    check_images(images, model)
    with evaluation_mode(model), ActivationTap(model, layer) as tap, torch.no_grad():
        model(images)
    return tap.channels_first(layer, images.shape[0])


def _check_maps(act: torch.Tensor, name: str, dims: int, shape: str) -> torch.Tensor:
    if not isinstance(act, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(act).__name__}")
    if act.dim() != dims:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(act.shape)}")
    if not torch.isfinite(act).all():  # a NaN channel would rank first, and blank the pictures
        raise ValueError(f"{name} has {int((~torch.isfinite(act)).sum())} NaN or inf values")
    return act.detach().float()


def strongest_channels(act: torch.Tensor, top: int | None = None) -> torch.Tensor:
    """Channel indices of act (C, h, w) by mean activation, highest first (the first `top`)."""
    act = _check_maps(act, "act", 3, "(C, h, w)")
    order = act.mean(dim=(1, 2)).argsort(descending=True)
    if top is not None and (not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive int or None, got {top!r}")
    return order[:top]


def activation_grid(act: torch.Tensor, top: int = 16, cell: int = 64, cmap: str = "inferno") -> Image.Image:
    """Feature maps act (C, h, w) -> PIL grid of the `top` channels by mean activation,
    strongest first, each min-max normalised and shown `cell` pixels wide."""
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise ValueError(f"cell must be an int >= 1 (pixels), got {cell!r}")
    channels = strongest_channels(act, top)
    tiles = [map_to_pil(act[c], cmap).resize((cell, max(1, round(cell * act.shape[1] / act.shape[2]))),
                                             Image.Resampling.NEAREST) for c in channels.tolist()]
    return image_grid(tiles)


def channel_statistics(act: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel statistics of act (N, C, h, w) over N, h, w: "mean", "max" and
    "fraction_positive" (share of values > 0), each (C,)."""
    act = _check_maps(act, "act", 4, "(N, C, h, w)")
    if act.shape[0] * act.shape[2] * act.shape[3] == 0:
        raise ValueError(f"act has no values per channel: shape {tuple(act.shape)}")
    per_channel = act.transpose(0, 1).flatten(1)
    return {"mean": per_channel.mean(1), "max": per_channel.amax(1),
            "fraction_positive": (per_channel > 0).float().mean(1)}
