"""Texture synthesis (Gatys et al. 2015) and neural style transfer (Gatys et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pyfastviz._random import seeded_generator
from pyfastviz._inputs import check_choice, check_images, check_model, input_dtype
from pyfastviz._state import evaluation_mode, gradients_enabled
from pyfastviz.models import Preprocess, preprocess_of
from pyfastviz.models.images import to_rgb, to_unit_tensor
from pyfastviz.style.memory import check_memory, check_size
from pyfastviz.style.solver import check_common, optimize_image
from pyfastviz.style.targets import (
    StyleTargets,
    check_layers,
    default_layers,
    extract_features,
    layer_weights_by_name,
    style_list,
    to_luminance,
    with_chroma,
)

INITS = ("content", "noise")


@dataclass
class StyleResult:
    """image: (N, 3, H, W) normalised for the model. history: per loss name ("total", "style",
    "tv", and "content" for style transfer), steps + 1 floats (batch means): entry i is the
    image's loss before step i, the last one the result's. "total" is weighted, the rest are not."""

    image: torch.Tensor
    history: dict[str, list[float]]


@gradients_enabled()  # optimises also inside the caller's torch.no_grad() or torch.inference_mode()
def texture_synthesis(model: nn.Module, example, *, size: int | tuple[int, int] | None = None,
                      layers: Sequence[str] | None = None, layer_weights=None, tv_weight: float = 0.0,
                      steps: int = 500, optimizer: str = "lbfgs", lr: float | None = None,
                      preprocess: Preprocess | None = None, seed: int | None = None,
                      progress: bool = True) -> StyleResult:
    """A texture with the Gram statistics of `example`, optimised from uniform noise.

    example: (1, 3, h, w) normalised image, or a StyleTargets to reuse (its layers: passing
    layers too is a ValueError). size: output (H, W) or side (default: the example's size).
    layers / layer_weights: style layers (default for the model) and their weights (a dict or a
    sequence; default equal, summing to 1).
    steps: L-BFGS iterations (one strong-Wolfe line search each, usually one forward and backward
    pass) or Adam updates. optimizer: "lbfgs" or "adam"; lr: a finite number > 0, L-BFGS's first
    trial step or Adam's step in pixels; None: 1 for L-BFGS, 0.05 for Adam.
    Works inside torch.no_grad() and torch.inference_mode() too.
    Returns StyleResult with image (1, 3, H, W).
    """
    check_model(model)
    preprocess = preprocess or preprocess_of(model)
    if isinstance(example, StyleTargets):
        if size is None:
            raise ValueError("size is required when example is a StyleTargets")
        if layers is not None:
            raise ValueError("layers come from the StyleTargets; do not pass them")
        device, dtype = next(iter(example.grams.values())).device, input_dtype(model)
    else:
        check_images(example, model, name="example")
        if example.shape[0] != 1 or example.shape[1] != 3:
            raise ValueError(f"example must have shape (1, 3, h, w), got {tuple(example.shape)}")
        device, dtype = example.device, example.dtype
    height, width = check_size(size if size is not None else tuple(example.shape[2:]))
    check_common(steps, optimizer, lr, tv_weight=tv_weight)
    check_memory(model, (height, width), optimizer=optimizer, device=device)
    targets = example if isinstance(example, StyleTargets) else StyleTargets(model, example, layers=layers,
                                                                             preprocess=preprocess)
    weights = layer_weights_by_name(targets.layers, layer_weights)
    start = preprocess.normalize(noise((1, 3, height, width), seed, device, dtype))

    def objective(x):
        features = extract_features(model, x, targets.layers)
        parts = {"style": targets.loss(features, weights), "tv": total_variation(x)}
        return parts["style"] + tv_weight * parts["tv"], parts

    with evaluation_mode(model):
        image, history = optimize_image(start, objective, steps, optimizer, lr, preprocess, progress, "texture")
    return StyleResult(image, history)


@gradients_enabled()  # optimises also inside the caller's torch.no_grad() or torch.inference_mode()
def style_transfer(model: nn.Module, content: torch.Tensor, styles, *, style_weights: Sequence[float] | None = None,
                   style_layers: Sequence[str] | None = None, content_layer: str | None = None,
                   layer_weights=None, content_weight: float = 1.0, style_weight: float = 10.0,
                   tv_weight: float = 1e-3, init: str = "content", optimizer: str = "lbfgs",
                   lr: float | None = None, steps: int = 500, preserve_color: bool = False,
                   scales: int = 1, preprocess: Preprocess | None = None, seed: int | None = None,
                   progress: bool = True) -> StyleResult:
    """`content` repainted in the style of `styles` (Gatys et al. 2016).

    content: (N, 3, H, W) normalised images, each stylised. styles: a (S, 3, h, w) tensor or list
    of such tensors (any sizes), blended by style_weights; or a StyleTargets to reuse (its layers
    and blend). Loss per image: content_weight * mean (F_c - F)^2 at content_layer
    + style_weight * sum_l layer_weights[l] * sum (G_l - T_l)^2 + tv_weight * total variation.
    init: start from the content or from uniform noise (seeded). steps, optimizer, lr: as for
    texture_synthesis; L-BFGS optimises a batch jointly (one line search over the summed loss), so
    an image's result differs from its run alone; Adam's images are independent.
    preserve_color: transfer on luminance (Y of YIQ) only, then put back the content's chroma
    (I, Q). Works inside torch.no_grad() and torch.inference_mode() too.
    scales: coarse-to-fine levels (Gatys et al. 2017): `steps` steps at 1 / 2^(scales - 1) of the
    size, the result upsampled to start the next level, up to the full size; large outputs get
    their large structures from the small levels, where steps are cheap.
    Returns StyleResult with image (N, 3, H, W) within the model's valid input range; its
    history runs over the levels in order, smallest first (each ends with its final loss).
    """
    check_model(model)
    check_images(content, model, name="content")
    if content.shape[1] != 3 or content.shape[0] == 0:
        raise ValueError(f"content must have shape (N >= 1, 3, H, W), got {tuple(content.shape)}")
    check_choice(init, "init", INITS)
    sizes = pyramid(tuple(content.shape[2:]), scales)
    check_common(steps, optimizer, lr, content_weight=content_weight, style_weight=style_weight,
                 tv_weight=tv_weight)
    preprocess = preprocess or preprocess_of(model)
    content_layer = default_layers(model).content if content_layer is None else content_layer
    check_layers(model, [content_layer], "content_layer")
    if isinstance(styles, StyleTargets):
        if style_weights is not None or style_layers is not None:
            raise ValueError("style_weights and style_layers come from the StyleTargets; do not pass them")
        if styles.luminance != bool(preserve_color):
            raise ValueError(f"the StyleTargets were computed with luminance={styles.luminance} but "
                             f"preserve_color={preserve_color}; they must agree")
        targets = styles
    else:
        style_list(styles, model)  # validate before the memory check
    layers = targets.layers if isinstance(styles, StyleTargets) else check_layers(
        model, default_layers(model).style if style_layers is None else style_layers, "style_layers")
    weights = layer_weights_by_name(layers, layer_weights)
    check_memory(model, tuple(content.shape[2:]), batch=content.shape[0], optimizer=optimizer,
                 device=content.device)
    if not isinstance(styles, StyleTargets):
        targets = StyleTargets(model, styles, layers=list(weights), style_weights=style_weights,
                               luminance=preserve_color, preprocess=preprocess)
    source = to_luminance(content, preprocess) if preserve_color else content
    layers = list(dict.fromkeys([*targets.layers, content_layer]))
    history: dict[str, list[float]] = {}
    image = None
    with evaluation_mode(model):
        for size in sizes:
            level_source = resize(source, size)
            with torch.no_grad():
                content_features = extract_features(model, level_source, [content_layer])[content_layer]
                content_norm = content_features.pow(2).flatten(1).mean(1).clamp_min(1e-30)
            if image is not None:
                start = resize(image, size)
            elif init == "content":
                start = level_source
            else:
                start = preprocess.normalize(noise(level_source.shape, seed, source.device, source.dtype))

            def objective(x, content_features=content_features, content_norm=content_norm):
                features = extract_features(model, x, layers)
                parts = {"content": (features[content_layer] - content_features).pow(2).flatten(1).mean(1)
                         / content_norm, "style": targets.loss(features, weights), "tv": total_variation(x)}
                total = content_weight * parts["content"] + style_weight * parts["style"] + tv_weight * parts["tv"]
                return total, parts

            image, level_history = optimize_image(start, objective, steps, optimizer, lr, preprocess, progress,
                                                  f"style transfer {size[0]}x{size[1]}")
            for key, values in level_history.items():
                history.setdefault(key, []).extend(values)
    if preserve_color:
        image = with_chroma(image, content.detach(), preprocess)
    return StyleResult(image, history)


MIN_LEVEL_SIDE = 16


def pyramid(size: tuple[int, int], scales: int) -> list[tuple[int, int]]:
    """(H, W) of each coarse-to-fine level, smallest first, the last one `size`; with scales > 1
    each side of every level is >= MIN_LEVEL_SIDE."""
    if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
        raise ValueError(f"scales must be an int >= 1, got {scales!r}")
    sizes = [(round(size[0] / 2**k), round(size[1] / 2**k)) for k in reversed(range(scales))]
    if scales > 1 and min(sizes[0]) < MIN_LEVEL_SIDE:
        raise ValueError(f"scales={scales} makes the smallest level {sizes[0][0]}x{sizes[0][1]} px for a "
                         f"{size[0]}x{size[1]} content; each side must stay >= {MIN_LEVEL_SIDE} px")
    return sizes


def image_input(image: Image.Image, size: int, preprocess: Preprocess) -> torch.Tensor:
    """A PIL image (any mode and shape) -> (1, 3, H, W) input normalised by `preprocess` (the
    model's: model.preprocess or preprocess_of(net)) whose longer side is `size`, aspect kept and
    nothing cropped (a content or style image at the output's scale)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image (load_image(path)), got {type(image).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not isinstance(preprocess, Preprocess):
        raise TypeError("preprocess must be the model's Preprocess (model.preprocess), "
                        f"got {type(preprocess).__name__}")
    image = to_rgb(image)
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)  # PIL antialiases when shrinking
    return preprocess.normalize(to_unit_tensor(image))[None]


def noise(shape, seed: int | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Uniform [0, 1) pixels of `shape` and dtype, seeded (None: random)."""
    return torch.rand(shape, generator=seeded_generator(seed, device), device=device, dtype=dtype)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, *size), bilinear (antialiased when shrinking); the same tensor at its own size."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared difference of horizontally and vertically adjacent pixels (0 along a
    side of 1 pixel, which has no neighbours)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1)
    return sum(d.mean(1) if d.shape[1] else x.new_zeros(x.shape[0]) for d in (dx, dy))
