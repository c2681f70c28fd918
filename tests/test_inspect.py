"""Looking inside the model: filters, activations, features, PCA/t-SNE, top patches (neighbours:
test_neighbours.py)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from helpers import FunctionalReLUNet, assert_same_state, model_state
from pyfastviz.guided import guided_backprop
from pyfastviz.inspect import (
    activation_grid,
    activations,
    channel_statistics,
    embedding_image,
    extract_features,
    filter_grid,
    filters_image,
    first_layer_filters,
    nearest_neighbours,
    neighbours_figure,
    pca,
    strongest_channels,
    top_patches,
    tsne,
)
from pyfastviz.models import map_to_pil, sample_image


@pytest.fixture
def net():
    torch.manual_seed(0)
    return FunctionalReLUNet().eval()


@pytest.fixture
def images():
    return torch.randn(5, 3, 20, 20, generator=torch.Generator().manual_seed(1))


# ---- filters


def test_first_layer_filters_and_their_grid(net):
    weights = first_layer_filters(net)
    assert torch.equal(weights, net.conv1.weight) and weights.data_ptr() != net.conv1.weight.data_ptr()
    grid = filters_image(weights, scale=4, ncols=3, pad=1)
    assert grid.mode == "RGB" and grid.size == (3 * 13 + 1, 2 * 13 + 1)  # 6 filters of 3x3 at 4 px


def test_each_filter_is_normalised_on_its_own():
    weights = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    scaled = torch.stack([weights[0], 1000 * weights[1] + 5])
    assert filters_image(weights).tobytes() == filters_image(scaled).tobytes()
    tile = torch.from_numpy(np.array(filters_image(weights[:1], scale=1, pad=0)))
    assert tile.min() == 0 and tile.max() == 255


def test_deeper_filters_per_input_channel(net):
    with pytest.raises(ValueError, match="channel="):
        filter_grid(net, "conv2")  # 6 input channels: not a colour picture
    grey = filter_grid(net, "conv2", channel=5, scale=2, pad=0, ncols=8)
    assert grey.size == (8 * 6, 6)
    r, g, b = grey.split()
    assert r.tobytes() == g.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="channel=6"):
        filter_grid(net, "conv2", channel=6)
    with pytest.raises(ValueError, match="layer='bn'"):
        filter_grid(net, "bn")
    with pytest.raises(ValueError, match="weights must have shape"):
        filters_image(torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match="channel=True is not an input channel"):
        filter_grid(net, "conv2", channel=True)
    with pytest.raises(ValueError, match="NaN or infinite"):
        filters_image(torch.full((2, 3, 3, 3), float("nan")))


# ---- activations


def test_activations_equal_the_layer_output_and_leave_the_model_as_found(net, images):
    before = model_state(net)
    net.train()
    training = model_state(net)
    act = activations(net, images, "conv2")
    assert_same_state(training, model_state(net))
    net.eval()
    assert_same_state(before, model_state(net))
    with torch.no_grad():
        expected = net.conv2(F.relu(net.conv1(images)))
    torch.testing.assert_close(act, expected)


def test_unknown_or_reused_layer_is_a_clear_error(net, images):
    with pytest.raises(ValueError, match="layer='conv9'"):
        activations(net, images, "conv9")
    reused = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    reused.forward = lambda x: reused[1](reused[0](reused[1](x)))  # the ReLU runs twice
    with pytest.raises(ValueError, match="fired 2 times"):
        activations(reused, images, "1")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        activations(net, images[0], "conv2")


def test_activation_grid_strongest_channels_first():
    act = torch.zeros(4, 5, 5)
    for channel, level in enumerate([0.1, 3.0, -1.0, 2.0]):
        act[channel] = level
    act[:, 0, 0] += 0.5  # not constant, so the tiles are not blank
    assert strongest_channels(act).tolist() == [1, 3, 0, 2]
    act[3, 4, 4] -= 0.5  # channel 3's map differs from channel 1's
    grid = activation_grid(act, top=2, cell=10)
    assert grid.size == (2 * 12 + 2, 14)
    for cell, channel in enumerate([1, 3]):
        expected = map_to_pil(act[channel]).resize((10, 10), Image.Resampling.NEAREST)
        assert grid.crop((2 + 12 * cell, 2, 12 + 12 * cell, 12)).tobytes() == expected.tobytes()
    with pytest.raises(ValueError, match=r"act must have shape \(C, h, w\)"):
        activation_grid(act[None])
    with pytest.raises(ValueError, match="top"):
        activation_grid(act, top=0)
    with pytest.raises(ValueError, match="cell must be an int >= 1"):
        activation_grid(act, cell=0)
    act[2, 1, 1] = float("nan")  # it would rank channel 2 first
    with pytest.raises(ValueError, match="act has 1 NaN or inf values"):
        strongest_channels(act)


def test_channel_statistics():
    act = torch.tensor([[[[1.0, -2.0]], [[0.0, 4.0]]], [[[3.0, -1.0]], [[-5.0, 0.5]]]])  # (2, 2, 1, 2)
    stats = channel_statistics(act)
    torch.testing.assert_close(stats["mean"], torch.tensor([0.25, -0.125]))
    torch.testing.assert_close(stats["max"], torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(stats["fraction_positive"], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"act must have shape \(N, C, h, w\)"):
        channel_statistics(act[0])


# ---- features


def test_penultimate_features_are_the_last_linear_input(net, images):
    before = model_state(net)
    features = extract_features(net, images, batch_size=2, progress=False)
    assert_same_state(before, model_state(net))
    with torch.no_grad():
        x = F.relu(net.conv1(images))
        x = net.bn(torch.relu(net.conv2(x))).relu()
        expected = F.relu6(net.conv3(x)).mean((2, 3))
    torch.testing.assert_close(features, expected)
    loader = [(images[:3], torch.arange(3)), (images[3:], torch.arange(3, 5))]
    torch.testing.assert_close(extract_features(net, loader, progress=False), expected)


@pytest.mark.parametrize("dtype, expected", [(torch.float64, torch.float64), (torch.bfloat16, torch.float32)])
def test_features_keep_float64_and_widen_16_bit(net, images, dtype, expected):
    model = copy.deepcopy(net).to(dtype)
    features = extract_features(model, images.to(dtype), progress=False)
    assert features.dtype == expected
    if dtype == torch.float64:  # the float64 model's features, not float32-rounded ones
        torch.testing.assert_close(features, extract_features(net, images, progress=False).double(), rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            x = images.double()
            x = F.relu(model.conv1(x))
            x = model.bn(torch.relu(model.conv2(x))).relu()
            assert torch.equal(features, F.relu6(model.conv3(x)).mean((2, 3)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_float32_loader_batches_take_the_model_dtype(net, images, dtype):
    model = copy.deepcopy(net).to(dtype)
    loader = [(images[:3], torch.arange(3)), (images[3:], torch.arange(3, 5))]  # as image_loader yields them
    assert torch.equal(extract_features(model, loader, progress=False),
                       extract_features(model, images.to(dtype), progress=False))


class ClassifierFirst(nn.Module):
    """Its classifier is defined before a body whose squeeze-and-excitation gate is an nn.Linear."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(8, 3)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.gate = nn.Linear(8, 8)

    def forward(self, x):
        x = self.body(x)
        x = x * torch.sigmoid(self.gate(x.mean((2, 3))))[:, :, None, None]
        return self.classifier(x.mean((2, 3)))


