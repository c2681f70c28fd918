"""What a style is: Gram matrices of feature maps at named layers, computed once per style.

Layer defaults for EfficientNet-Lite0 and torchvision's VGGs, feature extraction by forward hooks,
StyleTargets (the blended Gram targets and the relative style loss), luminance helpers for
colour-preserving transfer, and the argument checks these share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pyfastviz import ops
from pyfastviz._inputs import check_images, check_model, widened
from pyfastviz._state import evaluation_mode
from pyfastviz.models import ActivationTap, Preprocess, find_layer, preprocess_of

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass(frozen=True)
class StyleLayers:
    """Layer names: `style` (Gram matrices) and `content` (feature match)."""

    style: tuple[str, ...]
    content: str


# EfficientNet-Lite0 reuses one ReLU6 per block, so its taps are block outputs (called once).
_EFFICIENTNET_LITE0 = StyleLayers(("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.8"), "_blocks.4")


def default_layers(model: nn.Module) -> StyleLayers:
    """The default style and content layers of EfficientNet-Lite0 (told apart by its layer names)
    or of a torchvision VGG (vgg11 .. vgg19, with or without batch norm; see _vgg_layers); other models
    raise a ValueError asking for explicit layers."""
    names = {name for name, _ in model.named_modules()}
    if {"_conv_stem", "_blocks.15", "_conv_head"} <= names and "_blocks.16" not in names:
        return _EFFICIENTNET_LITE0
    layers = _vgg_layers(model)
    if layers is None:
        raise ValueError(f"no default style/content layers for {type(model).__name__}: pass the layer names "
                         "(see pyfastviz.models.layer_names(model))")
    return layers


def _vgg_layers(model: nn.Module) -> StyleLayers | None:
    """relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (style) and relu4_2 (content) of a model whose
    `features` is a VGG stack: five blocks of Conv2d [BatchNorm2d] ReLU, each closed by a MaxPool2d;
    None for any other model. The ReLUs are found by position in that structure (their outputs are
    the convolutions' too: torchvision's ReLUs are in place)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        return None
    relus, block, conv = {}, 1, 0
    for name, layer in features.named_children():
        if isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU):
            relus[block, conv] = f"features.{name}"
        elif not isinstance(layer, nn.BatchNorm2d):
            return None
    if block != 6 or not all((b, 1) in relus for b in range(1, 6)) or (4, 2) not in relus:
        return None
    return StyleLayers(tuple(relus[b, 1] for b in range(1, 6)), relus[4, 2])


def extract_features(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs (N, C_l, H_l, W_l) of `layers` from one forward pass, autograd graph kept; a layer
    whose output is no (N, C, H, W) map (a Linear's, say) is a ValueError naming it."""
    with ActivationTap(model, layers, detach=False) as tap:
        model(images)
    features = {name: tap.channels_first(name, images.shape[0]) for name in layers}
    for name, output in features.items():
        if output.dim() != 4:
            raise ValueError(f"layer {name!r} gives {tuple(output.shape)}, not an (N, C, H, W) feature map: pick a "
                             "convolutional layer for the style and content losses")
    return features


class StyleTargets:
    """Gram matrices of style images at `layers`, computed once and reused across runs.

    styles: a (S, 3, H, W) tensor or a list of (S_i, 3, H_i, W_i) tensors, normalised for the
    model; sizes may differ. style_weights: one weight >= 0 per style image (default equal);
    the target per layer is their weighted mean Gram matrix (C_l, C_l). luminance=True computes
    them on the styles' luminance (for style_transfer(preserve_color=True)). backend: the Gram
    ops' backend for the targets and the loss ("auto", "triton" or "reference"; see ops.gram).
    """

    def __init__(self, model: nn.Module, styles, *, layers: Sequence[str] | None = None,
                 style_weights: Sequence[float] | None = None, luminance: bool = False,
                 preprocess: Preprocess | None = None, backend: str = "auto"):
        check_model(model)
        self.backend = backend
        images = style_list(styles, model)
        self.layers = tuple(check_layers(model, default_layers(model).style if layers is None else layers, "layers"))
        weights = check_weights(style_weights, len(images), "style_weights", "one per style image")
        self.luminance = bool(luminance)
        preprocess = preprocess or preprocess_of(model)
        sums = dict.fromkeys(self.layers, 0)
        # inference_mode(False): the targets are plain tensors that the loss's autograd may save,
        # also when made inside the caller's torch.inference_mode()
        with evaluation_mode(model), torch.inference_mode(False), torch.no_grad():
            for image, weight in zip(images, weights):
                features = extract_features(model, to_luminance(image, preprocess) if luminance else image,
                                            self.layers)
                for name in self.layers:
                    sums[name] = sums[name] + weight * ops.gram(widened(features[name]), backend=backend)[0]
            self.grams: dict[str, torch.Tensor] = {name: g / sum(weights) for name, g in sums.items()}
            self._norms = {name: g.pow(2).sum().clamp_min(1e-30) for name, g in self.grams.items()}

    def loss(self, features: dict[str, torch.Tensor], layer_weights: dict[str, float]) -> torch.Tensor:
        """(N,) sum over layers of layer_weights[l] * sum_ij (gram(features[l]) - T_l)^2 / sum_ij T_l^2
        (relative, so that layers of any scale count alike)."""
        return sum(w * ops.gram_style_loss(features[name], self.grams[name], backend=self.backend) / self._norms[name]
                   for name, w in layer_weights.items())


def to_luminance(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(N, 3, H, W) normalised -> the grey images (Y, Y, Y) of their YIQ luminance, normalised."""
    y = torch.einsum("c,nchw->nhw", _YIQ[0].to(images), preprocess.denormalize(images))
    return preprocess.normalize(y[:, None].expand(-1, 3, -1, -1))


def rgb_to_yiq(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> YIQ (N, 3, H, W)."""
    return torch.einsum("dc,nchw->ndhw", _YIQ.to(pixels), pixels)


def with_chroma(image: torch.Tensor, content: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """The luminance of `image` with the chroma (I, Q) of `content`, clamped to valid pixels."""
    yiq = torch.cat([rgb_to_yiq(preprocess.denormalize(image))[:, :1],
                     rgb_to_yiq(preprocess.denormalize(content))[:, 1:]], dim=1)
    rgb = torch.einsum("dc,nchw->ndhw", torch.linalg.inv(_YIQ.double()).to(yiq), yiq)
    return preprocess.normalize(rgb.clamp(0, 1))


def style_list(styles, model) -> list[torch.Tensor]:
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
        check_images(style, model, name="styles")
        images.extend(style.split(1))
    if not images:
        raise ValueError("styles contains no image (S = 0)")
    return images


def check_layers(model, layers, name) -> list[str]:
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


def check_weights(weights, count, name, what) -> list[float]:
    if weights is None:
        return [1.0] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{name} must have {what} ({count}), got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"{name} must be finite and >= 0, not all 0, got {weights}")
    return weights


def layer_weights_by_name(layers, layer_weights) -> dict[str, float]:
    """Per-layer style weights (a dict by name or a sequence in layer order) -> dict summing to 1."""
    layers = list(layers)
    if isinstance(layer_weights, dict):
        unknown = set(layer_weights) - set(layers)
        if unknown:
            raise ValueError(f"layer_weights names layers that are not style layers: {sorted(unknown)}; "
                             f"style layers: {layers}")
        layer_weights = [layer_weights.get(layer, 0.0) for layer in layers]
    weights = check_weights(layer_weights, len(layers), "layer_weights", "one per style layer")
    return {layer: w / sum(weights) for layer, w in zip(layers, weights)}
