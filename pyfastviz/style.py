"""Texture synthesis (Gatys et al. 2015) and neural style transfer (Gatys et al. 2016).

Style is the Gram matrices of feature maps at several layers (pyfastviz.ops.gram, computed
once per style in a StyleTargets); the per-step style loss is pyfastviz.ops.gram_style_loss
(fused on the GPU, the reference on the CPU). Images are optimised directly in the model's
normalised input space and kept within Preprocess.valid_range().
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz import ops
from pyfastviz._inputs import check_choice, check_images, check_model
from pyfastviz._state import evaluation_mode
from pyfastviz.models import ActivationTap, Preprocess, find_layer

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
LBFGS_HISTORY = 20
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass(frozen=True)
class StyleLayers:
    """Layer names: `style` (Gram matrices) and `content` (feature match)."""

    style: tuple[str, ...]
    content: str


# EfficientNet-Lite0 reuses one ReLU6 per block, so its taps are block outputs (called once).
# torchvision VGG: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 and relu4_2 for content (its
# ReLUs are in place, so conv4_2's output is overwritten by the ReLU that follows it).
_EFFICIENTNET_LITE0 = StyleLayers(("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.8"), "_blocks.4")
_VGG16 = StyleLayers(("features.1", "features.6", "features.11", "features.18", "features.25"), "features.20")
_VGG19 = StyleLayers(("features.1", "features.6", "features.11", "features.20", "features.29"), "features.22")


def default_layers(model: nn.Module) -> StyleLayers:
    """The default style and content layers of EfficientNet-Lite0, VGG16 or VGG19, told apart by
    their layer names; other models raise a ValueError asking for explicit layers."""
    names = {name for name, _ in model.named_modules()}
    if {"_conv_stem", "_blocks.15", "_conv_head"} <= names and "_blocks.16" not in names:
        return _EFFICIENTNET_LITE0
    if "features.30" in names and "classifier.6" in names:
        if "features.36" in names:
            return _VGG19
        if "features.31" not in names:
            return _VGG16
    raise ValueError(f"no default style/content layers for {type(model).__name__}: pass the layer names "
                     "(see pyfastviz.models.layer_names(model))")


def extract_features(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs (N, C_l, H_l, W_l) of `layers` from one forward pass, autograd graph kept."""
    with ActivationTap(model, layers, detach=False) as tap:
        model(images)
    return {name: tap[name] for name in layers}


class StyleTargets:
    """Gram matrices of style images at `layers`, computed once and reused across runs.

    styles: a (S, 3, H, W) tensor or a list of (S_i, 3, H_i, W_i) tensors, normalised for the
    model; sizes may differ. style_weights: one weight >= 0 per style image (default equal);
    the target per layer is their weighted mean Gram matrix (C_l, C_l). luminance=True computes
    them on the styles' luminance (for style_transfer(preserve_color=True)).
    """

    def __init__(self, model: nn.Module, styles, *, layers: Sequence[str] | None = None,
                 style_weights: Sequence[float] | None = None, luminance: bool = False,
                 preprocess: Preprocess | None = None):
        check_model(model)
        images = _style_list(styles, model)
        self.layers = tuple(_check_layers(model, default_layers(model).style if layers is None else layers, "layers"))
        weights = _check_weights(style_weights, len(images), "style_weights", "one per style image")
        self.luminance = bool(luminance)
        preprocess = preprocess or Preprocess(224)
        sums = dict.fromkeys(self.layers, 0)
        with evaluation_mode(model), torch.no_grad():
            for image, weight in zip(images, weights):
                features = extract_features(model, to_luminance(image, preprocess) if luminance else image,
                                            self.layers)
                for name in self.layers:
                    sums[name] = sums[name] + weight * ops.gram(features[name].float())[0]
        self.grams: dict[str, torch.Tensor] = {name: g / sum(weights) for name, g in sums.items()}
        self._norms = {name: g.pow(2).sum().clamp_min(1e-30) for name, g in self.grams.items()}

    def loss(self, features: dict[str, torch.Tensor], layer_weights: dict[str, float]) -> torch.Tensor:
        """(N,) sum over layers of layer_weights[l] * sum_ij (gram(features[l]) - T_l)^2 / sum_ij T_l^2
        (relative, so that layers of any scale count alike)."""
        return sum(w * ops.gram_style_loss(features[name], self.grams[name]) / self._norms[name]
                   for name, w in layer_weights.items())