def test_penultimate_features_are_the_input_of_the_linear_that_runs_last(images):
    model = ClassifierFirst().eval()
    with torch.no_grad():
        x = model.body(images)
        expected = (x * torch.sigmoid(model.gate(x.mean((2, 3))))[:, :, None, None]).mean((2, 3))
    torch.testing.assert_close(extract_features(model, images, progress=False), expected)


def test_hooks_fire_in_a_compiled_model_that_has_already_run(net, images):
    compiled = torch.compile(net, backend="eager")
    with torch.no_grad():
        compiled(images)  # once run, compiled code no longer checks for hooks added later
    torch.testing.assert_close(activations(compiled, images, "_orig_mod.conv2"), activations(net, images, "conv2"))
    torch.testing.assert_close(extract_features(compiled, images, progress=False),
                               extract_features(net, images, progress=False))
    ours = top_patches(compiled, images, "_orig_mod.conv2", channel=1, k=2, progress=False)
    eager = top_patches(net, images, "conv2", channel=1, k=2, progress=False)
    assert [(p.index, p.row, p.col, p.value) for p in ours] == [(p.index, p.row, p.col, p.value) for p in eager]


def test_named_layer_features_are_pooled(net, images):
    pooled = extract_features(net, images, layer="conv2", progress=False)
    torch.testing.assert_close(pooled, activations(net, images, "conv2").mean((2, 3)))
    with pytest.raises(ValueError, match="no nn.Linear"):
        extract_features(nn.Sequential(nn.Conv2d(3, 4, 3)), images, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(net, images, batch_size=0)


def test_pca_refuses_nan_features():
    broken = torch.randn(4, 3)
    broken[2, 1] = float("nan")
    with pytest.raises(ValueError, match="features has NaN or inf"):
        pca(broken, k=2)


# ---- PCA, t-SNE and their pictures


def test_torch_pca_matches_sklearn():
    generator = torch.Generator().manual_seed(3)
    scales = torch.linspace(5, 0.1, 20)
    features = torch.randn(300, 20, generator=generator) * scales + 7
    coords, ratio = pca(features, k=3)
    ref_coords, ref_ratio = pca(features, k=3, backend="sklearn")
    torch.testing.assert_close(ratio, ref_ratio, rtol=1e-3, atol=1e-5)
    assert coords.shape == (300, 3) and ratio.shape == (3,)
    signs = (coords * ref_coords).sum(0).sign()
    torch.testing.assert_close(coords * signs, ref_coords, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(400, 60), (30, 200)], ids=["N>D", "N<D"])
