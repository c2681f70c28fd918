"""Saliency by backprop (Simonyan et al. 2014), with optional SmoothGrad (Smilkov et al. 2017).

The map is |d score / d image|, maximised over colour channels (reduce="abs_max", the
default), or the squared gradient norm over channels (reduce="energy"). Several targets per
image (e.g. the top-5 classes) come from one forward and one batched backward pass.
"""

import numbers
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._random import check_seed, seeded_generator
from pyfastviz._inputs import check_choice, check_count, check_fraction, check_images, check_index, check_model, widened
from pyfastviz._state import evaluation_mode, gradients_enabled, usable_for_autograd
from pyfastviz.models.layers import run_eagerly
from pyfastviz.objectives import build_objective

REDUCTIONS = ("abs_max", "energy", "none")


def saliency(model: nn.Module, images: torch.Tensor, target=None, *, layer: str | None = None,
             channel: int | Sequence[int] | None = None, neuron: tuple[int, int, int] | None = None,
             reduce: str = "abs_max", samples: int = 0, noise: float = 0.15,
             seed: int | Sequence[int] | None = None, batch_size: int | None = None,
             progress: bool = True) -> torch.Tensor:
    """Vanilla-gradient saliency maps.

    images: (N, C, H, W), preprocessed for the model. target: None (predicted class), an int,
    N ints, or (N, K) ints for K classes per image. Or layer= with channel= (int or list) or
    neuron=(c, row, col) to explain a unit of an intermediate layer instead of a class.
    reduce: "abs_max" -> max over C of |grad| (Simonyan et al. 2014); "energy" -> sum over C of
    grad**2 (sensitivity analysis, Baehrens et al. 2010: a region's mass is its share of the
    gradient's squared length); "none" -> the raw gradient. Both rank pixels alike; on the cat
    quadrant canvas of tests/test_saliency.py the cat's quadrant holds 0.42-0.44 of the abs_max
    mass and 0.55-0.59 of the energy mass. abs_max stays the default: energy is in squared units
    and underflows float16 on small models.
    samples > 0: SmoothGrad, the mean gradient of `samples` copies with Gaussian noise of
    std noise * (max - min) of each image. batch_size caps images per forward pass (default: all
    of them without SmoothGrad; 8 on the CPU, 64 on a GPU with it). seed: an int (one generator
    on the images' device, fast; the same maps again for the same batch_size and device), None
    (seeded from torch's global RNG), or N ints, one per image, each image's noise then drawn
    on the CPU from its own generator: its map depends on neither its batch nor the device.
    SmoothGrad reduces the mean gradient (energy: squared norm of the mean, not mean of squares).
    Returns (N, H, W), or (N, K, H, W) for K targets/channels; (N, [K,] C, H, W) if reduce="none".
    The model is run in eval mode and left as found.
    """
    return gradient_maps(model, images, target, layer=layer, channel=channel, neuron=neuron, reduce=reduce,
                         samples=samples, noise=noise, seed=seed, batch_size=batch_size, progress=progress)


def gradient_maps(model, images, target, *, layer, channel, neuron, reduce, samples=0, noise=0.15, seed=None,
                  batch_size=None, progress=False) -> torch.Tensor:
    """The gradient core shared by the gradient techniques (guided backprop runs it under its mode)."""
    check_model(model)
    check_images(images, model)
    check_choice(reduce, "reduce", REDUCTIONS)
    samples = check_count(samples, "samples", 0)
    noise = check_fraction(noise, "noise (a fraction of each image's value range)")
    seed = check_seeds(seed, images.shape[0])
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    with evaluation_mode(model), gradients_enabled():
        images = usable_for_autograd(images)
        objective, multi = build_objective(model, images, target, layer, channel, neuron, predict_in_pass=samples == 0)
        if images.shape[0] == 0:
            grads = images.new_empty((0, objective.count, *images.shape[1:]))
        elif samples == 0:
            step = batch_size or images.shape[0]
            grads = torch.cat([input_gradients(model, objective.for_images(slice(begin, begin + step)),
                                               images[begin:begin + step])
                               for begin in range(0, images.shape[0], step)])
        else:
            batch_size = batch_size or (64 if images.is_cuda else 8)
            grads = smoothgrad(model, objective, images, samples, noise, seed, batch_size, progress)
    if reduce == "abs_max":
        maps = grads.abs().amax(dim=2)
    elif reduce == "energy":
        maps = grads.square().sum(dim=2)
    else:
        maps = grads
    return maps if multi else maps[:, 0]


