"""Occlusion saliency: equal to a brute-force loop and to Captum; the cat's quadrant lights up."""

import copy
import importlib

import pytest
import torch
import torchvision
from torch import nn

from helpers import FunctionalReLUNet, assert_same_state, model_state, quadrant_shares
from pyfastviz.captum import Occlusion
from pyfastviz.occlusion import occlusion


@torch.no_grad()
def brute_force(model, images, targets, window, stride, fill, score="prob"):
    """The definition, one position at a time: mean score drop over the windows covering a pixel.
    fill: a number or (N, C, H, W) images."""
    _, _, height, width = images.shape

    def scores(x):
        outputs = model(x)
        return (outputs.softmax(1) if score == "prob" else outputs).gather(1, targets[:, None])[:, 0]

    base = scores(images)
    total = torch.zeros(images.shape[0], height, width)
    covering = torch.zeros(height, width)
    rows = range(0, max(height - window[0], 0) + stride[0], stride[0])
    cols = range(0, max(width - window[1], 0) + stride[1], stride[1])
    for top in rows:
        for left in cols:
            box = (slice(None), slice(None), slice(top, top + window[0]), slice(left, left + window[1]))
            occluded = images.clone()
            occluded[box] = fill[box] if isinstance(fill, torch.Tensor) else fill
            drop = base - scores(occluded)
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
    expected = brute_force(net, images, targets, window, stride, 0.5)
    heat = occlusion(net, images, targets, window=window, stride=stride, baseline=0.5, progress=False)
    torch.testing.assert_close(heat, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("size, window, stride, grid", [
    ((24, 40), (3, 3), (5, 6), (5, 7)),  # stride > window: Captum's count (6, 8) would start windows past the edge
    ((11, 13), (5, 3), (2, 4), (4, 4)),  # stride <= window: Captum's count, the last windows cropped
])
def test_every_position_occludes_part_of_the_image(net, size, window, stride, grid):
    _, drops = occlusion(net, torch.randn(2, 3, *size), 1, window=window, stride=stride, score="logit",
                         return_grid=True, progress=False)
    assert drops.shape == (2, *grid)
    assert (drops != 0).all()  # a window off the image would change nothing: a wasted forward, a 0 in the grid


@pytest.mark.parametrize("score", ["logit", "prob"])
def test_equals_the_brute_force_definition_on_a_torchvision_model(score):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()  # 10 classes: probs far from 0
    images, targets = torch.randn(2, 3, 48, 48), torch.tensor([3, 7])
    expected = brute_force(model, images, targets, (16, 16), (14, 14), 0.0, score)  # 4 x 4 positions, cropped
    heat = occlusion(model, images, targets, window=16, stride=14, score=score, progress=False)
    assert expected.abs().max() > 1e-3  # the drops are not all rounding noise
    torch.testing.assert_close(heat, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("score", ["logit", "prob"])
def test_equals_the_brute_force_definition_on_the_default_model(default_model, score):
    from pyfastviz.models import sample_image

    images = default_model.preprocess.batch([sample_image("chelsea")])
    target = torch.tensor([default_model.class_index("Egyptian cat")])
    expected = brute_force(default_model.net, images, target, (64, 64), (64, 64), 0.0, score)  # 4 x 4, cropped
    heat = occlusion(default_model.net, images, target, window=64, stride=64, score=score, progress=False)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(heat, expected, atol=1e-4, rtol=0)


def test_one_pixel_images_and_batches_of_1_and_64():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 4))
    pixels = torch.randn(2, 3, 1, 1)
    with torch.no_grad():
        expected = model(pixels).softmax(1)[:, 1] - model(torch.zeros_like(pixels)).softmax(1)[:, 1]
    one = occlusion(model, pixels, 1, window=1, stride=1, progress=False)
    torch.testing.assert_close(one, expected[:, None, None])
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
    expected = brute_force(net, images, torch.tensor([1, 1]), (4, 4), (4, 4), blurred)
    heat = occlusion(net, images, 1, window=4, stride=4, baseline=blurred, progress=False)
    torch.testing.assert_close(heat, expected, atol=1e-6, rtol=1e-5)


def test_non_contiguous_images_and_empty_batches(net):
    images = torch.randn(2, 3, 8, 16)[..., ::2]
    expected = occlusion(net, images.contiguous(), [1, 2], window=4, stride=2, progress=False)
    torch.testing.assert_close(occlusion(net, images, [1, 2], window=4, stride=2, progress=False), expected)
    heat, grid = occlusion(net, torch.randn(0, 3, 8, 8), window=4, stride=2, return_grid=True, progress=False)
    assert heat.shape == (0, 8, 8) and grid.shape == (0, 3, 3)
    assert occlusion(net, torch.randn(0, 3, 8, 8), 1, window=4, stride=2, batch_size=5, progress=False).shape == (0, 8, 8)


