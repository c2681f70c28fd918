"""Images by gradient ascent: the optimisation engine shared by class visualisation and friends.

The image is optimised directly as pixels in the model's normalised input space (N, C, H, W).
Regularisers are small objects with up to three jobs, each a method with a no-op default:
`penalty(x)` a per-image loss term (N,) to minimise; `transform(x, generator)` a
differentiable change of the image before the forward pass; `project(x, grad, step)` an
in-place change of the pixels after each optimiser step (under no_grad).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._random import seeded_generator
from pyfastviz._inputs import check_choice, check_count, check_fraction, check_images, check_model, check_positive
from pyfastviz._state import evaluation_mode, gradients_enabled
from pyfastviz.models import preprocess_of
from pyfastviz.parameterization import FourierImage

OPTIMIZERS = ("adam", "lbfgs")


class Regularizer:
    """Base class: override any of penalty / transform / project."""

    def penalty(self, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def transform(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def project(self, x: torch.Tensor, grad: torch.Tensor, step: int) -> None:
        return None


class L2(Regularizer):
    """Loss term weight * mean of x^2 over (C, H, W): pulls pixels to the mean colour (weight 0: off)."""

    def __init__(self, weight: float = 1e-2):
        self.weight = check_fraction(weight, "weight")

    def penalty(self, x):
        return self.weight * x.pow(2).flatten(1).mean(1)


class TotalVariation(Regularizer):
    """Loss term weight * mean over pixels of (dx^2 + dy^2)^(beta / 2) (Mahendran & Vedaldi 2015;
    weight 0: off)."""

    def __init__(self, weight: float = 1e-2, beta: float = 2.0):
        self.weight, self.beta = check_fraction(weight, "weight"), check_positive(beta, "beta")

    def penalty(self, x):
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        squared = (dx.pow(2) + dy.pow(2)).sum(1)
        tv = squared if self.beta == 2 else (squared + 1e-8).pow(self.beta / 2)
        return self.weight * tv.flatten(1).mean(1)


class Jitter(Regularizer):
    """Rolls the batch by a random (dy, dx) in [-pixels, pixels] before each forward pass (0: off).

    torch.roll is differentiable, so the gradient reaching the image is un-shifted.
    """

    def __init__(self, pixels: int = 4):
        if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
            raise ValueError(f"pixels must be an int >= 0, got {pixels!r}")
        self.pixels = pixels
        self.last_shift: tuple[int, int] = (0, 0)

    def transform(self, x, generator):
        dy, dx = torch.randint(-self.pixels, self.pixels + 1, (2,), generator=generator).tolist()
        self.last_shift = (dy, dx)
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), kernel radius ceil(3 sigma), reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-offsets.pow(2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class Blur(Regularizer):
    """Gaussian blur of the image with `sigma` px every `every` steps (removes high frequencies;
    sigma 0: off)."""

    def __init__(self, sigma: float = 0.5, every: int = 4):
        self.sigma, self.every = check_fraction(sigma, "sigma"), check_count(every, "every")

    def project(self, x, grad, step):
        if self.sigma > 0 and (step + 1) % self.every == 0:
            x.copy_(gaussian_blur(x, self.sigma))


class _PercentileClip(Regularizer):
    """Every `every` steps, sets the floor(percentile / 100 * H * W) lowest-scoring pixels of
    each image to 0 (the mean colour), all channels."""

    def __init__(self, percentile: float, every: int = 1):
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile < 100:
            raise ValueError(f"percentile must be a number in [0, 100), got {percentile!r}")
        self.percentile, self.every = percentile, check_count(every, "every")

    def scores(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x, grad, step):
        if (step + 1) % self.every:
            return
        score = self.scores(x, grad).flatten(1)
        count = int(self.percentile / 100 * score.shape[1])
        if count == 0:
            return
        mask = torch.ones_like(score)
        mask.scatter_(1, score.argsort(1)[:, :count], 0.0)
        x.mul_(mask.view(x.shape[0], 1, *x.shape[2:]))


class ClipNorm(_PercentileClip):
    """Clips pixels of small norm (L2 over channels) to 0 (Yosinski et al. 2015)."""

    def scores(self, x, grad):
        return x.norm(dim=1)


class ClipContribution(_PercentileClip):
    """Clips pixels of small contribution |x * grad| summed over channels to 0 (Yosinski et al. 2015)."""

    def scores(self, x, grad):
        return (x * grad).abs().sum(1)


class ClampRange(Regularizer):
    """Keeps every pixel inside per-channel [low, high], e.g. Preprocess.valid_range() (3, 1, 1) each."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor):
        if not isinstance(low, torch.Tensor) or not isinstance(high, torch.Tensor):
            raise TypeError("low and high must be tensors broadcastable to (C, H, W), e.g. Preprocess.valid_range()")
        if not (low < high).all():
            raise ValueError("low must be below high in every channel")
        self.low, self.high = low, high

    @classmethod
    def from_preprocess(cls, preprocess) -> "ClampRange":
        return cls(*preprocess.valid_range())

    def project(self, x, grad, step):
        x.copy_(torch.maximum(torch.minimum(x, self.high.to(x)), self.low.to(x)))


@dataclass
class OptimizationResult:
    """images (N, C, H, W) in model input space; snapshots (S, N, C, H, W) taken after the steps
    listed in snapshot_steps (None unless asked for); history (steps, N) objective per step."""

    images: torch.Tensor
    snapshots: torch.Tensor | None
    snapshot_steps: list[int]
    history: torch.Tensor

    def to_pil(self, preprocess) -> list:
        """The final images as PIL images, via preprocess.denormalize (a zoo.Preprocess)."""
        from pyfastviz.models import tensor_to_pils

        return tensor_to_pils(preprocess.denormalize(self.images.detach().cpu()))


