"""DeepDream: the chosen layer's activations grow on a real photo; arguments and model state."""

from dataclasses import replace

import pytest
import torch

from helpers import FailsLater, FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.deepdream import deepdream, layer_energy
from pyfastviz.models import Preprocess, sample_image


@pytest.mark.slow
def test_dream_amplifies_blocks_4_on_chelsea(default_model):
    """3 octaves (scale 1.4) x 5 steps (lr 0.1, jitter 8) at 128 px raise mean(activation^2)
    of "_blocks.4" on the cat photo by >= 1.5x, both measured at 128 px (measured 2.35x;
    under a second on 2 CPU cores). Output: the input's shape, inside the valid range."""
    net = default_model.net
    preprocess = replace(default_model.preprocess, size=128)
    image = preprocess(sample_image("chelsea"))[None]
    copy = image.clone()
    before = model_state(net)
    result = deepdream(net, image, "_blocks.4", octaves=3, octave_scale=1.4, steps_per_octave=5, lr=0.1,
                       jitter=8, preprocess=preprocess, seed=0, progress=False)
    assert_same_state(before, model_state(net))
    assert torch.equal(image, copy)
    assert result.images.shape == image.shape
    assert result.octave_sizes == [(65, 65), (91, 91), (128, 128)] and result.history.shape == (15, 1)
    with torch.no_grad():
        ratio = layer_energy(net, "_blocks.4", result.images) / layer_energy(net, "_blocks.4", image)
    assert ratio.item() >= 1.5
    low, high = preprocess.valid_range()
    assert ((result.images >= low - 1e-6) & (result.images <= high + 1e-6)).all()
    assert len(result.to_pil(preprocess)) == 1


def test_small_model_energy_rises_and_model_untouched():
    model = FunctionalReLUNet().train()
    images = 0.5 * torch.randn(2, 3, 32, 24, generator=torch.Generator().manual_seed(0))
    before = model_state(model)
    result = deepdream(model, images, "conv2", octaves=2, steps_per_octave=4, lr=0.05, jitter=2, seed=0,
                       progress=False)
    assert_same_state(before, model_state(model))
    assert result.images.shape == (2, 3, 32, 24) and result.octave_sizes == [(23, 17), (32, 24)]
    with torch.no_grad():
        assert (layer_energy(model, "conv2", result.images) > layer_energy(model, "conv2", images)).all()


class SidesOf32(FunctionalReLUNet):
    """Like DLA or HRNet in timm, which reject inputs whose sides are not multiples of 32."""

    def forward(self, x):
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise RuntimeError(f"Sizes of tensors must match: got {tuple(x.shape)}")
        return super().forward(x)


def test_an_octave_size_the_model_cannot_take_is_named_before_any_work():
    images = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"smallest octave's 33x33 px input \(octaves=3, octave_scale=1.4\): Sizes"):
        deepdream(SidesOf32(), images, "conv1", octaves=3, progress=False)
    assert deepdream(SidesOf32(), images, "conv1", octaves=2, octave_scale=2, steps_per_octave=1,
                     progress=False).octave_sizes == [(32, 32), (64, 64)]
    with pytest.raises(RuntimeError, match="Sizes of tensors"):  # one octave: the model's own error
        deepdream(SidesOf32(), torch.randn(1, 3, 48, 48), "conv1", octaves=1, progress=False)


def test_seeded_jitter_is_reproducible():
    model, images = FunctionalReLUNet(), torch.randn(1, 3, 24, 24)
    run = lambda: deepdream(model, images, "conv1", octaves=1, steps_per_octave=3, jitter=3, seed=1,
                            progress=False).images
    assert torch.equal(run(), run())



def test_model_untouched_after_error():
    model = FailsLater(fail_at=3).train()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        deepdream(model, torch.randn(1, 3, 24, 24), "conv2", octaves=1, steps_per_octave=5, progress=False)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layer": "nope"}, ValueError, "nope"),
    ({"layer": None}, TypeError, "layer"),
    ({"images": torch.zeros(3, 32, 32)}, ValueError, r"\(N, C, H, W\).*images\[None\]"),
    ({"images": torch.zeros(1, 1, 3, 32, 32)}, ValueError, r"\(N, C, H, W\)"),
    ({"octaves": 0}, ValueError, "octaves"),
    ({"octaves": 2.0}, ValueError, "octaves"),
    ({"octaves": 5}, ValueError, "octaves=5.*smallest octave"),
    ({"octave_scale": 1.0}, ValueError, "octave_scale"),
    ({"octave_scale": "2"}, ValueError, "octave_scale"),
    ({"steps_per_octave": 0}, ValueError, "steps_per_octave"),
    ({"lr": 0}, ValueError, "lr"),
    ({"jitter": -1}, ValueError, "jitter"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = {"images": torch.zeros(1, 3, 32, 32), "layer": "conv1", **kwargs}
    with pytest.raises(error, match=match):
        deepdream(FunctionalReLUNet(), arguments.pop("images"), arguments.pop("layer"), progress=False, **arguments)


def test_reused_layer_is_refused(default_model):
    with pytest.raises(ValueError, match="fired"):
        deepdream(default_model.net, torch.zeros(1, 3, 32, 32), "_swish", octaves=1, progress=False)


def test_default_preprocess_is_imagenet():
    result = deepdream(FunctionalReLUNet(), torch.zeros(1, 3, 16, 16), "conv1", octaves=1, steps_per_octave=2,
                       lr=10.0, progress=False)
    low, high = Preprocess(16).valid_range()
    assert ((result.images >= low - 1e-6) & (result.images <= high + 1e-6)).all()