@dataclass
class StyleResult:
    """image: (N, 3, H, W) normalised for the model. history: per loss name ("total", "style",
    "tv", and "content" for style transfer), steps + 1 floats (batch means): entry i is the
    image's loss before step i, the last one the result's. "total" is weighted, the rest are not."""

    image: torch.Tensor
    history: dict[str, list[float]]


def texture_synthesis(model: nn.Module, example, *, size: int | tuple[int, int] | None = None,
                      layers: Sequence[str] | None = None, layer_weights=None, tv_weight: float = 0.0,
                      steps: int = 200, optimizer: str = "lbfgs", lr: float | None = None,
                      preprocess: Preprocess | None = None, seed: int | None = None,
                      progress: bool = True) -> StyleResult:
    """A texture with the Gram statistics of `example`, optimised from uniform noise.

    example: (1, 3, h, w) normalised image, or a StyleTargets to reuse. size: output (H, W) or
    side (default: the example's size). layers / layer_weights: style layers (default for the
    model) and their weights (a dict or a sequence; default equal, summing to 1).
    optimizer: "lbfgs" (strong-Wolfe line search) or "adam"; lr: its step size (default 1 / 0.05).
    Returns StyleResult with image (1, 3, H, W).
    """
    check_model(model)
    preprocess = preprocess or Preprocess(224)
    if isinstance(example, StyleTargets):
        targets = example
        if size is None:
            raise ValueError("size is required when example is a StyleTargets")
    else:
        check_images(example, model)
        if example.shape[0] != 1 or example.shape[1] != 3:
            raise ValueError(f"example must have shape (1, 3, h, w), got {tuple(example.shape)}")
        targets = StyleTargets(model, example, layers=layers, preprocess=preprocess)
    height, width = _check_size(size if size is not None else tuple(example.shape[2:]))
    weights = _layer_weights(targets.layers, layer_weights)
    _check_common(steps, optimizer, tv_weight=tv_weight)
    device = next(iter(targets.grams.values())).device
    check_memory(model, (height, width), optimizer=optimizer, device=device)
    noise = torch.rand(1, 3, height, width, generator=_generator(seed, device), device=device)
    start = preprocess.normalize(noise)

    def objective(x):
        features = extract_features(model, x, targets.layers)
        parts = {"style": targets.loss(features, weights), "tv": total_variation(x)}
        return parts["style"] + tv_weight * parts["tv"], parts

    with evaluation_mode(model):
        image, history = _optimize(start, objective, steps, optimizer, lr, preprocess, progress, "texture")
    return StyleResult(image, history)


def style_transfer(model: nn.Module, content: torch.Tensor, styles, *, style_weights: Sequence[float] | None = None,
                   style_layers: Sequence[str] | None = None, content_layer: str | None = None,
                   layer_weights=None, content_weight: float = 1.0, style_weight: float = 10.0,
                   tv_weight: float = 1e-3, init: str = "content", optimizer: str = "lbfgs",
                   lr: float | None = None, steps: int = 150, preserve_color: bool = False,
                   preprocess: Preprocess | None = None, seed: int | None = None,
                   progress: bool = True) -> StyleResult:
    """`content` repainted in the style of `styles` (Gatys et al. 2016).

    content: (N, 3, H, W) normalised images, each stylised. styles: a (S, 3, h, w) tensor or list
    of such tensors (any sizes), blended by style_weights; or a StyleTargets to reuse (its layers
    and blend). Loss per image: content_weight * mean (F_c - F)^2 at content_layer
    + style_weight * sum_l layer_weights[l] * sum (G_l - T_l)^2 + tv_weight * total variation.
    init: start from the content or from uniform noise (seeded). preserve_color: transfer on
    luminance (Y of YIQ) only, then put back the content's chroma (I, Q).
    Returns StyleResult with image (N, 3, H, W) within the model's valid input range.
    """
    check_model(model)
    check_images(content, model)
    if content.shape[1] != 3 or content.shape[0] == 0:
        raise ValueError(f"content must have shape (N >= 1, 3, H, W), got {tuple(content.shape)}")
    check_choice(init, "init", INITS)
    _check_common(steps, optimizer, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight)
    preprocess = preprocess or Preprocess(224)
    content_layer = default_layers(model).content if content_layer is None else content_layer
    _check_layers(model, [content_layer], "content_layer")
    if isinstance(styles, StyleTargets):
        if style_weights is not None or style_layers is not None:
            raise ValueError("style_weights and style_layers come from the StyleTargets; do not pass them")
        if styles.luminance != bool(preserve_color):
            raise ValueError(f"the StyleTargets were computed with luminance={styles.luminance} but "
                             f"preserve_color={preserve_color}; they must agree")
        targets = styles
    else:
        _style_list(styles, model)  # validate before the memory check
    weights = _layer_weights(targets.layers if isinstance(styles, StyleTargets) else
                             _check_layers(model, default_layers(model).style if style_layers is None
                                           else style_layers, "style_layers"), layer_weights)
    check_memory(model, tuple(content.shape[2:]), batch=content.shape[0], optimizer=optimizer,
                 device=content.device)
    if not isinstance(styles, StyleTargets):
        targets = StyleTargets(model, styles, layers=list(weights), style_weights=style_weights,
                               luminance=preserve_color, preprocess=preprocess)
    source = to_luminance(content, preprocess) if preserve_color else content
    layers = list(dict.fromkeys([*targets.layers, content_layer]))
    with evaluation_mode(model):
        with torch.no_grad():
            content_features = extract_features(model, source, [content_layer])[content_layer]
            content_norm = content_features.pow(2).flatten(1).mean(1).clamp_min(1e-30)
        if init == "content":
            start = source
        else:
            noise = torch.rand(source.shape, generator=_generator(seed, source.device), device=source.device)
            start = preprocess.normalize(noise)

        def objective(x):
            features = extract_features(model, x, layers)
            parts = {"content": (features[content_layer] - content_features).pow(2).flatten(1).mean(1)
                     / content_norm, "style": targets.loss(features, weights), "tv": total_variation(x)}
            total = content_weight * parts["content"] + style_weight * parts["style"] + tv_weight * parts["tv"]
            return total, parts

        image, history = _optimize(start, objective, steps, optimizer, lr, preprocess, progress, "style transfer")
    if preserve_color:
        image = _with_chroma(image, content, preprocess)
    return StyleResult(image, history)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared difference of horizontally and vertically adjacent pixels."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