def test_more_images_than_batch_size_go_in_groups(net):
    images = torch.randn(5, 3, 8, 8)
    rows = []
    handle = net.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    try:
        grouped = occlusion(net, images, [0, 1, 2, 3, 4], window=4, stride=2, batch_size=2, progress=False)
    finally:
        handle.remove()
    assert max(rows) == 2 and sum(rows) == 5 * (1 + 9)  # groups of 2, 2 and 1 images: a first pass, then 9 positions
    torch.testing.assert_close(grouped, occlusion(net, images, [0, 1, 2, 3, 4], window=4, stride=2, progress=False))


def test_default_batch_size_is_measured_once_per_model_and_shape(net, monkeypatch):
    """Free memory changes between calls (a CUDA graph holds some): the chunk shape must not, as the
    compile and graph caches are keyed on it."""
    module = importlib.import_module("pyfastviz.occlusion")  # the module, not the function pyfastviz exports

    fitting = iter([6, 4, 2])
    measured = []
    monkeypatch.setattr(module, "_fitting_batch", lambda forward, probe: measured.append(probe.shape) or next(fitting))
    calls = []
    handle = net.register_forward_pre_hook(lambda _, args: calls[-1].append(args[0].shape[0]))
    try:
        for size in (8, 8, 10):
            calls.append([])
            occlusion(net, torch.randn(2, 3, size, size), 1, window=4, stride=2, progress=False)
    finally:
        handle.remove()
    assert measured == [(8, 3, 8, 8), (8, 3, 10, 10)]
    # 2 images: a first pass, then 6 // 2 = 3 of the 9 positions per chunk; at 10 px 4 // 2 of 16
    assert calls == [[2, 6, 6, 6], [2, 6, 6, 6], [2] + [4] * 8]
    module.clear_cache()
    occlusion(net, torch.randn(2, 3, 8, 8), 1, window=4, stride=2, progress=False)
    assert len(measured) == 3


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
    """bf16 + channels_last against fp32 on real photos: max deviation <= 20% of the map's peak,
    correlation >= 0.98 (measured 9.7-10.0% and 0.992-0.993, at stride 16 7.6-14.8% and 0.995; 15.4% and 0.981
    on 2026-12-02's VM, the same with the code of 657f4e2: CPUs' bf16 kernels differ)."""
    from pyfastviz.models import sample_image

    x = default_model.preprocess.batch([sample_image("chelsea"), sample_image("coffee")])
    # stride 32 (49 positions): on a CPU without native bf16 (AVX2 only) each bf16 forward is slow
    exact = occlusion(default_model.net, x, window=32, stride=32, score=score, progress=False)
    fast = occlusion(default_model.net, x, window=32, stride=32, score=score, dtype=torch.bfloat16,
                     channels_last=True, progress=False)
    assert (fast - exact).abs().max() <= 0.2 * exact.abs().max()
    assert torch.corrcoef(torch.stack([fast.flatten(), exact.flatten()]))[0, 1] >= 0.98


def test_model_left_exactly_as_found_also_after_errors(net):
    net.train()
    before = model_state(net)
    occlusion(net, torch.randn(1, 3, 8, 8), 1, window=4, stride=4, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        occlusion(net, torch.randn(1, 3, 8, 8), 9, window=4, stride=4, progress=False)
    assert_same_state(before, model_state(net))


class FailsOnThirdForward(FunctionalReLUNet):
    calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("out of memory (simulated)")
        return super().forward(x)


def test_model_left_as_found_when_it_raises_mid_loop():
    torch.manual_seed(0)
    model = FailsOnThirdForward().train()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="simulated"):
        occlusion(model, torch.randn(1, 3, 8, 8), 1, window=4, stride=2, batch_size=2, progress=False)
    assert model.calls == 3  # the first pass, one chunk, then the failing chunk
    assert_same_state(before, model_state(model))
    assert model.training


