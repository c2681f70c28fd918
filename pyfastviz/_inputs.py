"""Checks of what users pass to techniques: clear errors that name the argument."""

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        hint = " (pass LoadedModel.net)" if hasattr(model, "net") else ""
        raise TypeError(f"model must be a torch.nn.Module{hint}, got {type(model).__name__}")
    return model


def check_images(images, model: nn.Module | None = None, name: str = "images") -> torch.Tensor:
    """images (called `name` in errors): a floating-point (N, C, H, W) batch of finite values, on
    the model's device and of its parameters' dtype (any dtype under autocast)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        hint = f" (add a batch dimension with {name}[None])" if images.dim() == 3 else ""
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point (normalised as the model expects), got {images.dtype}")
    parameter = next(model.parameters(), None) if model is not None else None
    if parameter is not None and parameter.device != images.device:
        raise ValueError(f"{name} are on {images.device} but the model is on {parameter.device}")
    if parameter is not None and parameter.is_floating_point() and parameter.dtype != images.dtype \
            and not torch.is_autocast_enabled(images.device.type):
        raise TypeError(f"{name} are {images.dtype} but the model's parameters are {parameter.dtype}: convert "
                        f"one to the other (e.g. {name}.to({parameter.dtype}))")
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return images


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype `model` takes images in: its first floating-point parameter's, else float32."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def widened(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 if it is (fp16/bf16 widened to float32: the dtype losses are computed in)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_index(value, name: str) -> int:
    """value as an int index (Python, numpy or 0-d integer tensor); a TypeError naming it otherwise."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def check_count(value, name: str, minimum: int = 1) -> int:
    """value as an int >= minimum (not a bool); a ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """value as a finite float > 0; a ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_fraction(value, name: str) -> float:
    """value as a finite float >= 0; a ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def pixel_range(preprocess, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """preprocess.valid_range() on images' device and dtype, (C, 1, 1) each; images must have
    as many channels as preprocess normalises (3: broadcasting would silently make gray RGB)."""
    channels = len(preprocess.mean)
    if images.shape[1] != channels:
        raise ValueError(f"images must have {channels} channels, as preprocess normalises, got {images.shape[1]}")
    low, high = preprocess.valid_range()
    return low.to(images), high.to(images)


def check_logits(outputs, classes: torch.Tensor | None = None, *, takes_layer: bool = True) -> torch.Tensor:
    """A model's outputs as (N, classes) logits; a clear error for a tuple, a dict or maps, and
    for `classes` (class indices, any shape) that are not among its classes. takes_layer: the
    technique can explain a layer's units instead (layer=), which the error then suggests."""
    if not isinstance(outputs, torch.Tensor):
        alternative = ", or use layer=" if takes_layer else ""
        raise TypeError(f"a class target (given, or the predicted class) needs a model that returns an (N, classes) "
                        f"logits tensor, got a {type(outputs).__name__}: wrap the model to return the logits"
                        f"{alternative}")
    if outputs.dim() != 2:
        raise ValueError(f"a class target (given, or the predicted class) needs a model that returns (N, classes) "
                         f"logits, got shape {tuple(outputs.shape)}")
    if classes is not None and classes.numel() and classes.max() >= outputs.shape[1]:
        raise ValueError(f"target {classes.max().item()} is out of range: the model has {outputs.shape[1]} classes")
    return outputs


def resolve_targets(target, batch: int) -> tuple[torch.Tensor, bool]:
    """Class indices as a (N, K) int64 tensor, and whether the caller asked for K per image.

    target: an int (every image), a list/1-D tensor (or numpy array) of N ints, or a list of lists /
    (N, K) tensor for K classes per image. The upper bound is checked against the logits.
    """
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if isinstance(target, bool) or not isinstance(target, (numbers.Integral, Sequence, torch.Tensor)):
        raise TypeError(f"target must be an int, a list of ints or an integer tensor, got {type(target).__name__}")
    if isinstance(target, torch.Tensor):
        indices = target.detach().cpu()
    else:
        try:
            indices = torch.tensor(target)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"target must be ints, or equal-length lists of ints per image: {error}") from None
        if indices.numel() == 0:  # torch.tensor([]) is float
            indices = indices.long()
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"target must be integer class indices, got {indices.dtype} values")
    indices = indices.to(torch.int64)
    if indices.dim() == 0:
        indices = indices.expand(batch)
    if indices.dim() > 2 or indices.shape[0] != batch:
        raise ValueError(f"target must give one class (or one list of classes) per image: "
                         f"expected {batch} rows, got shape {tuple(indices.shape)}")
    if indices.dim() == 2 and indices.shape[1] == 0:
        raise ValueError(f"target must give at least one class per image, got shape {tuple(indices.shape)}")
    if indices.numel() and indices.min() < 0:
        raise ValueError(f"target must be class indices >= 0, got {indices.min().item()}")
    multi = indices.dim() == 2
    return (indices if multi else indices[:, None]), multi


def check_choice(value, name: str, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
