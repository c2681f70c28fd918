"""The Fourier (decorrelated) image parameterisation: exact start, range, smoothness, engine errors."""

import pytest
import torch

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.classvis import class_visualization
from pyfastviz.models import Preprocess
from pyfastviz.objectives import ClassObjective
from pyfastviz.optimize import ClampRange, Jitter, optimize_images
from pyfastviz.parameterization import PIXEL_EPS, FourierImage
from test_optimize import high_frequency_energy


@pytest.mark.parametrize("height, width", [(16, 16), (15, 22), (1, 7)])
def test_spectrum_of_an_image_maps_back_to_it(height, width):
    preprocess = Preprocess(16)
    pixels = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0)).clamp(0.01, 0.99)
    fourier = FourierImage(preprocess, height, width)
    spectrum = fourier.spectrum(preprocess.normalize(pixels))
    assert spectrum.shape == (2, 3, height, width // 2 + 1, 2)
    torch.testing.assert_close(preprocess.denormalize(fourier.image(spectrum)), pixels, atol=1e-4, rtol=1e-4)


def test_any_spectrum_gives_pixels_in_range():
    preprocess = Preprocess(12)
    fourier = FourierImage(preprocess, 12, 12)
    wild = 100 * torch.randn(1, 3, 12, 7, 2, generator=torch.Generator().manual_seed(1))
    low, high = preprocess.valid_range()
    image = fourier.image(wild)
    assert ((image >= low - 1e-5) & (image <= high + 1e-5)).all()
    # pixels outside (eps, 1 - eps) are clamped on the way in
    spectrum = fourier.spectrum(preprocess.normalize(torch.ones(1, 3, 12, 12)))
    assert preprocess.denormalize(fourier.image(spectrum)).min() == pytest.approx(1 - PIXEL_EPS, abs=1e-4)


def test_white_spectrum_gives_a_smooth_image():
    """Equal-sized steps on every coefficient (what Adam takes) move the image along 1/f: the
    image of a white-noise spectrum has a small share of high-frequency energy, where white
    noise in pixels has 3/4 (measured 0.17 at 64 px)."""
    preprocess = Preprocess(64)
    fourier = FourierImage(preprocess, 64, 64)
    spectrum = 0.1 * torch.randn(1, 3, 64, 33, 2, generator=torch.Generator().manual_seed(0))
    change = preprocess.denormalize(fourier.image(spectrum)) - 0.5
    white = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert high_frequency_share(white) > 0.7 and high_frequency_share(change) < 0.25


def high_frequency_share(x):
    return high_frequency_energy(x) / torch.fft.fft2(x).abs().pow(2).sum()


def test_class_visualization_in_fourier_space_leaves_model_untouched():
    model = FunctionalReLUNet().train()
    before = model_state(model)
    result = class_visualization(model, [1, 3], size=16, steps=4, lr=0.1, start="noise", seed=0, progress=False,
                                 parameterization="fourier", regularizers=[], snapshot_every=2)
    assert_same_state(before, model_state(model))
    assert result.images.shape == (2, 3, 16, 16) and result.snapshots.shape == (2, 2, 3, 16, 16)
    assert torch.equal(result.snapshots[-1], result.images)
    assert (result.history[-1] > result.history[0]).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(parameterization="wavelet", preprocess=Preprocess(16)), "parameterization must be one of"),
    (dict(parameterization="fourier", preprocess=Preprocess(16), regularizers=[ClampRange.from_preprocess(Preprocess(16)), Jitter(2)]),
     "cannot use regularisers that change pixels after each step \\(ClampRange\\)"),
])
def test_bad_parameterization_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimize_images(FunctionalReLUNet(), ClassObjective(torch.tensor([[0]])), torch.zeros(1, 3, 16, 16),
                        steps=1, progress=False, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fourier_images_have_the_model_dtype(dtype):
    """The spectrum stays fp32; the image it makes is cast to the model's dtype (float64 and bf16
    models failed with a dtype mismatch in their first convolution)."""
    model = FunctionalReLUNet().to(dtype).eval()
    result = optimize_images(model, ClassObjective(torch.tensor([[0]])), torch.zeros(1, 3, 16, 16, dtype=dtype),
                             steps=2, progress=False, parameterization="fourier")  # preprocess: preprocess_of(model)
    assert result.images.dtype == dtype and torch.isfinite(result.images.float()).all()


def test_fourier_needs_three_channels_and_a_valid_decay():
    with pytest.raises(ValueError, match="3-channel"):
        optimize_images(FunctionalReLUNet(), ClassObjective(torch.tensor([[0]])), torch.zeros(1, 1, 8, 8),
                        parameterization="fourier", preprocess=Preprocess(8), progress=False)
    with pytest.raises(ValueError, match="decay_power"):
        FourierImage(Preprocess(8), 8, 8, decay_power=-1)