@pytest.mark.parametrize("kwargs, error, message", [
    ({"window": 0}, ValueError, "window must be a positive int"),
    ({"window": (4, -1)}, ValueError, "window must be a positive int"),
    ({"stride": 0}, ValueError, "stride must be a positive int"),
    ({"stride": (2, 9)}, ValueError, r"stride \(2, 9\) is larger than the image \(8, 8\)"),
    ({"batch_size": 0}, ValueError, "batch_size must be None"),
    ({"batch_size": -3}, ValueError, "batch_size must be None"),
    ({"batch_size": 2.5}, ValueError, "batch_size must be None"),
    ({"batch_size": True}, ValueError, "batch_size must be None"),
    ({"window": 9}, ValueError, r"window \(3, 9, 9\) is larger than the image \(3, 8, 8\)"),
    ({"score": "loss"}, ValueError, "score must be one of"),
    ({"dtype": torch.float64}, ValueError, "dtype must be None"),
    ({"compile": "reduce-overhead"}, ValueError, "compile must be True, False or a torch.compile mode"),
    ({"compile": 1}, ValueError, "compile must be True, False or a torch.compile mode"),
    ({"cuda_graph": "yes"}, ValueError, "cuda_graph must be True or False"),
    ({"cuda_graph": True}, ValueError, "cuda_graph=True needs CUDA images"),
    ({"baseline": torch.zeros(2, 8, 8)}, ValueError, "baseline must be a number"),
    ({"baseline": float("nan")}, ValueError, "baseline contains NaN"),
    ({"baseline": None}, TypeError, "baseline must be a number"),
    ({"baseline": torch.zeros(3, 8, 8, device="meta")}, ValueError, "baseline is on meta but the images are on cpu"),
    ({"window": 4.0}, ValueError, "window must be a positive int"),
])
def test_bad_arguments_get_clear_errors(net, kwargs, error, message):
    with pytest.raises(error, match=message):
        occlusion(net, torch.randn(1, 3, 8, 8), 1, **{"window": 4, "stride": 4, **kwargs})


def test_the_fast_path_needs_a_float32_model(net):
    with pytest.raises(ValueError, match="dtype=torch.bfloat16 runs a float32 model under autocast; the images are "
                                         "torch.float64"):
        occlusion(net.double(), torch.randn(1, 3, 8, 8, dtype=torch.float64), 1, window=4, dtype=torch.bfloat16)


def test_float64_models_get_float64_drops():
    """A large common offset of the logits must not cost the drops float32 precision."""
    torch.manual_seed(0)
    net = FunctionalReLUNet().double().eval()
    offset = nn.Sequential(net, Shift(1e4))
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    heat = occlusion(offset, x, 1, window=4, stride=2, score="logit", progress=False)
    assert heat.dtype == torch.float64
    torch.testing.assert_close(heat, occlusion(net, x, 1, window=4, stride=2, score="logit", progress=False),
                               atol=1e-9, rtol=0)
    captum_heat = Occlusion(offset).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=1)
    assert captum_heat.dtype == torch.float32  # as Captum returns it: the float64 drops rounded once
    torch.testing.assert_close(captum_heat[:, 0], heat.float(), atol=0, rtol=0)


