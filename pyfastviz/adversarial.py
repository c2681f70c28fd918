"""Fooling images: projected gradient descent (Madry et al. 2018) and FGSM (Goodfellow et al. 2015).

The budget epsilon is in pixel units (the [0, 1] range of the photo); steps move the
normalised input by delta / std, so the photo-space perturbation stays inside the budget,
and the result stays inside the preprocessing's valid range.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._inputs import (
    check_choice,
    check_count,
    check_images,
    check_logits,
    check_model,
    check_positive,
    pixel_range,
    resolve_targets,
    widened,
)
from pyfastviz._state import evaluation_mode, gradients_enabled, usable_for_autograd
from pyfastviz.models import Preprocess, preprocess_of

NORMS = ("linf", "l2")


@dataclass
class AdversarialResult:
    """images (N, C, H, W) in model input space; perturbation (N, C, H, W) in pixel units;
    linf, l2 (N,) its norms in pixel units; steps (N,) gradient steps taken per image;
    success (N,) bool; predictions (N,) the model's classes for `images`."""

    images: torch.Tensor
    perturbation: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    steps: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor


def fooling_images(model: nn.Module, images: torch.Tensor, target=None, *, label=None, epsilon: float = 8 / 255,
                   norm: str = "linf", steps: int = 50, step_size: float | None = None,
                   preprocess: Preprocess | None = None, progress: bool = True) -> AdversarialResult:
    """Targeted (target= an int or N ints: make the model predict it) or untargeted (target=None:
    make it predict anything but `label`, default the clean prediction) fooling images by
    projected gradient steps, each image stopping once it succeeds.

    images: (N, C, H, W) preprocessed. epsilon: the budget of the perturbation in pixel units,
    L-inf or L2 over (C, H, W) per `norm`; an L-inf epsilon >= 1 is refused (any image would do).
    step_size: pixel units per step (default epsilon / 8 for L-inf, epsilon / 4 for L2).
    preprocess: its std and valid range (default preprocess_of(model)); the images stay in that
    range, and pixels already outside it are not pulled in (so the change stays within epsilon).
    The model is run in eval mode and left as found.
    """
    check_model(model)
    check_images(images, model)
    check_choice(norm, "norm", NORMS)
    epsilon = check_positive(epsilon, "epsilon (pixel units, e.g. 8/255)")
    if norm == "linf" and epsilon >= 1:
        raise ValueError(f"epsilon={epsilon!r} allows any image: L-inf epsilon is in pixel units of [0, 1] "
                         "(8/255 for 8 intensity levels)")
    steps = check_count(steps, "steps")
    step_size = epsilon / (8 if norm == "linf" else 4) if step_size is None else check_positive(step_size, "step_size")
    count = images.shape[0]
    preprocess = preprocess if preprocess is not None else preprocess_of(model, images.shape[-1])
    low, high = pixel_range(preprocess, images)
    low, high = torch.minimum(low, images), torch.maximum(high, images)  # pixels outside stay: |change| <= epsilon
    wide = widened(images.detach())  # delta and the image it makes are computed in float32 at least
    low, high = widened(low), widened(high)
    std = torch.tensor(preprocess.std, dtype=wide.dtype, device=images.device).view(3, 1, 1)
    targeted = target is not None
    with evaluation_mode(model), gradients_enabled():
        images = usable_for_autograd(images)
        if targeted:
            if label is not None:
                raise ValueError("label= (the true class) is for untargeted attacks: pass target= or label=, not both")
            classes = _one_class_per_image(target, count, "target")
        elif label is None:
            with torch.no_grad():
                classes = check_logits(model(images), takes_layer=False).argmax(1)
        else:
            classes = _one_class_per_image(label, count, "label")
        classes = classes.to(images.device)
        delta = torch.zeros_like(wide)  # pixel units
        taken = torch.zeros(count, dtype=torch.int64, device=images.device)
        for step in tqdm(range(steps + 1), desc="fooling images", disable=not progress, leave=False):
            x = _within_budget((wide + delta / std).clamp(low, high), images, wide).requires_grad_(True)
            logits = check_logits(model(x), classes, takes_layer=False)
            predictions = logits.argmax(1)
            success = predictions == classes if targeted else predictions != classes
            if success.all() or step == steps:
                break
            loss = F.cross_entropy(logits, classes, reduction="sum")
            (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
            grad = grad * std  # d loss / d delta in pixel units
            if norm == "linf":
                move = step_size * grad.sign()
            else:
                move = step_size * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            active = (~success).to(delta.dtype).view(-1, 1, 1, 1)
            delta = _project(delta + active * move.to(delta.dtype), epsilon, norm)
            taken += (~success).to(torch.int64)
    x = x.detach()
    perturbation = (widened(x) - wide) * std
    return AdversarialResult(images=x, perturbation=perturbation, linf=perturbation.flatten(1).abs().amax(1),
                             l2=perturbation.flatten(1).norm(dim=1), steps=taken, success=success,
                             predictions=predictions)


def _within_budget(wanted: torch.Tensor, images: torch.Tensor, wide: torch.Tensor) -> torch.Tensor:
    """`wanted` (in wide's dtype) in images' dtype, each element rounded toward its image where
    rounding moved it further away: no change exceeds the one asked for, so the perturbation
    stays inside the budget in fp16 and bf16 too. wide: images widened (float32 at least)."""
    x = wanted.to(images.dtype)
    if x.dtype == wanted.dtype:  # nothing was rounded
        return x.detach()
    overshoot = (widened(x) - wide).abs() > (wanted - wide).abs()
    return torch.where(overshoot, torch.nextafter(x, images), x).detach()


def _one_class_per_image(classes, count: int, name: str) -> torch.Tensor:
    """classes (an int or one per image) as (N,) indices; a list per image is refused."""
    indices, several = resolve_targets(classes, count)
    if several:
        raise ValueError(f"{name} must be one class per image (an int or N ints), got shape {tuple(indices.shape)}")
    return indices[:, 0]


def _project(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """Back into the epsilon ball of the norm, per image (pixel units)."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    scale = (epsilon / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale.view(-1, 1, 1, 1)


def fgsm(model: nn.Module, images: torch.Tensor, target=None, *, label=None, epsilon: float = 8 / 255,
         norm: str = "linf", preprocess: Preprocess | None = None) -> AdversarialResult:
    """One fast gradient (sign) step of size epsilon: fooling_images with steps=1, step_size=epsilon."""
    return fooling_images(model, images, target, label=label, epsilon=epsilon, norm=norm, steps=1,
                          step_size=epsilon, preprocess=preprocess, progress=False)
