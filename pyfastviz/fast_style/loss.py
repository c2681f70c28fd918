"""Johnson et al.'s perceptual loss on a frozen loss network: content feature match at one
layer, Gram-matrix style loss at several (pyfastviz.style.StyleTargets, one per style), and
total variation. Takes the transformer's [0, 255] pixels and normalises them for the loss
network with a Preprocess's mean/std."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from pyfastviz._inputs import input_dtype, widened
from pyfastviz._state import evaluation_mode
from pyfastviz.models import Preprocess, preprocess_of
from pyfastviz.style import StyleTargets, extract_features, total_variation


@contextmanager
def frozen(model: nn.Module):
    """Runs the body with model in eval mode and its parameters' requires_grad False; restores
    both, also on error."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with evaluation_mode(model):
        try:
            model.requires_grad_(False)
            yield model
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)


class PerceptualLoss:
    """Loss parts of transformer outputs against their content images and style indices.

    model: the loss network, frozen by the caller (see frozen). styles: S (1, 3, h, w) style
    images, pixels in [0, 1], on the model's device. Style layers count equally.
    __call__(output, content, style_index) with output, content (N, 3, H, W) pixels in [0, 255]
    and style_index (N,) ints in [0, S) (on the CPU: no host-device sync; one style: unused)
    -> {"content", "style", "tv"}, each (N,): content
    mean (F - F_c)^2 / mean F_c^2 at content_layer; style as StyleTargets.loss (relative to each
    layer's target); tv: total_variation of output / 255.
    """

    def __init__(self, model: nn.Module, styles: Sequence[torch.Tensor], content_layer: str,
                 style_layers: Sequence[str], preprocess: Preprocess | None = None):
        self.model, self.content_layer, self.dtype = model, content_layer, input_dtype(model)
        self.preprocess = preprocess or preprocess_of(model)
        self.targets = [StyleTargets(model, self.inputs(style), layers=style_layers,
                                     preprocess=self.preprocess) for style in styles]
        self.layer_weights = {layer: 1 / len(self.targets[0].layers) for layer in self.targets[0].layers}
        self.layers = list(dict.fromkeys([*self.targets[0].layers, content_layer]))

    def __call__(self, output: torch.Tensor, content: torch.Tensor, style_index: torch.Tensor) -> dict:
        with torch.no_grad():
            target = extract_features(self.model, self.inputs(content / 255), [self.content_layer])
            target = widened(target[self.content_layer])
        features = extract_features(self.model, self.inputs(output / 255), self.layers)
        features = {name: widened(f) for name, f in features.items()}
        content_loss = ((features[self.content_layer] - target).pow(2).flatten(1).mean(1)
                        / target.pow(2).flatten(1).mean(1).clamp_min(1e-30))
        return {"content": content_loss, "style": self.style_loss(features, style_index),
                "tv": total_variation(output.float() / 255)}

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels in [0, 1] -> the loss model's input, normalised, in its parameters'
        dtype (under autocast too: autocast still runs its layers in bf16)."""
        return self.preprocess.normalize(widened(pixels)).to(self.dtype)

    def style_loss(self, features: dict[str, torch.Tensor], style_index: torch.Tensor) -> torch.Tensor:
        """(N,) style loss of features (from extract_features at self.layers) to each image's style."""
        if len(self.targets) == 1:
            return self.targets[0].loss(features, self.layer_weights)
        loss = features[self.content_layer].new_zeros(style_index.shape[0])
        for style, targets in enumerate(self.targets):
            rows = (style_index == style).nonzero()[:, 0]  # syncs only when style_index is on the GPU
            if rows.numel():
                rows = rows.to(loss.device, non_blocking=True)
                part = targets.loss({name: features[name][rows] for name in targets.layers}, self.layer_weights)
                loss = loss.index_put((rows,), part)
        return loss

    def style_losses(self, images: torch.Tensor) -> torch.Tensor:
        """(N, S) style loss of each image (pixels in [0, 255]) to each style, without gradients."""
        with torch.no_grad():
            features = extract_features(self.model, self.inputs(images / 255), self.layers)
            features = {name: widened(f) for name, f in features.items()}
            rows = [self.style_loss(features, torch.full((images.shape[0],), style))
                    for style in range(len(self.targets))]
        return torch.stack(rows, dim=1)