def to_luminance(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(N, 3, H, W) normalised -> the grey images (Y, Y, Y) of their YIQ luminance, normalised."""
    y = torch.einsum("c,nchw->nhw", _YIQ[0].to(images), preprocess.denormalize(images))
    return preprocess.normalize(y[:, None].expand(-1, 3, -1, -1))


def rgb_to_yiq(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> YIQ (N, 3, H, W)."""
    return torch.einsum("dc,nchw->ndhw", _YIQ.to(pixels), pixels)


def _with_chroma(image: torch.Tensor, content: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """The luminance of `image` with the chroma (I, Q) of `content`, clamped to valid pixels."""
    yiq = torch.cat([rgb_to_yiq(preprocess.denormalize(image))[:, :1],
                     rgb_to_yiq(preprocess.denormalize(content))[:, 1:]], dim=1)
    rgb = torch.einsum("dc,nchw->ndhw", torch.linalg.inv(_YIQ.double()).to(yiq), yiq)
    return preprocess.normalize(rgb.clamp(0, 1))


def _optimize(start, objective, steps, optimizer, lr, preprocess, progress, desc):
    """Minimises objective(x) = (total (N,), parts) over the image x, clamped to the valid range
    after each step. Gradients w.r.t. x only (torch.autograd.grad), so parameters are untouched."""
    low, high = (bound.to(start) for bound in preprocess.valid_range())
    x = start.detach().clone().clamp(low, high).requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=lr or 1.0, max_iter=1, history_size=LBFGS_HISTORY,
                                line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([x], lr=lr or 0.05)
    records: list[dict[str, torch.Tensor]] = []

    def closure():
        total, parts = objective(x)
        (x.grad,) = torch.autograd.grad(total.sum(), x)
        if first[0]:
            records.append({"total": total.detach().mean(), **{k: v.detach().mean() for k, v in parts.items()}})
            first[0] = False
        return total.sum()

    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        first = [True]
        opt.step(closure)
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, high), low))
    with torch.no_grad():
        total, parts = objective(x)
    records.append({"total": total.mean(), **{k: v.mean() for k, v in parts.items()}})
    history = {key: torch.stack([r[key] for r in records]).tolist() for key in records[0]}
    return x.detach(), history


# ---- memory -----------------------------------------------------------------------------------


