"""Fooling images: PGD within a pixel budget, FGSM, arguments and model state."""

import pytest
import torch
from torch import nn

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.adversarial import fgsm, fooling_images
from pyfastviz.deepdream import deepdream
from pyfastviz.models import Preprocess, sample_image


@pytest.fixture(scope="module")
def chelsea(default_model):
    return default_model.preprocess(sample_image("chelsea"))[None]


@pytest.mark.slow
def test_chelsea_becomes_goldfish_within_8_of_255(default_model, chelsea):
    net, preprocess = default_model.net, default_model.preprocess
    goldfish = default_model.class_index("goldfish")
    before = model_state(net)
    result = fooling_images(net, chelsea, goldfish, epsilon=8 / 255, steps=30, preprocess=preprocess, progress=False)
    assert_same_state(before, model_state(net))
    assert result.success.tolist() == [True] and result.predictions.tolist() == [goldfish]
    with torch.no_grad():
        assert net(result.images).argmax(1).tolist() == [goldfish]
    measured = ((result.images - chelsea) * torch.tensor(preprocess.std).view(3, 1, 1)).abs().max()
    assert measured <= 8 / 255 + 1e-6 and torch.allclose(result.linf, measured[None])
    assert 1 <= result.steps.item() <= 30
    low, high = preprocess.valid_range()
    assert ((result.images >= low - 1e-6) & (result.images <= high + 1e-6)).all()


@pytest.mark.slow
def test_fgsm_lowers_the_true_class(default_model, chelsea):
    net = default_model.net
    result = fgsm(net, chelsea, epsilon=8 / 255, preprocess=default_model.preprocess)
    with torch.no_grad():
        clean = net(chelsea).softmax(1)
        label = clean.argmax(1)
        fooled = net(result.images).softmax(1)
    assert result.steps.tolist() == [1] and result.linf.item() <= 8 / 255 + 1e-6
    assert result.predictions.item() != label.item() or fooled[0, label] < clean[0, label]


def test_l2_budget_and_untargeted_flip_on_a_tiny_model():
    torch.manual_seed(0)
    model = FunctionalReLUNet().train()
    before = model_state(model)
    images = Preprocess(16).normalize(torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    result = fooling_images(model, images, epsilon=2.0, norm="l2", steps=50, preprocess=Preprocess(16),
                            progress=False)
    assert_same_state(before, model_state(model))
    assert (result.l2 <= 2.0 + 1e-5).all()
    assert torch.allclose(result.l2, result.perturbation.flatten(1).norm(dim=1))
    with torch.no_grad():
        clean = model.eval()(images).argmax(1)
    model.train()
    assert torch.equal(result.success, result.predictions != clean)
    assert result.success.any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm, epsilon", [("linf", 8 / 255), ("l2", 0.5)])
def test_16_bit_models_keep_the_perturbation_inside_the_budget(dtype, norm, epsilon):
    """Images rounded to bf16/fp16 after each step may land further out than the step asked."""
    torch.manual_seed(0)
    model = FunctionalReLUNet().to(dtype)
    images = Preprocess(16).normalize(torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    images = images.to(dtype)
    result = fooling_images(model, images, 3, epsilon=epsilon, norm=norm, steps=20, preprocess=Preprocess(16),
                            progress=False)
    std = torch.tensor(Preprocess(16).std, dtype=torch.float64).view(3, 1, 1)
    change = ((result.images.double() - images.double()) * std).flatten(1)
    size = change.abs().amax(1) if norm == "linf" else change.norm(dim=1)
    assert (size <= epsilon * (1 + 1e-6)).all() and size.max() > 0.5 * epsilon
    torch.testing.assert_close(result.linf.double(), change.abs().amax(1), rtol=1e-6, atol=0)


def test_results_carry_no_graph_of_an_input_that_requires_grad():
    images = torch.randn(2, 3, 16, 16, requires_grad=True)
    result = fooling_images(FunctionalReLUNet(), images, 1, steps=2, preprocess=Preprocess(16), progress=False)
    assert not any(t.requires_grad for t in (result.images, result.perturbation, result.linf, result.l2))


def test_model_untouched_after_error():
    model = FunctionalReLUNet().train()
    before = model_state(model)
    with pytest.raises(ValueError, match="out of range"):
        fooling_images(model, torch.zeros(1, 3, 16, 16), 9, steps=2, progress=False)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epsilon": 0}, ValueError, "epsilon"),
    ({"epsilon": -0.1}, ValueError, "epsilon"),
    ({"epsilon": 8}, ValueError, r"epsilon=8.0 allows any image.*8/255"),  # 1/255 units, as the CLI takes them
    ({"steps": 0}, ValueError, "steps"),
    ({"step_size": 0}, ValueError, "step_size"),
    ({"norm": "l1"}, ValueError, "norm"),
    ({"target": 1, "label": 0}, ValueError, "label"),
    ({"target": "cat"}, TypeError, "target"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fooling_images(FunctionalReLUNet(), torch.zeros(1, 3, 16, 16), progress=False, **kwargs)


def test_pixels_outside_the_valid_range_keep_the_change_within_epsilon():
    """Inputs a little outside the preprocessing's range (another normalisation, say) are not
    pulled into it: that would change them by more than the budget."""
    images = Preprocess(16).normalize(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))) * 1.5
    result = fooling_images(FunctionalReLUNet(), images, epsilon=2 / 255, steps=3, progress=False)
    assert (result.linf <= 2 / 255 + 1e-6).all()
    low, high = Preprocess(16).valid_range()
    inside = (images >= low) & (images <= high)
    assert ((result.images >= low) & (result.images <= high))[inside].all()


@pytest.mark.parametrize("technique", [fooling_images, lambda model, images, **kwargs: deepdream(
    model, images, "1", steps_per_octave=1, octaves=1, **kwargs)], ids=["fooling_images", "deepdream"])
def test_gray_images_are_not_broadcast_to_rgb(technique):
    """The default preprocessing normalises 3 channels: 1-channel images would silently become 3."""
    gray_model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="images must have 3 channels"):
        technique(gray_model, torch.zeros(1, 1, 16, 16), progress=False)


def test_bad_images():
    with pytest.raises(ValueError, match="images"):
        fgsm(FunctionalReLUNet(), torch.zeros(3, 16, 16))
