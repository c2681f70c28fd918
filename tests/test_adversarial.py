"""Fooling images: PGD within a pixel budget, FGSM, arguments and model state."""

import pytest
import torch

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.adversarial import fgsm, fooling_images
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


def test_model_untouched_after_error():
    model = FunctionalReLUNet().train()
    before = model_state(model)
    with pytest.raises(ValueError, match="out of range"):
        fooling_images(model, torch.zeros(1, 3, 16, 16), 9, steps=2, progress=False)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epsilon": 0}, ValueError, "epsilon"),
    ({"epsilon": -0.1}, ValueError, "epsilon"),
    ({"steps": 0}, ValueError, "steps"),
    ({"step_size": 0}, ValueError, "step_size"),
    ({"norm": "l1"}, ValueError, "norm"),
    ({"target": 1, "label": 0}, ValueError, "label"),
    ({"target": "cat"}, TypeError, "target"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fooling_images(FunctionalReLUNet(), torch.zeros(1, 3, 16, 16), progress=False, **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="images"):
        fgsm(FunctionalReLUNet(), torch.zeros(3, 16, 16))