def test_torch_pca_is_exact_on_a_flat_spectrum(shape, monkeypatch):
    """Random features have nearly equal variances in every direction, where a randomised PCA
    mixes components; the eigendecomposition matches sklearn's full SVD. Beyond EXACT_PCA_SIZE
    the randomised one runs (forced here), still within its stated looseness."""
    from pyfastviz.inspect import embedding

    features = torch.randn(*shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64).relu()
    ref_coords, ref_ratio = pca(features, k=4, backend="sklearn")
    coords, ratio = pca(features, k=4)
    torch.testing.assert_close(ratio, ref_ratio, rtol=1e-5, atol=0)
    torch.testing.assert_close(coords * (coords * ref_coords).sum(0).sign(), ref_coords, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(embedding, "EXACT_PCA_SIZE", 10)
    approximate_ratio = pca(features, k=4)[1]
    assert (approximate_ratio <= ref_ratio * (1 + 1e-5)).all() and approximate_ratio.sum() > 0.8 * ref_ratio.sum()


def test_pca_needs_two_rows_and_embeddings_carry_no_graph():
    with pytest.raises(ValueError, match="PCA needs at least 2 feature rows, got N=1"):
        pca(torch.randn(1, 5))
    features = torch.randn(12, 5, requires_grad=True)
    distances, _ = nearest_neighbours(features, k=2)
    assert not distances.requires_grad and not pca(features)[0].requires_grad


def test_torch_pca_is_deterministic_and_leaves_the_global_rng_alone():
    features = torch.randn(50, 30, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(7)
    first = pca(features, k=2)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(first, pca(features, k=2)))
    assert torch.equal(torch.rand(3), after)


def test_tsne_of_identical_rows_puts_every_point_at_the_origin():
    with pytest.warns(RuntimeWarning, match="5 identical feature rows"):
        assert torch.equal(tsne(torch.ones(5, 8)), torch.zeros(5, 2))


def test_pca_and_tsne_arguments():
    features = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, min\(N, D\) = 3\]"):
        pca(features, k=4)
    with pytest.raises(ValueError, match="backend"):
        pca(features, backend="numpy")
    with pytest.raises(ValueError, match="features must be"):
        pca(features[0])
    with pytest.warns(RuntimeWarning, match="using perplexity=4"):
        assert tsne(features, perplexity=30).shape == (5, 2)
    with pytest.raises(ValueError, match="at least 3"):
        tsne(features[:2])
    with pytest.raises(ValueError, match=r"k must be an int in \[1, D=3\]"):
        tsne(features, k=4)
    with pytest.raises(ValueError, match="perplexity must be a number > 0"):
        tsne(features, perplexity="30")


