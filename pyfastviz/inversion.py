"""Feature inversion (Mahendran & Vedaldi 2015): an image whose features at a named layer
match those of a given image, found by gradient descent on the pixels with a total-variation
prior, through the shared engine `pyfastviz.optimize.optimize_images`.

    loss(x) = ||phi(x) - phi0||^2 / ||phi0||^2 + tv_weight * TV(x) + l2_weight * mean(x^2)

phi0 is computed once from `images` (detached); pixels stay in the preprocessing's valid range.
"""

from dataclasses import dataclass

import torch
from torch import nn

from pyfastviz._random import seeded_generator
from pyfastviz._inputs import check_images, check_model, widened
from pyfastviz._state import evaluation_mode
from pyfastviz.models import Preprocess, check_layer_once, find_layer, layer_output, preprocess_of
from pyfastviz.optimize import L2, ClampRange, OptimizationResult, TotalVariation, optimize_images


def _weight(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def relative_feature_error(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||features - target||^2 / ||target||^2 per image: (N,), summed in float32 at least (the
    squares of an fp16 layer's features overflow its 65504)."""
    features, target = widened(features), widened(target)
    difference = (features - target).flatten(1).pow(2).sum(1)
    return difference / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)


class _FeatureMatch:
    """Objective for the engine: minus the relative feature error, per image (N,)."""

    def __init__(self, layer: str, target: torch.Tensor):
        self.layer, self.target = layer, target

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return -relative_feature_error(layer_output(model, self.layer, x), self.target)


@dataclass
class InversionResult(OptimizationResult):
    """OptimizationResult (history holds minus the relative feature error per step) plus
    feature_error (N,): the final ||phi(x) - phi0||^2 / ||phi0||^2 of each image."""

    feature_error: torch.Tensor | None = None


def invert_features(model: nn.Module, images: torch.Tensor, layer: str, *, steps: int = 200, lr: float = 0.05,
                    tv_weight: float = 1e-2, l2_weight: float = 0.0, start: str = "noise",
                    optimizer: str = "adam", preprocess: Preprocess | None = None, seed: int | None = None,
                    progress: bool = True, snapshot_every: int | None = None) -> InversionResult:
    """Reconstructs `images` (N, 3, H, W, model input space) from their features at `layer`
    (a `model.named_modules()` name whose module runs once per forward).

    start: "noise" (N(0, 0.1^2) in input space, seeded) or "blank" (zeros, the mean colour).
    tv_weight / l2_weight: weights of the total-variation (beta = 2) and L2 priors (0 = off).
    preprocess gives the valid pixel range (default: preprocess_of(model)).
    Returns an InversionResult: .images (N, 3, H, W), .history (steps, N), .feature_error (N,).
    The model runs in eval mode and is left as found.
    """
    check_model(model)
    check_images(images, model)
    if images.shape[1] != 3:
        raise ValueError(f"images must be RGB, (N, 3, H, W) (the reconstruction keeps to preprocess's RGB range), "
                         f"got shape {tuple(images.shape)}")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
    find_layer(model, layer)
    if start not in ("noise", "blank"):
        raise ValueError(f"start must be 'noise' or 'blank', got {start!r}")
    tv_weight, l2_weight = _weight(tv_weight, "tv_weight"), _weight(l2_weight, "l2_weight")
    preprocess = preprocess if preprocess is not None else preprocess_of(model, images.shape[-1])
    with evaluation_mode(model):
        target = check_layer_once(model, layer, images).detach()
    if start == "blank":
        initial = torch.zeros_like(images)
    else:
        generator = seeded_generator(seed)
        initial = (0.1 * torch.randn(images.shape, generator=generator, dtype=images.dtype)).to(images.device)
    regularizers = []
    if tv_weight > 0:
        regularizers.append(TotalVariation(tv_weight))
    if l2_weight > 0:
        regularizers.append(L2(l2_weight))
    regularizers.append(ClampRange.from_preprocess(preprocess))
    result = optimize_images(model, _FeatureMatch(layer, target), initial, steps=steps, lr=lr, optimizer=optimizer,
                             regularizers=regularizers, seed=seed, progress=progress,
                             snapshot_every=snapshot_every, desc="feature inversion")
    with evaluation_mode(model), torch.no_grad():
        error = relative_feature_error(layer_output(model, layer, result.images), target)
    return InversionResult(images=result.images, snapshots=result.snapshots, snapshot_steps=result.snapshot_steps,
                           history=result.history, feature_error=error)