def estimate_peak_memory(model: nn.Module, size: int | tuple[int, int], *, batch: int = 1,
                         optimizer: str = "lbfgs", probe_size: int = 64) -> int:
    """Estimated peak bytes of optimising a (batch, 3, H, W) image through `model`.

    Every leaf module's output is measured in one no-grad forward at probe_size and scaled by
    the pixel count: kept for backward plus as much again for gradients, plus the parameters and
    the optimiser's image-sized state (2 * LBFGS_HISTORY + 4 images for L-BFGS, 4 for Adam).
    Grows linearly in H * W.
    """
    fixed, per_pixel = _memory_model(model, batch, optimizer, probe_size)
    height, width = _check_size(size)
    return int(fixed + per_pixel * height * width)


def check_memory(model: nn.Module, size: int | tuple[int, int], *, batch: int = 1, optimizer: str = "lbfgs",
                 device: torch.device | str | None = None, available: int | None = None) -> None:
    """Raises MemoryError, naming the largest (H, W) of the same aspect that fits, when the
    estimated peak exceeds `available` bytes (default: free memory of a CUDA `device`;
    nothing is checked on other devices)."""
    if available is None:
        device = torch.device(device) if device is not None else None
        if device is None or device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(device)
        available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    height, width = _check_size(size)
    fixed, per_pixel = _memory_model(model, batch, optimizer, 64)
    needed = int(fixed + per_pixel * height * width)
    if needed <= available:
        return
    scale = math.sqrt(max(available - fixed, 0) / (per_pixel * height * width))
    fits = (math.floor(height * scale), math.floor(width * scale))
    hint = (f"the largest size that fits is about {fits[0]}x{fits[1]}" if min(fits) >= 1
            else "no size fits")
    raise MemoryError(f"a {batch}x3x{height}x{width} image needs about {needed / 2**20:,.0f} MiB but "
                      f"{available / 2**20:,.0f} MiB is available: {hint}; pass smaller images")


def _memory_model(model, batch, optimizer, probe_size) -> tuple[float, float]:
    """(fixed bytes, bytes per output pixel) of the peak estimate."""
    check_model(model)
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    outputs = []

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with evaluation_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, probe_size, probe_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    image_copies = 2 * LBFGS_HISTORY + 4 if optimizer == "lbfgs" else 4
    fixed = sum(p.numel() * p.element_size() for p in model.parameters())
    per_pixel = batch * (2 * sum(outputs) / probe_size**2 + image_copies * 3 * 4)
    return float(fixed), per_pixel


# ---- checks -------------------------------------------------------------------------------------


def _style_list(styles, model) -> list[torch.Tensor]:
    """A tensor or list of tensors -> list of (1, 3, h, w) style images."""
    if isinstance(styles, torch.Tensor):
        styles = [styles]
    if not isinstance(styles, (list, tuple)) or not styles:
        raise TypeError(f"styles must be a (S, 3, H, W) tensor or a non-empty list of them, got {type(styles).__name__}")
    images = []
    for style in styles:
        if not isinstance(style, torch.Tensor):
            raise TypeError(f"styles must contain tensors, got {type(style).__name__}")
        if style.dim() != 4 or style.shape[1] != 3:
            raise ValueError(f"styles must be (S, 3, H, W) tensors, got shape {tuple(style.shape)}")
        check_images(style, model)
        images.extend(style.split(1))
    if not images:
        raise ValueError("styles contains no image (S = 0)")
    return images


def _check_layers(model, layers, name) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers or not all(isinstance(layer, str) for layer in layers):
        raise TypeError(f"{name} must be a non-empty list of layer names, got {layers!r}")
    for layer in layers:
        try:
            find_layer(model, layer)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    return list(dict.fromkeys(layers))


def _check_weights(weights, count, name, what) -> list[float]:
    if weights is None:
        return [1.0] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{name} must have {what} ({count}), got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"{name} must be finite and >= 0, not all 0, got {weights}")
    return weights


def _layer_weights(layers, layer_weights) -> dict[str, float]:
    """Per-layer style weights (a dict by name or a sequence in layer order) -> dict summing to 1."""
    layers = list(layers)
    if isinstance(layer_weights, dict):
        unknown = set(layer_weights) - set(layers)
        if unknown:
            raise ValueError(f"layer_weights names layers that are not style layers: {sorted(unknown)}; "
                             f"style layers: {layers}")
        layer_weights = [layer_weights.get(layer, 0.0) for layer in layers]
    weights = _check_weights(layer_weights, len(layers), "layer_weights", "one per style layer")
    return {layer: w / sum(weights) for layer, w in zip(layers, weights)}


def _check_common(steps, optimizer, **weights) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    for name, value in weights.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be an int or (height, width) of ints >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _generator(seed, device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    return generator