def optimize_images(model: nn.Module, objective: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                    start: torch.Tensor, *, steps: int = 100, lr: float = 0.05, optimizer: str = "adam",
                    regularizers: Sequence[Regularizer] = (), seed: int | None = None, progress: bool = True,
                    snapshot_every: int | None = None, desc: str = "optimise",
                    parameterization: str = "pixels", preprocess=None) -> OptimizationResult:
    """Maximises objective(model, image) (scores (N,) or (N, K), summed over K) minus the
    regularisers' penalties, from `start` (N, C, H, W), with Adam or L-BFGS (one iteration per
    step, fixed step size lr; best without random transforms). The model runs in eval mode;
    only the image's gradient is computed, nothing is written to the model. Pixels are stepped
    in float32 at least (a master copy for fp16/bf16 models) and returned in start's dtype.

    parameterization: "pixels" (optimise the image itself) or "fourier" (optimise a decorrelated,
    1/f-scaled spectrum that starts at `start`: see pyfastviz.parameterization.FourierImage; uses
    `preprocess` (default preprocess_of(model)), needs 3-channel images and no regulariser that
    projects pixels — the sigmoid keeps them in range).
    """
    check_model(model)
    check_images(start, model)
    if preprocess is None:
        preprocess = preprocess_of(model, start.shape[-1])
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    steps = check_count(steps, "steps")
    check_positive(lr, "lr")
    if snapshot_every is not None:
        check_count(snapshot_every, "snapshot_every")
    if not all(isinstance(r, Regularizer) for r in regularizers):
        raise TypeError("regularizers must be pyfastviz.optimize.Regularizer objects")
    for r in regularizers:
        if isinstance(r, ClampRange) and r.low.dim() == 3 and r.low.shape[0] not in (1, start.shape[1]):
            raise ValueError(f"ClampRange has bounds for {r.low.shape[0]} channels (a preprocess's RGB range) but the "
                             f"images have {start.shape[1]}: pass regularizers without it, or ClampRange bounds "
                             "of your images' channels")
    with gradients_enabled():
        return _ascend(model, objective, start, steps, lr, optimizer, regularizers, seed, progress, snapshot_every,
                       desc, parameterization, preprocess)


def _ascend(model, objective, start, steps, lr, optimizer, regularizers, seed, progress, snapshot_every, desc,
            parameterization, preprocess) -> OptimizationResult:
    """optimize_images' loop, its arguments checked."""
    generator = seeded_generator(seed)
    to_image, x = _parameterize(parameterization, start, preprocess, regularizers)
    x.requires_grad_(True)
    solver = torch.optim.Adam([x], lr=lr) if optimizer == "adam" else torch.optim.LBFGS([x], lr=lr, max_iter=1)
    history, snapshots, snapshot_steps = [], [], []
    last = {}

    def closure():
        image = to_image(x)
        view = image
        for regularizer in regularizers:
            view = regularizer.transform(view, generator)
        scores = objective(model, view)
        scores = scores.reshape(x.shape[0], -1).sum(1)
        loss = -scores.sum()
        for regularizer in regularizers:
            term = regularizer.penalty(image)
            if term is not None:
                loss = loss + term.sum()
        (x.grad,) = torch.autograd.grad(loss, x)
        last["scores"] = scores.detach()
        return loss

    with evaluation_mode(model):
        for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            solver.step(closure)
            with torch.no_grad():
                for regularizer in regularizers:
                    regularizer.project(x, x.grad, step)
            history.append(last["scores"])
            if snapshot_every is not None and (step + 1) % snapshot_every == 0:
                with torch.no_grad():
                    snapshots.append(to_image(x).detach().clone())
                snapshot_steps.append(step + 1)
    with torch.no_grad():
        images = to_image(x).detach()
    return OptimizationResult(images=images, snapshots=torch.stack(snapshots) if snapshots else None,
                              snapshot_steps=snapshot_steps, history=torch.stack(history))


PARAMETERIZATIONS = ("pixels", "fourier")


def _parameterize(parameterization: str, start: torch.Tensor, preprocess, regularizers) -> tuple[Callable, torch.Tensor]:
    """(variable -> image, the variable's start value) for the chosen parameterisation."""
    check_choice(parameterization, "parameterization", PARAMETERIZATIONS)
    if parameterization == "pixels":  # a float32 master image for fp16/bf16 models (fp16 Adam steps gave NaN)
        master = torch.promote_types(start.dtype, torch.float32)
        return (lambda x: x.to(start.dtype)), start.detach().to(master, copy=True)
    if start.shape[1] != 3:
        raise ValueError(f"parameterization='fourier' needs 3-channel images, got start of shape {tuple(start.shape)}")
    projecting = [type(r).__name__ for r in regularizers if type(r).project is not Regularizer.project]
    if projecting:
        raise ValueError(f"parameterization='fourier' cannot use regularisers that change pixels after each step "
                         f"({', '.join(projecting)}): pass penalties and transforms only (e.g. L2, TotalVariation, Jitter)")
    fourier = FourierImage(preprocess, *start.shape[2:])
    return (lambda spectrum: fourier.image(spectrum).to(start.dtype)), fourier.spectrum(start)  # spectrum: fp32
