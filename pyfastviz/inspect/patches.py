"""The image patches that excite one channel most (Zeiler & Fergus 2014), with their
receptive fields found empirically and their guided-backprop maps."""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._inputs import check_images, check_model
from pyfastviz._state import evaluation_mode, gradients_enabled, usable_for_autograd
from pyfastviz.guided import GuidedReLUMode
from pyfastviz.models import ActivationTap


class Patch(NamedTuple):
    """One of the strongest activations: image index, unit position (row, col) in the layer's
    map, its value, the receptive field as a box (left, top, right, bottom) in input pixels,
    and the unit's guided-backprop map cropped to that box, (3, bottom - top, right - left)."""

    index: int
    row: int
    col: int
    value: float
    box: tuple[int, int, int, int]
    guided: torch.Tensor


def _unit_gradients(model: nn.Module, x: torch.Tensor, layer: str, rows: torch.Tensor, cols: torch.Tensor,
                    channel: int | None = None, guided: bool = False) -> torch.Tensor:
    """d layer(x)[i, channel, rows[i], cols[i]] / d x[i] (channel=None: summed over channels) for
    each row of x (K, C, H, W), from one backward pass (rows are independent in eval mode)."""
    mode = GuidedReLUMode() if guided else contextlib.nullcontext()
    with evaluation_mode(model), gradients_enabled(), mode, ActivationTap(model, layer, detach=False) as tap:
        x, rows, cols = (usable_for_autograd(t.detach()) for t in (x, rows, cols))  # indices are saved too
        x.requires_grad_(True)
        model(x)
        units = tap[layer][torch.arange(len(x)), :, rows, cols]  # (K, C')
        (grad,) = torch.autograd.grad((units if channel is None else units[:, channel]).sum(), x)
    if guided and mode.guided == 0:  # nothing to guide: the gradient is the plain one, say so
        warnings.warn("the model has no ReLU-family activation, so its guided-backprop maps are plain gradients "
                      "(Patch.guided holds those)", RuntimeWarning, stacklevel=3)
    elif guided:
        mode.report()
    return grad


def receptive_field_boxes(model: nn.Module, layer: str, positions: list[tuple[int, int]],
                          input_shape: tuple[int, int, int], seed: int = 0) -> list[tuple[int, int, int, int]]:
    """The input box (left, top, right, bottom) each (row, col) of `layer`'s map depends on, for
    inputs of shape (C, H, W): the support of the gradient of that position (summed over
    channels) on random-noise inputs; one backward pass for all positions."""
    if not positions:
        return []
    noise = torch.randn(len(positions), *input_shape, generator=torch.Generator().manual_seed(seed))
    noise = noise.to(next(model.parameters(), torch.empty(0)))  # the model's device and dtype
    rows, cols = (torch.tensor(axis) for axis in zip(*positions))
    grad = _unit_gradients(model, noise, layer, rows, cols)
    boxes = []
    for support in (grad.abs().sum(1) > 0).cpu():
        ys, xs = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
        if len(ys) == 0:  # a dead unit on this input: claim the whole image
            boxes.append((0, 0, input_shape[2], input_shape[1]))
        else:
            boxes.append((int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1))
    return boxes


def _channel_maps(model, images, layer, channel, batch_size, progress) -> torch.Tensor:
    """`channel` of `layer`'s output for images, (N, h, w) on the CPU."""
    maps = []
    with evaluation_mode(model), torch.no_grad(), ActivationTap(model, layer) as tap:
        for batch in tqdm(images.split(batch_size), desc="activations", disable=not progress, leave=False):
            tap.clear()
            model(batch)
            out = tap.channels_first(layer, batch.shape[0])
            if out.dim() != 4:
                raise ValueError(f"layer={layer!r} gives shape {tuple(out.shape)}, not (N, C, h, w) maps")
            if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < out.shape[1]:
                raise ValueError(f"channel={channel!r} is not a channel of layer {layer!r} (it has {out.shape[1]})")
            maps.append(out[:, channel].float().cpu())
    return torch.cat(maps)


def top_patches(model: nn.Module, images: torch.Tensor, layer: str, channel: int, k: int = 9,
                batch_size: int = 32, progress: bool = True) -> list[Patch]:
    """The k largest activations of `channel` of `layer` over every position of images
    (N, C, H, W), strongest first, as Patch tuples (see Patch). The guided-backprop maps
    (see pyfastviz.guided) come from one batched backward pass; a model without ReLU-family
    activations gets plain gradients there, with a warning."""
    check_model(model)
    check_images(images, model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to rank")
    maps = _channel_maps(model, images, layer, channel, batch_size, progress)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= maps.numel():
        raise ValueError(f"k must be an int in [1, {maps.numel()}] (N x h x w positions), got {k!r}")
    values, flat = maps.flatten().topk(k)
    h, w = maps.shape[1:]
    index, rows, cols = flat // (h * w), flat % (h * w) // w, flat % w
    boxes = receptive_field_boxes(model, layer, list(zip(rows.tolist(), cols.tolist())), tuple(images.shape[1:]))
    guided = _unit_gradients(model, images[index.to(images.device)], layer, rows, cols, channel, guided=True)
    return [Patch(n, r, c, v, (left, top, right, bottom), g[:, top:bottom, left:right])
            for n, r, c, v, (left, top, right, bottom), g
            in zip(index.tolist(), rows.tolist(), cols.tolist(), values.tolist(), boxes, guided)]
