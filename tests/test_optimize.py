"""The image-optimisation engine and each regulariser, on small tensors and a tiny model."""

import pytest
import torch

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.models import Preprocess
from pyfastviz.objectives import ClassObjective
from pyfastviz.optimize import (
    L2,
    Blur,
    ClampRange,
    ClipContribution,
    ClipNorm,
    Jitter,
    TotalVariation,
    optimize_images,
)


def high_frequency_energy(x):
    """Energy of the (H, W) spectrum outside the central quarter of frequencies."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x).abs().pow(2), dim=(-2, -1))
    h, w = x.shape[-2:]
    spectrum[..., h // 4:3 * h // 4, w // 4:3 * w // 4] = 0
    return spectrum.sum()


def test_blur_lowers_high_frequency_energy():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = x.clone()
    Blur(sigma=1.0, every=2).project(blurred, None, step=1)
    assert high_frequency_energy(blurred) < 0.1 * high_frequency_energy(x)
    assert torch.allclose(blurred.mean(), x.mean(), atol=0.05)  # a low-pass filter keeps the mean
    untouched = x.clone()
    Blur(sigma=1.0, every=2).project(untouched, None, step=0)  # not a blur step
    assert torch.equal(untouched, x)


def test_clip_norm_zeroes_exactly_the_smallest_pixels():
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    clipped = x.clone()
    ClipNorm(percentile=25).project(clipped, None, step=0)
    zero = (clipped == 0).all(1)
    assert zero.flatten(1).sum(1).tolist() == [25, 25]
    norms = x.norm(dim=1).flatten(1)
    for n in range(2):  # the zeroed pixels are the 25 of smallest norm; the rest are untouched
        assert set(norms[n].argsort()[:25].tolist()) == set(zero[n].flatten().nonzero()[:, 0].tolist())
    assert torch.equal(clipped[~zero[:, None].expand_as(x)], x[~zero[:, None].expand_as(x)])


def test_clip_contribution_uses_x_times_grad():
    x = torch.ones(1, 3, 4, 4)
    grad = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)  # pixel i contributes 3 * i
    ClipContribution(percentile=50, every=1).project(x, grad, step=0)
    assert torch.equal((x[0, 0] == 0).flatten(), torch.arange(16) < 8)


def test_jitter_shifts_and_gradient_unshifts():
    jitter = Jitter(pixels=3)
    x = torch.randn(1, 2, 9, 9, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weights = torch.randn(1, 2, 9, 9, generator=torch.Generator().manual_seed(3))
    shifts = set()
    generator = torch.Generator().manual_seed(4)
    for _ in range(20):
        shifted = jitter.transform(x, generator)
        dy, dx = jitter.last_shift
        shifts.add((dy, dx))
        assert max(abs(dy), abs(dx)) <= 3
        assert torch.equal(shifted, torch.roll(x, (dy, dx), (2, 3)))
        (grad,) = torch.autograd.grad((shifted * weights).sum(), x)
        assert torch.equal(grad, torch.roll(weights, (-dy, -dx), (2, 3)))
    assert len(shifts) > 5


@pytest.mark.parametrize("regularizer", [L2(0.5), TotalVariation(0.5), TotalVariation(0.5, beta=1.0)])
def test_penalties_decrease_under_their_own_gradient(regularizer):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), requires_grad=True)
    before = regularizer.penalty(x)
    assert before.shape == (2,) and (before > 0).all()
    (grad,) = torch.autograd.grad(before.sum(), x)
    after = regularizer.penalty(x.detach() - 0.1 * grad / grad.abs().max())
    assert (after < before).all()


def test_clamp_range_keeps_pixels_valid():
    preprocess = Preprocess(8)
    low, high = preprocess.valid_range()
    x = 5 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ClampRange.from_preprocess(preprocess).project(x, None, step=0)
    assert ((x >= low) & (x <= high)).all()
    assert (x == low).any() and (x == high).any()  # values outside were moved to the bounds


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_optimize_raises_objective_and_leaves_model_untouched(optimizer):
    torch.manual_seed(0)
    model = FunctionalReLUNet().train()
    before = model_state(model)
    start = torch.zeros(2, 3, 16, 16)
    result = optimize_images(model, ClassObjective(torch.tensor([[1], [3]])), start, steps=6, lr=0.1,
                             optimizer=optimizer, regularizers=[L2(1e-3), ClampRange.from_preprocess(Preprocess(16))],
                             seed=0, progress=False, snapshot_every=2)
    assert_same_state(before, model_state(model))
    assert result.images.shape == (2, 3, 16, 16) and not result.images.requires_grad
    assert result.history.shape == (6, 2)
    assert (result.history[-1] > result.history[0]).all()
    assert result.snapshots.shape == (3, 2, 3, 16, 16) and result.snapshot_steps == [2, 4, 6]
    assert torch.equal(result.snapshots[-1], result.images)
    assert torch.equal(start, torch.zeros(2, 3, 16, 16))


def test_optimize_is_reproducible_with_seed():
    model = FunctionalReLUNet()
    run = lambda: optimize_images(model, ClassObjective(torch.tensor([[0]])), torch.zeros(1, 3, 16, 16), steps=4,
                                  regularizers=[Jitter(2)], seed=7, progress=False).images
    assert torch.equal(run(), run())


def test_model_untouched_after_error():
    model = FunctionalReLUNet().train()
    before = model_state(model)
    with pytest.raises(ValueError, match="out of range"):
        optimize_images(model, ClassObjective(torch.tensor([[9]])), torch.zeros(1, 3, 16, 16), steps=2, progress=False)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"steps": 0}, ValueError, "steps"),
    ({"lr": 0}, ValueError, "lr"),
    ({"optimizer": "sgd"}, ValueError, "optimizer"),
    ({"snapshot_every": 0}, ValueError, "snapshot_every"),
    ({"regularizers": [lambda x: x]}, TypeError, "regularizers"),
])
def test_optimize_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimize_images(FunctionalReLUNet(), ClassObjective(torch.tensor([[0]])), torch.zeros(1, 3, 16, 16),
                        progress=False, **kwargs)


@pytest.mark.parametrize("build, match", [
    (lambda: Blur(sigma=-1), "sigma"), (lambda: Blur(every=0), "every"), (lambda: Jitter(-1), "pixels"),
    (lambda: ClipNorm(100), "percentile"), (lambda: L2(-1), "weight"), (lambda: TotalVariation(beta=0), "beta"),
    (lambda: TotalVariation(weight=float("nan")), "weight"),
])
def test_regularizer_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_regularizers_of_strength_zero_change_nothing():
    """A sweep over strengths starts at 0: each regulariser then leaves the run as without it."""
    net = FunctionalReLUNet()

    def run(regularizers):
        return optimize_images(net, ClassObjective(torch.tensor([[1]])),
                               torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), steps=5,
                               regularizers=regularizers, seed=0, progress=False).images

    plain = run([])
    for off in (L2(0), TotalVariation(0), Blur(sigma=0, every=1), Jitter(0), ClipNorm(0), ClipContribution(0)):
        assert torch.equal(run([off]), plain), off


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_models_step_a_float32_master_image(dtype):
    """Adam on an fp16 image turned zero gradients into NaN (its eps rounds to 0) within one step:
    the image is stepped in float32 and given back in the model's dtype."""
    from pyfastviz import class_visualization, invert_features

    torch.manual_seed(0)
    model = FunctionalReLUNet().eval().to(dtype)
    vis = class_visualization(model, 3, size=32, steps=5, seed=0, progress=False)
    target = torch.rand(1, 3, 32, 32, dtype=dtype)
    inverted = invert_features(model, target, "conv3", steps=5, seed=0, progress=False)
    for images in (vis.images, inverted.images):
        assert images.dtype == dtype and torch.isfinite(images).all()
    assert torch.isfinite(inverted.feature_error).all()
    assert vis.history[-1, 0] > vis.history[0, 0]


def test_grayscale_images_get_a_clear_error_from_rgb_bounds_and_preprocess():
    gray = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    gray(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="ClampRange has bounds for 3 channels .* the images have 1"):
        optimize_images(gray, ClassObjective(torch.tensor([[0]])), torch.zeros(1, 1, 8, 8), steps=1,
                        regularizers=[ClampRange.from_preprocess(Preprocess(8))], progress=False)
    plain = optimize_images(gray, ClassObjective(torch.tensor([[0]])), torch.zeros(1, 1, 8, 8), steps=2,
                            regularizers=[L2(1e-3)], progress=False)  # without RGB bounds it works
    assert plain.images.shape == (1, 1, 8, 8)
    for mean, std in [((0.5,), (0.25,)), ((0.5, 0.5, float("nan")), (1, 1, 1)), ((0, 0, 0), (1, 0, 1))]:
        with pytest.raises(ValueError, match="Preprocess (mean|std) must"):
            Preprocess(8, mean=mean, std=std)