def input_gradients(model: nn.Module, objective, x: torch.Tensor) -> torch.Tensor:
    """d scores / d x for each of the objective's K scores: (B, C, H, W) -> (B, K, C, H, W).

    K > 1 uses one batched backward pass (is_grads_batched) over one forward pass.
    """
    x = x.detach().requires_grad_(True)
    with _reentrant_checkpoints_refused():
        if objective.count == 1:
            (grad,) = torch.autograd.grad(objective(model, x).sum(), x)
            return grad[:, None]
        with run_eagerly(model):  # a torch.compile'd backward cannot be batched
            scores = objective(model, x)
            one_hot = torch.eye(objective.count, dtype=scores.dtype, device=scores.device)[:, None, :]
            (grads,) = torch.autograd.grad(scores, x, one_hot.expand(objective.count, *scores.shape),
                                           is_grads_batched=True)
    return grads.movedim(0, 1)


@contextmanager
def _reentrant_checkpoints_refused():
    """torch's error for reentrant activation checkpointing names .grad(), which the user never called."""
    try:
        yield
    except RuntimeError as error:
        if "use_reentrant=True" not in str(error):
            raise
        raise ValueError("the model uses reentrant activation checkpointing (torch.utils.checkpoint with "
                         "use_reentrant=True), which gives no input gradients: use use_reentrant=False or turn "
                         "checkpointing off for the call") from error


def smoothgrad(model, objective, images, samples, noise, seed, batch_size, progress) -> torch.Tensor:
    """Mean input gradient over `samples` noisy copies of images: groups of at most batch_size
    images, each group's copies stacked along the batch, at most batch_size rows per pass.
    Gradients are summed in float32 (or float64) and the mean returned in images' dtype."""
    draw_noise = noise_source(seed, images)
    sigma = noise * (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3)))
    groups = range(0, images.shape[0], batch_size)
    means = []
    with tqdm(total=samples * len(groups), desc="SmoothGrad", disable=not progress, leave=False) as bar:
        for begin in groups:
            group = images[begin:begin + batch_size]
            count = group.shape[0]
            group_objective = objective.for_images(slice(begin, begin + count))
            per_pass = max(1, batch_size // count)
            total = 0
            for start in range(0, samples, per_pass):
                copies = min(per_pass, samples - start)
                noisy = group.repeat(copies, 1, 1, 1) + sigma[begin:begin + count].repeat(copies)[:, None, None, None] \
                    * draw_noise(begin, count, copies)
                grads = input_gradients(model, group_objective, noisy).unflatten(0, (copies, count))
                total = total + widened(grads).sum(0)
                bar.update(copies)
            means.append((total / samples).to(images.dtype))
    return torch.cat(means)


def check_seeds(seed, count: int) -> int | list[int] | None:
    """seed as None, an int (check_seed), or a list of `count` ints in [0, 2^64); a
    TypeError/ValueError naming it otherwise."""
    if seed is None or isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return check_seed(seed)
    if isinstance(seed, (torch.Tensor, np.ndarray)) and seed.ndim == 1:
        seed = seed.tolist()
    if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence):
        raise TypeError(f"seed must be None, an int, or one int per image, got {type(seed).__name__}")
    seeds = [check_index(value, "each of seed's values") for value in seed]
    if len(seeds) != count or not all(0 <= value < 2**64 for value in seeds):
        raise ValueError(f"seed, one per image, must hold {count} ints in [0, 2^64), got {len(seeds)}: {seeds[:4]}...")
    return seeds


def noise_source(seed: int | list[int] | None, images: torch.Tensor):
    """A function (begin, count, copies) -> standard normal noise (copies * count, C, H, W) for
    `copies` copies of images[begin:begin + count], copy-major, in images' dtype and device.
    seed int or None: one generator on images' device; a list: image i's generator seeded with
    seed[i], drawn on the CPU, one (C, H, W) draw per copy in order."""
    if not isinstance(seed, list):
        generator = seeded_generator(seed, images.device)
        return lambda begin, count, copies: torch.randn((copies * count, *images.shape[1:]), generator=generator,
                                                        device=images.device, dtype=images.dtype)
    generators = [torch.Generator().manual_seed(value) for value in seed]

    def draw_noise(begin: int, count: int, copies: int) -> torch.Tensor:
        draws = [torch.randn(images.shape[1:], generator=generators[begin + i])
                 for _ in range(copies) for i in range(count)]
        return torch.stack(draws).to(images.device, images.dtype)

    return draw_noise