def test_embedding_image_places_thumbnails_at_the_corners():
    red, blue = Image.new("RGB", (40, 20), (255, 0, 0)), Image.new("RGB", (10, 10), (0, 0, 255))
    canvas = embedding_image([red, blue], torch.tensor([[0.0, 0.0], [1.0, 1.0]]), size=100, thumb=20)
    assert canvas.size == (100, 100)
    assert canvas.getpixel((0, 5)) == (255, 0, 0) and canvas.getpixel((10, 2)) == (255, 255, 255)
    assert canvas.getpixel((90, 90)) == (0, 0, 255) and canvas.getpixel((50, 50)) == (255, 255, 255)
    assert canvas.getpixel((99, 99)) == (255, 255, 255)  # a small image is centred in its cell, not enlarged
    with pytest.raises(ValueError, match="coords"):
        embedding_image([red], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="coords has NaN or inf in 1 row"):
        embedding_image([red, blue], torch.tensor([[0.0, 0.0], [float("nan"), 1.0]]))
    row = neighbours_figure(red, [blue, blue], thumb=16, border=2)
    assert row.size == (3 * 22 + 2, 24)


# ---- top patches


def test_top_patches_are_the_largest_activations_with_their_receptive_fields(net, images):
    before = model_state(net)
    patches = top_patches(net, images, "conv3", channel=2, k=7, batch_size=2, progress=False)
    assert_same_state(before, model_state(net))
    act = activations(net, images, "conv3")[:, 2]  # (5, 14, 14)
    values, flat = act.flatten().topk(7)
    assert [p.value for p in patches] == pytest.approx(values.tolist())
    assert [(p.index, p.row, p.col) for p in patches] == [
        (i // 196, i % 196 // 14, i % 14) for i in flat.tolist()]
    for p in patches:
        assert p.box == (p.col, p.row, p.col + 7, p.row + 7)  # three unpadded 3x3 convolutions: 7x7
        full = guided_backprop(net, images[p.index : p.index + 1], layer="conv3", neuron=(2, p.row, p.col))[0]
        torch.testing.assert_close(p.guided, full[:, p.row : p.row + 7, p.col : p.col + 7])
        full[:, p.row : p.row + 7, p.col : p.col + 7] = 0
        assert full.abs().max() == 0  # nothing outside the box


def test_top_patch_arguments_are_checked(net, images):
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 980\]"):
        top_patches(net, images, "conv3", 0, k=981, progress=False)
    with pytest.raises(ValueError, match="channel=8"):
        top_patches(net, images, "conv3", 8, progress=False)
    with pytest.raises(ValueError, match="layer='conv'"):
        top_patches(net, images, "conv", 0, progress=False)
    with pytest.raises(ValueError, match="images is empty"):
        top_patches(net, images[:0], "conv3", 0, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        top_patches(net, images, "conv3", 0, batch_size=True, progress=False)


def test_top_patches_of_a_model_without_relu_carry_plain_gradients(images):
    """SiLU networks (EfficientNet, ConvNeXt's GELU) have nothing to guide: top_patches warns and
    gives the plain gradient, where it used to raise after computing every activation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 3)).eval()
    with pytest.warns(RuntimeWarning, match="no ReLU-family activation"):
        (patch,) = top_patches(model, images, "2", channel=1, k=1, progress=False)
    x = images[patch.index : patch.index + 1].clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x)[0, 1, patch.row, patch.col], x)
    left, top, right, bottom = patch.box
    torch.testing.assert_close(patch.guided, plain[0, :, top:bottom, left:right])


# ---- on the pretrained default model


def _high_frequency_share(weights: torch.Tensor) -> float:
    """Mean over filters and input channels of |Laplacian|^2 / |w|^2 (replicate padding)."""
    w = weights.detach().float().flatten(0, 1)[:, None]
    laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
    filtered = F.conv2d(F.pad(w, (1, 1, 1, 1), mode="replicate"), laplacian)
    return float((filtered.pow(2).sum((1, 2, 3)) / w.pow(2).sum((1, 2, 3)).clamp_min(1e-12)).mean())


@pytest.mark.slow
def test_trained_first_layer_filters_are_smoother_than_random_ones(default_model):
    trained = first_layer_filters(default_model.net)
    stem = copy.deepcopy(default_model.net._conv_stem)
    torch.manual_seed(0)
    random_shares = []
    for _ in range(5):
        stem.reset_parameters()
        random_shares.append(_high_frequency_share(stem.weight))
    assert _high_frequency_share(trained) < 0.75 * min(random_shares)


PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "china", "flower"]


@pytest.mark.slow
def test_nearest_neighbour_of_a_mirrored_or_cropped_photo_is_the_original(default_model):
    photos = [sample_image(name) for name in PHOTOS]
    crops = [p.crop((p.width // 16, p.height // 16, p.width - p.width // 16, p.height - p.height // 16))
             for p in photos]
    features = extract_features(default_model.net, default_model.preprocess.batch(photos), progress=False)
    queries = extract_features(default_model.net,
                               default_model.preprocess.batch([ImageOps.mirror(p) for p in photos] + crops),
                               progress=False)
    for metric in ("cosine", "l2"):
        _, indices = nearest_neighbours(features, queries, k=1, metric=metric)
        assert indices[:, 0].tolist() == list(range(6)) * 2, metric


@pytest.mark.slow
def test_top_patches_on_the_pretrained_model(default_model):
    net = default_model.net
    x = default_model.preprocess.batch([sample_image("chelsea"), sample_image("astronaut")])
    patches = top_patches(net, x, "_blocks.4", channel=5, k=4, progress=False)
    act = activations(net, x, "_blocks.4")[:, 5]
    assert [p.value for p in patches] == pytest.approx(act.flatten().topk(4).values.tolist())
    for p in patches:
        assert act[p.index, p.row, p.col] == pytest.approx(p.value)
        left, top, right, bottom = p.box
        assert 0 <= left < right <= 224 and 0 <= top < bottom <= 224 and right - left < 224
        full = guided_backprop(net, x[p.index : p.index + 1], layer="_blocks.4", neuron=(5, p.row, p.col))[0]
        assert p.guided.abs().max() > 0
        full[:, top:bottom, left:right] = 0
        assert full.abs().max() == 0  # nothing outside the box


@pytest.mark.slow
def test_reused_module_of_the_default_model_is_a_clear_error(default_model):
    x = default_model.preprocess.batch([sample_image("chelsea")])
    with pytest.raises(ValueError, match="fired 2 times"):
        activations(default_model.net, x, "_blocks.10._swish")
    assert activations(default_model.net, x, "_blocks.10").shape == (1, 112, 14, 14)