class Shift(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return x + self.value


def test_probabilities_of_a_single_logit_are_refused():
    single = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
    with pytest.raises(ValueError, match="score='prob' needs a model with several classes"):
        occlusion(single, torch.randn(1, 3, 8, 8), 0, window=4, stride=4, progress=False)
    assert occlusion(single, torch.randn(1, 3, 8, 8), 0, window=4, stride=4, score="logit", progress=False).abs().sum() > 0


try:
    import captum.attr as captum_attr
except ImportError:  # a test extra: only the comparisons with Captum itself need it
    captum_attr = None
needs_captum = pytest.mark.skipif(captum_attr is None, reason="captum is not installed (pip install .[test])")


def scaled_logits(model):
    """A forward_func with additional_forward_args: the logits times a per-example scale, plus a shift."""
    return lambda x, scale, shift: model(x) * scale[:, None] + shift


@needs_captum
class TestCaptumAdapterEqualsCaptum:
    @pytest.mark.parametrize("window, stride, baselines", [
        ((3, 8, 8), (3, 4, 4), 0.0),
        ((3, 5, 7), (3, 3, 2), 0.25),
        ((1, 6, 6), (1, 6, 6), "image"),
    ])
    def test_on_a_torchvision_model(self, window, stride, baselines):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).eval()
        x = torch.randn(2, 3, 32, 32)
        baselines = torch.randn(3, 32, 32) if baselines == "image" else baselines
        kwargs = dict(sliding_window_shapes=window, strides=stride, baselines=baselines, target=[3, 5],
                      perturbations_per_eval=8)
        ours = Occlusion(model).attribute(x, **kwargs)
        theirs = captum_attr.Occlusion(model).attribute(x, **kwargs)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    @pytest.mark.slow
    def test_on_the_default_model(self, default_model):
        from pyfastviz.models import sample_image

        x = default_model.preprocess.batch([sample_image("chelsea")])
        kwargs = dict(sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), target=285, perturbations_per_eval=32)
        ours = Occlusion(default_model.net).attribute(x, **kwargs)
        theirs = captum_attr.Occlusion(default_model.net).attribute(x, **kwargs)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        heat = occlusion(default_model.net, x, 285, window=32, stride=16, score="logit", progress=False)
        torch.testing.assert_close(heat, theirs[:, 0], atol=1e-4, rtol=0)

    @pytest.mark.parametrize("target, baselines", [
        (torch.tensor([3]), 0.0),  # one target tensor element: every example's
        ((3,), 0.0),  # a tuple indexes the output's dimensions after the batch: every example's
        ([(3,), (1,)], 0.0),  # one such tuple per example
        (1, torch.arange(8.0)),  # 1-D baselines broadcast along W, as torch broadcasts
        (1, torch.tensor([0.5, -1.0, 2.0])[:, None, None]),
    ])
    def test_target_and_baselines_as_captum_reads_them(self, net, target, baselines):
        x = torch.randn(2, 3, 8, 8)
        kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=baselines, target=target)
        torch.testing.assert_close(Occlusion(net).attribute(x, **kwargs),
                                   captum_attr.Occlusion(net).attribute(x, **kwargs), atol=1e-6, rtol=0)

    def test_tuples_and_additional_forward_args(self, net):
        x, scale = torch.randn(2, 3, 8, 8), torch.tensor([2.0, -0.5])
        kwargs = dict(sliding_window_shapes=((3, 4, 4),), strides=((3, 2, 2),), baselines=(0.5,), target=1,
                      additional_forward_args=(scale, 3.0), perturbations_per_eval=4)  # 9 positions: 4, 4, 1
        (ours,) = Occlusion(scaled_logits(net)).attribute((x,), **kwargs)
        (theirs,) = captum_attr.Occlusion(scaled_logits(net)).attribute((x,), **kwargs)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


    def test_float64_inputs_give_float32_as_captum_returns(self, net):
        model = copy.deepcopy(net).double()
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=1)
        ours, theirs = Occlusion(model).attribute(x, **kwargs), captum_attr.Occlusion(model).attribute(x, **kwargs)
        assert ours.dtype == theirs.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)

    def test_noise_tunnel_wraps_it_as_it_wraps_captums(self, net):
        x = torch.randn(2, 3, 8, 8)
        ours, theirs = Occlusion(net), captum_attr.Occlusion(net)
        for attribute in ("multiplies_by_inputs", "has_convergence_delta", "get_name"):
            mine, captums = getattr(ours, attribute), getattr(theirs, attribute)
            assert (mine() if callable(mine) else mine) == (captums() if callable(captums) else captums)
        kwargs = dict(nt_type="smoothgrad", nt_samples=3, stdevs=0.1, sliding_window_shapes=(3, 4, 4),
                      strides=(3, 2, 2), target=1)
        torch.manual_seed(0)
        smoothed = captum_attr.NoiseTunnel(ours).attribute(x, **kwargs)
        torch.manual_seed(0)
        torch.testing.assert_close(smoothed, captum_attr.NoiseTunnel(theirs).attribute(x, **kwargs), atol=1e-6,
                                   rtol=0)


def test_captum_adapter_refuses_outputs_and_windows_it_cannot_map(net):
    x = torch.randn(2, 3, 8, 8)
    window = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2))
    with pytest.raises(ValueError, match="sliding_window_shapes has 2 windows but there is one input tensor"):
        Occlusion(net).attribute(x, sliding_window_shapes=((3, 4, 4), (3, 2, 2)), target=1)
    with pytest.raises(ValueError, match=r"forward_func must return one output per example, \(2, ...\) .* got \(1,\)"):
        Occlusion(lambda images: net(images).sum()[None]).attribute(x, target=0, **window)
    with pytest.raises(ValueError, match="forward_func must return one output per example.* got float"):
        Occlusion(lambda images: 1.0).attribute(x, **window)
    with pytest.raises(ValueError, match=r"one value per example \(N,\).*pass target=None"):
        Occlusion(lambda images: net(images)[:, 0]).attribute(x, target=3, **window)
    with pytest.raises(ValueError, match=r"inputs must be one \(N, C, H, W\) tensor"):
        Occlusion(net).attribute(torch.randn(2, 3, 8), sliding_window_shapes=(3, 4), target=1)
    with pytest.raises(ValueError, match="inputs contains NaN"):
        Occlusion(net).attribute(torch.full((1, 3, 8, 8), float("nan")), target=1, **window)


