"""Feature inversion: the pretrained model's early features are matched; arguments and model state."""

from dataclasses import replace

import pytest
import torch

from helpers import FailsLater, FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.inversion import invert_features
from pyfastviz.models import Preprocess, layer_output, sample_image


@pytest.mark.slow
def test_chelsea_inverted_from_blocks_2(default_model):
    """From noise, 120 Adam steps (lr 0.1, TV 1e-3) at 128 px reconstruct the cat photo from
    "_blocks.2" features to a relative feature error ||phi(x) - phi0||^2 / ||phi0||^2 <= 0.1
    (measured 0.049; about 2 s on 2 CPU cores)."""
    net = default_model.net
    preprocess = replace(default_model.preprocess, size=128)
    image = preprocess(sample_image("chelsea"))[None]
    before = model_state(net)
    result = invert_features(net, image, "_blocks.2", steps=120, lr=0.1, tv_weight=1e-3, preprocess=preprocess,
                             seed=0, progress=False, snapshot_every=60)
    assert_same_state(before, model_state(net))
    assert result.feature_error.shape == (1,) and result.feature_error.item() <= 0.1
    assert result.history.shape == (120, 1) and result.history[-1, 0] > result.history[0, 0]
    assert result.snapshots.shape == (2, 1, 3, 128, 128)
    low, high = preprocess.valid_range()
    assert ((result.images >= low - 1e-6) & (result.images <= high + 1e-6)).all()
    with torch.no_grad():  # the reported error is the real one
        target, got = layer_output(net, "_blocks.2", image), layer_output(net, "_blocks.2", result.images)
    error = (got - target).pow(2).sum() / target.pow(2).sum()
    assert error.item() == pytest.approx(result.feature_error.item(), rel=1e-4)


def test_small_model_error_falls_and_model_untouched():
    model = FunctionalReLUNet().train()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    copy = images.clone()
    before = model_state(model)
    result = invert_features(model, images, "conv2", steps=30, lr=0.05, start="blank", progress=False,
                             preprocess=Preprocess(16))
    assert_same_state(before, model_state(model))
    assert torch.equal(images, copy)
    assert result.images.shape == (2, 3, 16, 16) and result.feature_error.shape == (2,)
    assert (result.history[-1] > result.history[0]).all()


def test_fp16_features_whose_squares_overflow_fp16_are_inverted():
    torch.manual_seed(0)
    model = FunctionalReLUNet()
    with torch.no_grad():
        model.conv2.weight.mul_(100)
    model = model.half()
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).half()
    with torch.no_grad():
        assert layer_output(model, "conv2", images).float().pow(2).sum() > torch.finfo(torch.float16).max
    result = invert_features(model, images, "conv2", steps=10, lr=0.05, progress=False, preprocess=Preprocess(32))
    assert torch.isfinite(result.history).all() and result.history[-1, 0] > result.history[0, 0]


def test_seeded_noise_start_is_reproducible():
    model, images = FunctionalReLUNet(), torch.randn(1, 3, 16, 16)
    run = lambda: invert_features(model, images, "conv1", steps=2, seed=3, progress=False).images
    assert torch.equal(run(), run())



def test_model_untouched_after_error():
    model = FailsLater(fail_at=3).train()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        invert_features(model, torch.randn(1, 3, 16, 16), "conv2", steps=5, progress=False)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layer": "nope"}, ValueError, "nope"),
    ({"layer": 3}, TypeError, "layer"),
    ({"images": torch.zeros(3, 16, 16)}, ValueError, r"\(N, C, H, W\).*images\[None\]"),
    ({"images": torch.zeros(1, 1, 16, 16)}, ValueError, r"images must be RGB, \(N, 3, H, W\).*\(1, 1, 16, 16\)"),
    ({"start": "grey"}, ValueError, "start"),
    ({"tv_weight": -1}, ValueError, "tv_weight"),
    ({"l2_weight": "a"}, ValueError, "l2_weight"),
    ({"steps": 0}, ValueError, "steps"),
    ({"optimizer": "sgd"}, ValueError, "optimizer"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = {"images": torch.zeros(1, 3, 16, 16), "layer": "conv1", **kwargs}
    with pytest.raises(error, match=match):
        invert_features(FunctionalReLUNet(), arguments.pop("images"), arguments.pop("layer"), progress=False,
                        **arguments)


def test_reused_layer_is_refused(default_model):
    with pytest.raises(ValueError, match="fired"):
        invert_features(default_model.net, torch.zeros(1, 3, 32, 32), "_swish", steps=1, progress=False)
