"""Occlusion saliency: equal to a brute-force loop and to Captum; the cat's quadrant lights up."""

import pytest
import torch
import torchvision
from torch import nn

from helpers import FunctionalReLUNet, assert_same_state, model_state, quadrant_shares
from pyfastviz.captum import Occlusion
from pyfastviz.occlusion import occlusion


def brute_force(model, images, targets, window, stride, fill):
    """The definition, one position at a time: mean prob drop over the windows covering a pixel."""
    _, _, height, width = images.shape
    base = model(images).softmax(1).gather(1, targets[:, None])[:, 0]
    total = torch.zeros(images.shape[0], height, width)
    covering = torch.zeros(height, width)
    rows = range(0, max(height - window[0], 0) + stride[0], stride[0])
    cols = range(0, max(width - window[1], 0) + stride[1], stride[1])
    for top in rows:
        for left in cols:
            occluded = images.clone()
            occluded[:, :, top:top + window[0], left:left + window[1]] = fill
            drop = base - model(occluded).softmax(1).gather(1, targets[:, None])[:, 0]
            total[:, top:top + window[0], left:left + window[1]] += drop[:, None, None]
            covering[top:top + window[0], left:left + window[1]] += 1
    return torch.where(covering > 0, total / covering.clamp(min=1), 0.0)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return FunctionalReLUNet().eval()


@pytest.mark.parametrize("size, window, stride", [
    ((12, 12), (4, 4), (4, 4)),    # tiles the image
    ((11, 13), (5, 3), (2, 4)),    # does not tile: the last windows are cropped
    ((12, 12), (2, 3), (5, 4)),    # stride larger than the window: uncovered pixels are 0
    ((9, 10), (9, 10), (1, 1)),    # window equal to the image: one position
])
def test_equals_the_brute_force_definition(net, size, window, stride):
    images = torch.randn(3, 3, *size)
    targets = torch.tensor([0, 2, 4])
    with torch.no_grad():
        expected = brute_force(net, images, targets, window, stride, 0.5)
    heat = occlusion(net, images, targets, window=window, stride=stride, baseline=0.5, progress=False)
    torch.testing.assert_close(heat, expected, atol=1e-6, rtol=1e-5)


def test_one_pixel_images_and_batches_of_1_and_64():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 4))
    one = occlusion(model, torch.randn(2, 3, 1, 1), 1, window=1, stride=1, progress=False)
    assert one.shape == (2, 1, 1)
    images = torch.randn(64, 3, 6, 6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 4))
    heat = occlusion(model, images, 2, window=3, stride=3, batch_size=10, progress=False)
    single = occlusion(model, images[17:18], 2, window=3, stride=3, progress=False)
    assert heat.shape == (64, 6, 6)
    torch.testing.assert_close(heat[17:18], single, atol=1e-6, rtol=1e-5)


def test_several_targets_grid_and_chunking(net):
    images = torch.randn(2, 3, 12, 12)
    heat, grid = occlusion(net, images, [[0, 3], [1, 2]], window=4, stride=2, return_grid=True, batch_size=3,
                           progress=False)
    assert heat.shape == (2, 2, 12, 12) and grid.shape == (2, 2, 5, 5)
    torch.testing.assert_close(heat[:, 1], occlusion(net, images, [3, 2], window=4, stride=2, progress=False))
    # the grid holds each position's drop; position (0, 0) is the only window covering pixel (0, 0)
    torch.testing.assert_close(grid[:, :, 0, 0], heat[:, :, 0, 0])


def test_baselines_number_channels_image(net):
    images = torch.randn(2, 3, 8, 8)
    per_channel = occlusion(net, images, 1, window=4, stride=4, baseline=[0.1, -0.2, 0.3], progress=False)
    as_image = occlusion(net, images, 1, window=4, stride=4,
                         baseline=torch.tensor([0.1, -0.2, 0.3])[:, None, None].expand(3, 8, 8), progress=False)
    torch.testing.assert_close(per_channel, as_image)
    blurred = torchvision.transforms.functional.gaussian_blur(images, 5)
    assert occlusion(net, images, 1, window=4, stride=4, baseline=blurred, progress=False).shape == (2, 8, 8)


def test_fast_path_stays_close_to_fp32(net):
    images = torch.randn(2, 3, 16, 16)
    exact = occlusion(net, images, 1, window=4, stride=4, score="logit", progress=False)
    fast = occlusion(net, images, 1, window=4, stride=4, score="logit", dtype=torch.bfloat16, channels_last=True,
                     progress=False)
    layout_only = occlusion(net, images, 1, window=4, stride=4, score="logit", channels_last=True, progress=False)
    torch.testing.assert_close(layout_only, exact, atol=1e-5, rtol=1e-4)
    # each drop is a difference of two bf16-rounded scores: within a few bf16 steps (2**-8) of the score
    with torch.no_grad():
        score_scale = net(images)[:, 1].abs().max()
    assert (fast - exact).abs().max() <= 2**-6 * score_scale