def test_captum_adapter_repeats_tensor_forward_args_per_perturbation(net):
    x, scale = torch.randn(2, 3, 8, 8), torch.tensor([2.0, -0.5])
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=1)
    plain = Occlusion(net).attribute(x, **kwargs)
    # the logit drops scale with the example's scale; the shift cancels
    scaled = Occlusion(scaled_logits(net)).attribute(x, additional_forward_args=(scale, 3.0), perturbations_per_eval=4,
                                                     **kwargs)
    torch.testing.assert_close(scaled, plain * scale[:, None, None, None], atol=1e-5, rtol=1e-5)


def test_captum_adapter_unwraps_one_input_tuples(net):
    x = torch.randn(2, 3, 8, 8)
    expected = Occlusion(net).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=0.5, target=1)
    for baselines in ((0.5,), (torch.full((3, 8, 8), 0.5),)):
        result = Occlusion(net).attribute((x,), sliding_window_shapes=((3, 4, 4),), strides=((3, 2, 2),),
                                          baselines=baselines, target=1)
        assert isinstance(result, tuple) and len(result) == 1
        torch.testing.assert_close(result[0], expected)
    torch.testing.assert_close(Occlusion(net).attribute(x, sliding_window_shapes=(3, 4, 4), strides=2, target=1),
                               Occlusion(net).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(2, 2, 2), target=1))


def test_captum_adapter_refuses_what_captum_refuses_and_keeps_what_it_keeps():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="cannot be larger than sliding_window_shapes"):
        Occlusion(model).attribute(x, sliding_window_shapes=(3, 2, 2), strides=(1, 3, 3), target=0)
    with pytest.raises(ValueError, match="target=None needs one output per example"):
        Occlusion(model).attribute(x, sliding_window_shapes=(3, 2, 2), strides=(3, 2, 2))
    # a stride past the image where the window covers it: one position, as in Captum
    whole = Occlusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(5, 9, 9), target=0)
    with torch.no_grad():
        drop = model(x)[0, 0] - model(torch.zeros_like(x))[0, 0]
    torch.testing.assert_close(whole, drop.expand(1, 3, 4, 4))
    assert Occlusion(model).attribute(torch.randn(0, 3, 4, 4), sliding_window_shapes=(3, 2, 2), strides=(3, 2, 2),
                                      target=0).shape == (0, 3, 4, 4)
    for several in (torch.tensor([[0, 1]]), [[0, 1]]):  # Captum refuses several targets per example too
        with pytest.raises(ValueError, match="target must be an int or one int per example"):
            Occlusion(model).attribute(x, sliding_window_shapes=(3, 2, 2), strides=(3, 2, 2), target=several)
    two = torch.randn(2, 3, 4, 4)  # (0, 1) is one 2-D output index for every example in Captum, not 2 classes
    for deeper in ((0, 1), [(0, 1), (1, 0)]):
        with pytest.raises(ValueError, match="a tuple target indexes the output's dimensions"):
            Occlusion(model).attribute(two, sliding_window_shapes=(3, 2, 2), strides=(3, 2, 2), target=deeper)


@pytest.mark.slow
def test_occlusion_of_the_cat_class_lies_on_the_cat(default_model, cat_quadrant_canvases):
    """At least twice a quadrant's share of the map on the cat, peak included (measured 0.83, 0.85,
    0.82, 0.63 for quadrants 0-3).

    The window must hide most of the 112 px cat: with 96 px windows the logit drop concentrates
    there; 64 px windows reach only 0.36 in quadrant 3, and 32 px windows leave the cat
    recognisable and spread the map evenly.
    """
    cat = default_model.class_index("Egyptian cat")
    for quadrant, canvas in cat_quadrant_canvases:
        heat = occlusion(default_model.net, canvas, cat, window=96, stride=32, score="logit", progress=False)[0]
        shares = quadrant_shares(heat.clamp(min=0))
        peak = divmod(int(heat.argmax()), heat.shape[1])
        assert shares[quadrant] >= 0.5, (quadrant, shares)
        assert (peak[0] >= 112) * 2 + (peak[1] >= 112) == quadrant, (quadrant, peak)
