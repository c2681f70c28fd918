"""Class and neuron visualisation: I* = argmax_I S(I) - lambda ||I||^2 (Simonyan et al. 2014),
with the regularisers of Yosinski et al. 2015 (jitter, blur, pixel clipping) by default."""

from collections.abc import Sequence

import torch
from torch import nn

from pyfastviz._random import seeded_generator
from pyfastviz._inputs import check_images, check_index, check_model, resolve_targets
from pyfastviz.models import Preprocess, find_layer, preprocess_of
from pyfastviz.objectives import ClassObjective, UnitObjective
from pyfastviz.optimize import (
    L2,
    Blur,
    ClampRange,
    ClipNorm,
    Jitter,
    OptimizationResult,
    Regularizer,
    optimize_images,
)


def default_regularizers(preprocess: Preprocess) -> list[Regularizer]:
    """L2 + jitter 4 px + blur sigma 0.5 every 4 steps + norm clipping (10th percentile, every
    4 steps) + the preprocessing's valid range."""
    return [L2(1e-2), Jitter(4), Blur(0.5, every=4), ClipNorm(10, every=4), ClampRange.from_preprocess(preprocess)]


def default_fourier_regularizers() -> list[Regularizer]:
    """Jitter 8 px only: the Fourier parameterisation itself smooths, and its sigmoid bounds pixels."""
    return [Jitter(8)]


class _PerImageUnits:
    """Image i maximises channel channels[i] of a layer: UnitObjective's (N, N) -> its diagonal (N,)."""

    def __init__(self, layer: str, channels: list[int]):
        self.units = UnitObjective(layer, channels, None)

    def __call__(self, model, x):
        return self.units(model, x).diagonal()


def class_visualization(model: nn.Module, target=None, *, layer: str | None = None,
                        channel: int | Sequence[int] | None = None, neuron: tuple[int, int, int] | None = None,
                        size: int = 224, steps: int = 100, lr: float = 0.05, optimizer: str = "adam",
                        regularizers: Sequence[Regularizer] | None = None, start="blank",
                        preprocess: Preprocess | None = None, seed: int | None = None, progress: bool = True,
                        snapshot_every: int | None = None, parameterization: str = "pixels") -> OptimizationResult:
    """Images that maximise a class logit, or a channel / neuron of a named layer.

    target: an int (one image, or every image of a `start` batch) or N ints (one image each).
    Or layer= with channel= (an int, or N ints: one image each) or neuron=(channel, row, col).
    start: "blank" (the mean colour, zeros), "noise" (N(0, 0.1^2) in input space, seeded) or
    an (N, 3, H, W) tensor in model input space. regularizers: None -> default_regularizers;
    pass [] for none. preprocess gives the valid pixel range (default: preprocess_of(model)).
    parameterization: "pixels" or "fourier" (Lucid's decorrelated spectrum; its default
    regularisers are default_fourier_regularizers(); see pyfastviz.optimize.optimize_images).
    Returns an OptimizationResult: .images (N, 3, size, size), .snapshots, .history (steps, N);
    .to_pil(preprocess) gives PIL images. The model is run in eval mode and left as found.
    """
    check_model(model)
    if (target is None) == (layer is None):
        raise ValueError("pass either target= (a class) or layer= with channel=/neuron=")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    given = start if isinstance(start, torch.Tensor) else None
    if given is not None:
        check_images(given, model)
    elif start not in ("blank", "noise"):
        raise ValueError(f"start must be 'blank', 'noise' or an (N, 3, H, W) tensor, got {start!r}")
    if layer is None:
        listed = isinstance(target, Sequence) or (isinstance(target, torch.Tensor) and target.dim() > 0)
        count = len(target) if listed else (given.shape[0] if given is not None else 1)
        indices, multi = resolve_targets(target, count)
        if multi:
            raise ValueError("target must be one class per image (an int or N ints), not lists of classes")
        objective = ClassObjective(indices)
    else:
        find_layer(model, layer)
        if (channel is None) == (neuron is None):
            raise ValueError(f"layer={layer!r} needs exactly one of channel= (int or N ints) or neuron=(c, row, col)")
        if neuron is not None:
            unit = _indices(neuron)
            if unit is None or len(unit) != 3:
                raise ValueError(f"neuron must be (channel, row, col) ints, got {neuron!r}")
            count, objective = (given.shape[0] if given is not None else 1), UnitObjective(layer, None, tuple(unit))
        else:
            channels = _indices(channel)
            if not channels:
                raise TypeError(f"channel must be an int or a non-empty list of ints, got {channel!r}")
            if given is not None and len(channels) == 1:
                channels = channels * given.shape[0]
            count, objective = len(channels), _PerImageUnits(layer, channels)
    if given is not None and given.shape[0] != count:
        raise ValueError(f"start has {given.shape[0]} images but the target asks for {count}")
    preprocess = preprocess if preprocess is not None else preprocess_of(model, size)
    if given is not None and given.shape[1] != len(preprocess.mean):
        raise ValueError(f"start must have {len(preprocess.mean)} channels, as preprocess normalises, "
                         f"got {given.shape[1]}")
    like = next(model.parameters(), torch.empty(0))  # the start's device and dtype (e.g. a bf16 model)
    if given is None:
        shape = (count, 3, size, size)
        if start == "blank":
            given = torch.zeros(shape, device=like.device, dtype=like.dtype)
        else:
            generator = seeded_generator(seed)
            given = (0.1 * torch.randn(shape, generator=generator)).to(like)
    if regularizers is None:
        regularizers = default_fourier_regularizers() if parameterization == "fourier" else default_regularizers(preprocess)
    return optimize_images(model, objective, given, steps=steps, lr=lr, optimizer=optimizer,
                           regularizers=list(regularizers), seed=seed, progress=progress,
                           snapshot_every=snapshot_every, desc="class visualisation",
                           parameterization=parameterization, preprocess=preprocess)


def _indices(values) -> list[int] | None:
    """An int, a list/tuple of ints or an integer tensor (numpy ints too) -> a list of ints, or None."""
    values = values.tolist() if isinstance(values, torch.Tensor) else values
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    try:
        return [check_index(v, "channel") for v in values]
    except TypeError:
        return None
