"""What a gradient technique differentiates: class scores, or units of a named layer.

An objective maps a batch to scores of shape (B, K); B may be a whole multiple of the
N images it was built for (SmoothGrad stacks noisy copies of the batch).
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pyfastviz._inputs import check_index, check_logits, resolve_targets
from pyfastviz.models import ActivationTap, find_layer


class ClassObjective:
    """Logits of given classes: indices (N, K) -> scores (B, K)."""

    def __init__(self, indices: torch.Tensor):
        self.indices = indices
        self.count = indices.shape[1]

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = check_logits(model(x), self.indices)
        indices = self.indices.to(logits.device).repeat(x.shape[0] // self.indices.shape[0], 1)
        return logits.gather(1, indices)

    def for_images(self, rows: slice) -> "ClassObjective":
        """The objective of images[rows]."""
        return ClassObjective(self.indices[rows])


class PredictedClassObjective:
    """The logit of each image's predicted class, read from the same forward pass: scores (B, 1).
    For a pass over the images themselves, not noisy copies (whose argmax may differ)."""

    count = 1

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = check_logits(model(x))
        return logits.gather(1, logits.detach().argmax(1, keepdim=True))

    def for_images(self, rows: slice) -> "PredictedClassObjective":
        """The objective of images[rows]: each image's own prediction."""
        return self


class UnitObjective:
    """Mean activation of channels of a named layer, or one neuron (channel, row, col) of it."""

    def __init__(self, layer: str, channels: list[int] | None, neuron: tuple[int, int, int] | None):
        self.layer, self.channels, self.neuron = layer, channels, neuron
        self.count = 1 if channels is None else len(channels)

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with ActivationTap(model, self.layer, detach=False) as tap:
            model(x)
        activation = tap.channels_first(self.layer, x.shape[0])
        self._check_unit(activation)
        if self.neuron is not None:
            channel, row, col = self.neuron
            return activation[:, channel, row, col][:, None]
        return activation[:, self.channels].flatten(2).mean(-1) if activation.dim() > 2 else activation[:, self.channels]

    def for_images(self, rows: slice) -> "UnitObjective":
        """The objective of images[rows]: the same units."""
        return self

    def _check_unit(self, activation: torch.Tensor) -> None:
        if self.neuron is not None:
            if activation.dim() != 4:
                raise ValueError(f"neuron=(channel, row, col) needs a 4-D layer output; {self.layer!r} "
                                 f"gives shape {tuple(activation.shape)}: use channel=")
            limits = activation.shape[1:]
            if any(not 0 <= i < n for i, n in zip(self.neuron, limits)):
                raise ValueError(f"neuron {self.neuron} is outside {self.layer!r}'s output (C, H, W) = {tuple(limits)}")
        elif any(not 0 <= c < activation.shape[1] for c in self.channels):
            raise ValueError(f"channel {self.channels} out of range: {self.layer!r} has {activation.shape[1]} channels")


def build_objective(model: nn.Module, images: torch.Tensor, target, layer: str | None,
                    channel: int | Sequence[int] | None, neuron: tuple[int, int, int] | None,
                    predict_in_pass: bool = False):
    """(objective, multi): multi is True when the caller asked for K scores per image.
    target=None is each image's predicted class: with predict_in_pass read from the objective's
    own forward pass (one pass over the images themselves), else from a forward pass now."""
    if layer is None:
        if channel is not None or neuron is not None:
            raise ValueError("channel= and neuron= select a unit of a layer: pass layer= too")
        if target is None and predict_in_pass:
            return PredictedClassObjective(), False
        if target is None:
            with torch.no_grad():
                target = check_logits(model(images)).argmax(1)
        indices, multi = resolve_targets(target, images.shape[0])
        return ClassObjective(indices), multi
    if target is not None:
        raise ValueError("pass either target= (a class) or layer= with channel=/neuron=, not both")
    find_layer(model, layer)
    if (channel is None) == (neuron is None):
        raise ValueError(f"layer={layer!r} needs exactly one of channel= (int or list) or neuron=(channel, row, col)")
    if neuron is not None:
        if isinstance(neuron, (torch.Tensor, np.ndarray)) and neuron.ndim == 1:
            neuron = neuron.tolist()
        try:
            position = tuple(check_index(i, "neuron") for i in neuron) if isinstance(neuron, Sequence) else ()
        except TypeError:
            position = ()
        if len(position) != 3:
            raise ValueError(f"neuron must be (channel, row, col) ints, got {neuron!r}")
        return UnitObjective(layer, None, position), False
    multi = isinstance(channel, Sequence) or (isinstance(channel, torch.Tensor) and channel.dim() > 0)
    channels = [check_index(c, "channel") for c in channel] if multi else [check_index(channel, "channel")]
    if not channels:
        raise ValueError(f"channel must be an int or a non-empty list of ints, got {channel!r}")
    return UnitObjective(layer, channels, None), multi

