"""DeepDream (Mordvintsev et al. 2015): amplify what a named layer sees in an image.

Gradient ascent on the pixels of mean(activation^2) of the layer, over an image pyramid
from small to large (octaves), carrying the added detail up from one octave to the next,
with random jitter (roll) each step and the standard normalised step
x += lr * g / mean|g| (per image). Pixels stay in the preprocessing's valid range.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._random import seeded_generator
from pyfastviz._inputs import check_count, check_images, check_model, check_positive, pixel_range, widened
from pyfastviz._state import evaluation_mode, gradients_enabled, usable_for_autograd
from pyfastviz.models import Preprocess, check_layer_once, find_layer, layer_output, preprocess_of

MIN_OCTAVE_SIDE = 16


@dataclass
class DeepDreamResult:
    """images (N, C, H, W) in model input space, the input's shape; history
    (octaves * steps_per_octave, N) the objective mean(activation^2) before each step;
    octave_sizes the (H, W) of each octave, smallest first."""

    images: torch.Tensor
    history: torch.Tensor
    octave_sizes: list[tuple[int, int]]

    def to_pil(self, preprocess) -> list:
        """The images as PIL images, via preprocess.denormalize (a zoo.Preprocess)."""
        from pyfastviz.models import tensor_to_pils

        return tensor_to_pils(preprocess.denormalize(self.images.detach().cpu()))


def layer_energy(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """mean(activation^2) of `layer` per image, (N,), in float32 at least, with the graph (what
    DeepDream raises)."""
    return widened(layer_output(model, layer, images)).flatten(1).pow(2).mean(1)


def _resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """images antialiased to `size` (themselves at their own size), computed in fp32 at least (no
    bf16 antialias on the CPU) and returned in their dtype."""
    if size == tuple(images.shape[-2:]):
        return images
    wide = images.to(torch.promote_types(images.dtype, torch.float32))
    return F.interpolate(wide, size=size, mode="bilinear", align_corners=False, antialias=True).to(images.dtype)


def _check_smallest_octave(model: nn.Module, layer: str, images: torch.Tensor, size: tuple[int, int],
                           octaves: int, octave_scale: float) -> None:
    """The layer checks of check_layer_once, run at the smallest octave's size before any work: a
    model that cannot take that size (sides not a multiple of 32, say) is named with the octave."""
    smallest = _resized(images, size)
    try:
        check_layer_once(model, layer, smallest)
    except RuntimeError as error:
        if smallest is images:
            raise
        raise ValueError(f"the model fails on the smallest octave's {size[0]}x{size[1]} px input (octaves={octaves}, "
                         f"octave_scale={octave_scale}): {error}; use fewer octaves or another octave_scale") from error


def octave_sizes(height: int, width: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """(H, W) per octave, smallest first, the last one the input's."""
    return [(max(1, round(height / octave_scale ** k)), max(1, round(width / octave_scale ** k)))
            for k in reversed(range(octaves))]


def deepdream(model: nn.Module, images: torch.Tensor, layer: str, *, octaves: int = 3, octave_scale: float = 1.4,
              steps_per_octave: int = 10, lr: float = 0.05, jitter: int = 8, preprocess: Preprocess | None = None,
              seed: int | None = None, progress: bool = True) -> DeepDreamResult:
    """Dreams on `images` (N, 3, H, W, model input space) by amplifying `layer` (a
    `model.named_modules()` name whose module runs once per forward).

    octaves: pyramid levels (1 = no pyramid); octave_scale > 1: size ratio between levels (the
    smallest side must stay >= 16 px). lr: step size in input units after dividing the gradient
    by its mean absolute value. jitter: max random roll in px per step (0 = none).
    preprocess gives the valid pixel range (default: preprocess_of(model)).
    The model runs in eval mode and is left as found; only the image's gradient is computed.
    """
    check_model(model)
    check_images(images, model)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
    find_layer(model, layer)
    octaves = check_count(octaves, "octaves")
    if isinstance(octave_scale, bool) or not isinstance(octave_scale, (int, float)) or not octave_scale > 1:
        raise ValueError(f"octave_scale must be a number > 1, got {octave_scale!r}")
    steps_per_octave = check_count(steps_per_octave, "steps_per_octave")
    jitter = check_count(jitter, "jitter", 0)
    lr = check_positive(lr, "lr")
    height, width = images.shape[-2:]
    sizes = octave_sizes(height, width, octaves, octave_scale)
    if min(sizes[0]) < MIN_OCTAVE_SIDE:
        raise ValueError(f"octaves={octaves} with octave_scale={octave_scale} shrinks the {height}x{width} images "
                         f"to {sizes[0][0]}x{sizes[0][1]} px; the smallest octave needs sides >= {MIN_OCTAVE_SIDE} px "
                         "(use fewer octaves or a smaller octave_scale)")
    preprocess = preprocess if preprocess is not None else preprocess_of(model, width)
    low, high = pixel_range(preprocess, images)
    generator = seeded_generator(seed)
    history = []
    with evaluation_mode(model), gradients_enabled():
        source = usable_for_autograd(images.detach())
        _check_smallest_octave(model, layer, source, sizes[0], octaves, octave_scale)
        detail = torch.zeros_like(source[..., :sizes[0][0], :sizes[0][1]])
        bar = tqdm(total=octaves * steps_per_octave, desc="deepdream", disable=not progress, leave=False)
        try:
            for size in sizes:
                base = _resized(source, size)
                if detail.shape[-2:] != size:
                    detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
                x = torch.maximum(torch.minimum(base + detail, high), low)
                for _ in range(steps_per_octave):
                    dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                              if jitter else (0, 0))
                    x.requires_grad_(True)
                    energy = layer_energy(model, layer, torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
                    (grad,) = torch.autograd.grad(energy.sum(), x)
                    history.append(energy.detach())
                    with torch.no_grad():
                        scale = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                        x = torch.maximum(torch.minimum(x.detach() + lr * grad / scale, high), low)
                    bar.update()
                detail = x.detach() - base
        finally:
            bar.close()
    return DeepDreamResult(images=x.detach(), history=torch.stack(history), octave_sizes=sizes)
