"""Class and neuron visualisation: the pretrained model's class rises; arguments and model state."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.classvis import class_visualization
from pyfastviz.models import Preprocess


@pytest.mark.slow
def test_goldfish_visualisation_is_confidently_goldfish(default_model):
    """From a noise start, 20 Adam steps at 128 px with the default regularisers raise the
    goldfish softmax probability to >= 0.9 (measured 0.9996; about 10 s on 2 CPU cores)."""
    net, preprocess = default_model.net, default_model.preprocess
    goldfish = default_model.class_index("goldfish")
    before = model_state(net)
    result = class_visualization(net, goldfish, size=128, steps=20, lr=0.1, start="noise", seed=0,
                                 preprocess=preprocess, progress=False, snapshot_every=10)
    assert_same_state(before, model_state(net))
    with torch.no_grad():
        probability = net(result.images).softmax(1)[0, goldfish].item()
    assert probability >= 0.9
    low, high = preprocess.valid_range()
    assert ((result.images >= low - 1e-6) & (result.images <= high + 1e-6)).all()
    assert result.snapshots.shape == (2, 1, 3, 128, 128) and result.history.shape == (20, 1)
    pils = result.to_pil(preprocess)
    assert len(pils) == 1 and pils[0].size == (128, 128)


def test_one_image_per_target_and_per_channel():
    model = FunctionalReLUNet().train()
    before = model_state(model)
    classes = class_visualization(model, [0, 2, 4], size=16, steps=3, regularizers=[], progress=False)
    assert classes.images.shape == (3, 3, 16, 16)
    assert (classes.history[-1] > classes.history[0]).all()
    units = class_visualization(model, layer="conv2", channel=[1, 5], size=16, steps=3, seed=0, progress=False)
    assert units.images.shape == (2, 3, 16, 16) and units.history.shape == (3, 2)
    neuron = class_visualization(model, layer="conv2", neuron=(1, 3, 3), size=16, steps=3, start="blank",
                                 regularizers=[], progress=False)
    assert neuron.history[-1, 0] > neuron.history[0, 0]
    assert_same_state(before, model_state(model))


def test_start_tensor_sets_the_batch_and_is_not_modified():
    start = 0.1 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    copy = start.clone()
    result = class_visualization(FunctionalReLUNet(), 1, start=start, steps=2, progress=False,
                                 preprocess=Preprocess(16))
    assert result.images.shape == (2, 3, 16, 16)
    assert torch.equal(start, copy)


def test_noise_start_is_reproducible_with_seed():
    model = FunctionalReLUNet()
    run = lambda: class_visualization(model, 0, size=16, steps=2, start="noise", seed=3, progress=False).images
    assert torch.equal(run(), run())


def test_model_untouched_after_error():
    model = FunctionalReLUNet().train()
    before = model_state(model)
    with pytest.raises(ValueError, match="channel"):
        class_visualization(model, layer="conv2", channel=99, size=16, steps=2, progress=False)
    assert_same_state(before, model_state(model))


def test_channel_as_any_integer_and_a_gray_start():
    model = FunctionalReLUNet().eval()
    options = dict(layer="conv2", size=16, steps=2, seed=0, progress=False)
    expected = class_visualization(model, channel=1, **options).images
    for channel in (torch.tensor(1), np.int64(1), [np.int64(1)], torch.tensor([1])):
        assert torch.equal(class_visualization(model, channel=channel, **options).images, expected)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with pytest.raises(ValueError, match="start must have 3 channels, as preprocess normalises, got 1"):
        class_visualization(gray, 0, start=torch.zeros(1, 1, 16, 16), size=16, progress=False)


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "target"),
    ({"target": 0, "layer": "conv1", "channel": 0}, ValueError, "either"),
    ({"layer": "nope", "channel": 0}, ValueError, "nope"),
    ({"layer": "conv1"}, ValueError, "exactly one"),
    ({"layer": "conv1", "channel": "a"}, TypeError, "channel"),
    ({"layer": "conv1", "neuron": (0, 1)}, ValueError, "neuron"),
    ({"target": 9}, ValueError, "out of range"),
    ({"target": -1}, ValueError, "target"),
    ({"target": 1.5}, TypeError, "target"),
    ({"target": [[0, 1]]}, ValueError, "one class per image"),
    ({"target": 0, "steps": 0}, ValueError, "steps"),
    ({"target": 0, "size": 0}, ValueError, "size"),
    ({"target": 0, "start": "grey"}, ValueError, "start"),
    ({"target": [0, 1], "start": torch.zeros(3, 3, 16, 16)}, ValueError, "start has 3 images"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        class_visualization(FunctionalReLUNet(), progress=False, **{"size": 16, **kwargs})


def test_model_must_be_a_module(default_model):
    with pytest.raises(TypeError, match="LoadedModel.net"):
        class_visualization(default_model, 0, progress=False)
