"""Stylising images with a trained TransformerNet: PIL images, files, folders or tensors, any size."""

from __future__ import annotations

import copy
import numbers
import os
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from pyfastviz._inputs import check_index
from pyfastviz._state import evaluation_mode
from pyfastviz.data import ImageFolder
from pyfastviz.models import load_image, to_pil
from pyfastviz.style.targets import check_weights

from .images import check_pixel_range, pil_to_tensor
from .network import TransformerNet


def stylize(network: TransformerNet, images, *, style=None, device: str | torch.device | None = None,
            batch_size: int = 4, progress: bool = True):
    """`images` painted by `network`, each at its own size (TransformerNet pads to a multiple of 4
    and crops back, so output size == input size).

    images: a PIL image or file path -> PIL image; a folder or a list of PIL images / paths ->
    list of PIL images; a (3, H, W) or (N, 3, H, W) float tensor of RGB in [0, 1] -> a tensor of
    the same shape in [0, 1], run batch_size images at a time. style: None for a single-style
    network; for a multi-style one an int (style index, numpy ints too) or S blend weights (list
    or (S,) tensor; >= 0, not all 0), the same for every image. The weights are a convex blend: they
    are divided by their sum, so [1, 1] means [0.5, 0.5]. device: where to run (default the
    network's; the network is copied there, the caller's stays put). progress: a bar over a
    folder's files as they are checked and over the images of a folder or list.
    """
    if not isinstance(network, TransformerNet):
        raise TypeError(f"network must be a pyfastviz.fast_style.TransformerNet, got {type(network).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    mix = _style_weights(network, style)
    parameter = next(network.parameters())
    try:
        device = parameter.device if device is None else torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device: {err}") from None
    if device.type == parameter.device.type and device.index in (None, parameter.device.index):
        device = parameter.device
    else:
        network = copy.deepcopy(network).to(device)

    def run(pixels: torch.Tensor) -> torch.Tensor:  # (n, 3, H, W) in [0, 1] -> same, float32 on device
        styles = None if mix is None else mix.to(device).expand(pixels.shape[0], -1)
        return (network(pixels.to(device, parameter.dtype) * 255, styles) / 255).clamp(0, 1).float()

    with evaluation_mode(network), torch.no_grad():
        if isinstance(images, torch.Tensor):
            batch = _check_tensor(images)
            out = torch.cat([run(chunk).to(images.device) for chunk in batch.split(batch_size)]) if len(batch) \
                else batch.clone()
            return (out[0] if images.dim() == 3 else out).to(images.dtype)
        if isinstance(images, Image.Image) or (isinstance(images, (str, os.PathLike)) and not Path(images).is_dir()):
            return _stylize_pil(run, images)
        if isinstance(images, (str, os.PathLike)):
            images = ImageFolder(images, progress=progress).paths
        if not isinstance(images, (list, tuple)):
            raise TypeError("images must be a PIL image, a path, a folder, a list of PIL images / paths or a "
                            f"tensor, got {type(images).__name__}")
        bar = tqdm(images, desc="stylize", disable=not progress or len(images) < 2)
        return [_stylize_pil(run, image) for image in bar]


def _stylize_pil(run, image) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"images must hold PIL images or paths, got {type(image).__name__}")
    return to_pil(run(pil_to_tensor(image)[None].float() / 255)[0])


def _check_tensor(images: torch.Tensor) -> torch.Tensor:
    batch = images[None] if images.dim() == 3 else images
    if batch.dim() != 4 or batch.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images: a tensor must be float (3, H, W) or (N, 3, H, W) RGB in [0, 1], "
                         f"got {images.dtype} of shape {tuple(images.shape)}")
    if batch.numel():
        check_pixel_range(batch, "images")
    return batch


def _style_weights(network: TransformerNet, style) -> torch.Tensor | None:
    """None (single style) or (1, S) blend weights, >= 0 and summing to 1."""
    count = network.num_styles
    if count is None:
        if style is not None:
            raise ValueError(f"style={style!r} picks a style, but this network has only one: leave it out")
        return None
    if style is None:
        raise ValueError(f"style is required for a {count}-style network: an index or {count} blend weights")
    if isinstance(style, numbers.Integral):  # numpy ints too; bools are refused
        style = check_index(style, "style")
        if not 0 <= style < count:
            raise ValueError(f"style must be in [0, {count}), got {style}")
        return torch.nn.functional.one_hot(torch.tensor([style]), count).float()
    try:
        weights = torch.as_tensor(style, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"style must be an int or a list/tensor of {count} blend weights, got {style!r}") from None
    if weights.dim() != 1:
        raise ValueError(f"style must be an int or {count} blend weights, got shape {tuple(weights.shape)}")
    weights = check_weights(weights.tolist(), count, "style", "one blend weight per style")
    return torch.tensor([weights]) / sum(weights)