@pytest.mark.slow
@pytest.mark.parametrize("score", ["logit", "prob"])
def test_fast_path_on_the_default_model(default_model, score):
    """bf16 + channels_last against fp32 on real photos: max deviation <= 15% of the map's peak,
    correlation >= 0.99 (measured 7-9% and 0.997 at stride 16)."""
    from pyfastviz.models import sample_image

    x = default_model.preprocess.batch([sample_image("chelsea"), sample_image("coffee")])
    # stride 32 (49 positions): on a CPU without native bf16 (AVX2 only) each bf16 forward is slow
    exact = occlusion(default_model.net, x, window=32, stride=32, score=score, progress=False)
    fast = occlusion(default_model.net, x, window=32, stride=32, score=score, dtype=torch.bfloat16,
                     channels_last=True, progress=False)
    assert (fast - exact).abs().max() <= 0.15 * exact.abs().max()
    assert torch.corrcoef(torch.stack([fast.flatten(), exact.flatten()]))[0, 1] >= 0.99


def test_model_left_exactly_as_found_also_after_errors(net):
    net.train()
    before = model_state(net)
    occlusion(net, torch.randn(1, 3, 8, 8), 1, window=4, stride=4, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        occlusion(net, torch.randn(1, 3, 8, 8), 9, window=4, stride=4, progress=False)
    assert_same_state(before, model_state(net))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"window": 0}, ValueError, "window must be a positive int"),
    ({"window": (4, -1)}, ValueError, "window must be a positive int"),
    ({"stride": 0}, ValueError, "stride must be a positive int"),
    ({"window": 9}, ValueError, r"window \(3, 9, 9\) is larger than the image \(3, 8, 8\)"),
    ({"score": "loss"}, ValueError, "score must be one of"),
    ({"dtype": torch.float64}, ValueError, "dtype must be None"),
    ({"compile": "reduce-overhead"}, ValueError, "compile must be True, False or a torch.compile mode"),
    ({"compile": 1}, ValueError, "compile must be True, False or a torch.compile mode"),
    ({"cuda_graph": "yes"}, ValueError, "cuda_graph must be True or False"),
    ({"cuda_graph": True}, ValueError, "cuda_graph=True needs CUDA images"),
    ({"baseline": torch.zeros(2, 8, 8)}, ValueError, "baseline must be a number"),
    ({"baseline": float("nan")}, ValueError, "baseline contains NaN"),
])
def test_bad_arguments_get_clear_errors(net, kwargs, error, message):
    with pytest.raises(error, match=message):
        occlusion(net, torch.randn(1, 3, 8, 8), 1, **{"window": 4, "stride": 4, **kwargs})


class TestCaptumAdapter:
    captum = pytest.importorskip("captum.attr")

    @pytest.mark.parametrize("window, stride, baselines", [
        ((3, 8, 8), (3, 4, 4), 0.0),
        ((3, 5, 7), (3, 3, 2), 0.25),
        ((1, 6, 6), (1, 6, 6), "image"),
    ])
    def test_equals_captum_on_a_torchvision_model(self, window, stride, baselines):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).eval()
        x = torch.randn(2, 3, 32, 32)
        baselines = torch.randn(3, 32, 32) if baselines == "image" else baselines
        kwargs = dict(sliding_window_shapes=window, strides=stride, baselines=baselines, target=[3, 5],
                      perturbations_per_eval=8)
        ours = Occlusion(model).attribute(x, **kwargs)
        theirs = self.captum.Occlusion(model).attribute(x, **kwargs)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    @pytest.mark.slow
    def test_equals_captum_on_the_default_model(self, default_model):
        from pyfastviz.models import sample_image

        x = default_model.preprocess.batch([sample_image("chelsea")])
        kwargs = dict(sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), target=285, perturbations_per_eval=32)
        ours = Occlusion(default_model.net).attribute(x, **kwargs)
        theirs = self.captum.Occlusion(default_model.net).attribute(x, **kwargs)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        heat = occlusion(default_model.net, x, 285, window=32, stride=16, score="logit", progress=False)
        torch.testing.assert_close(heat, theirs[:, 0], atol=1e-4, rtol=0)

    def test_refuses_what_captum_refuses(self):
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
        with pytest.raises(ValueError, match="cannot be larger than sliding_window_shapes"):
            Occlusion(model).attribute(torch.randn(1, 3, 4, 4), sliding_window_shapes=(3, 2, 2), strides=(1, 3, 3),
                                       target=0)


@pytest.mark.slow
def test_occlusion_of_the_cat_class_lies_on_the_cat(default_model, cat_quadrant_canvases):
    """At least twice a quadrant's share of the map on the cat, peak included (measured 0.53-0.84).

    The window must hide a good part of the 112 px cat: with 64 px windows the logit drop
    concentrates there; 32 px windows leave the cat recognisable and spread the map evenly.
    """
    cat = default_model.class_index("Egyptian cat")
    for quadrant, canvas in cat_quadrant_canvases:
        heat = occlusion(default_model.net, canvas, cat, window=64, stride=32, score="logit", progress=False)[0]
        shares = quadrant_shares(heat.clamp(min=0))
        peak = divmod(int(heat.argmax()), heat.shape[1])
        assert shares[quadrant] >= 0.5, (quadrant, shares)
        assert (peak[0] >= 112) * 2 + (peak[1] >= 112) == quadrant, (quadrant, peak)
