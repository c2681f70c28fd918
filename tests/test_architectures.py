"""Techniques on users' own torchvision models (random weights, tiny inputs): in-place ReLUs after a
tapped layer, models that return tuples or dicts, bf16 models, and arguments of the wrong type."""

import copy

import pytest
import torch
import torchvision
from torch import nn

import pyfastviz
from helpers import assert_same_state, model_state
from pyfastviz import inspect
from pyfastviz.models import check_layer_once, layer_output


@pytest.fixture(scope="module")
def resnet():
    """resnet18, eval: bn1 is followed by an in-place nn.ReLU."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _bn1(model, x):
    return model.bn1(model.conv1(x))


def test_activations_of_a_layer_before_an_inplace_relu_are_not_rectified(resnet, images):
    act = inspect.activations(resnet, images, "bn1")
    with torch.no_grad():
        expected = _bn1(resnet, images)
    assert expected.min() < 0
    assert torch.allclose(act, expected, atol=1e-6)
    assert torch.allclose(inspect.extract_features(resnet, images, layer="bn1", progress=False),
                          expected.mean((2, 3)), atol=1e-6)


def test_inversion_target_matches_the_layer_output_it_is_optimised_against(resnet, images):
    with torch.no_grad():  # invert_features/deepdream: target by check_layer_once, steps by layer_output
        assert torch.allclose(check_layer_once(resnet, "bn1", images), layer_output(resnet, "bn1", images), atol=1e-6)


def test_unit_saliency_differentiates_the_layer_output_not_the_relu_after_it(resnet, images):
    ours = pyfastviz.saliency(resnet, images, layer="bn1", channel=3, reduce="none", progress=False)
    x = images.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(_bn1(resnet, x)[:, 3].mean((1, 2)).sum(), x)
    assert torch.allclose(ours, expected, atol=1e-6)


class _TupleOutput(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), x.mean()


class _DictOutput(_TupleOutput):
    def forward(self, x):
        return {"logits": self.net(x)}


CLASS_TECHNIQUES = {
    "saliency": lambda m, x: pyfastviz.saliency(m, x, progress=False),
    "saliency_target": lambda m, x: pyfastviz.saliency(m, x, 3, progress=False),
    "guided": lambda m, x: pyfastviz.guided_backprop(m, x, 3),
    "occlusion": lambda m, x: pyfastviz.occlusion(m, x, window=16, stride=16, progress=False),
    "fooling": lambda m, x: pyfastviz.fooling_images(m, x, steps=1, progress=False),
    "fooling_target": lambda m, x: pyfastviz.fooling_images(m, x, 3, steps=1, progress=False),
    "class_visualization": lambda m, x: pyfastviz.class_visualization(m, 3, size=32, steps=1, progress=False),
}


@pytest.mark.parametrize("wrapper", [_TupleOutput, _DictOutput])
@pytest.mark.parametrize("technique", CLASS_TECHNIQUES)
def test_a_model_without_a_logits_tensor_is_a_clear_error(resnet, images, wrapper, technique):
    model = wrapper(resnet)
    before = model_state(model)
    with pytest.raises(TypeError, match=f"logits tensor, got a {'tuple' if wrapper is _TupleOutput else 'dict'}") as error:
        CLASS_TECHNIQUES[technique](model, images)
    assert ("layer=" in str(error.value)) == (technique.split("_")[0] not in ("occlusion", "fooling"))  # what it takes
    assert_same_state(before, model_state(model))


def test_a_model_without_a_logits_tensor_still_explains_layers(resnet, images):
    maps = pyfastviz.saliency(_TupleOutput(resnet), images, layer="net.layer2", channel=1, progress=False)
    assert maps.shape == (2, 32, 32) and maps.abs().sum() > 0


@pytest.fixture(scope="module")
def bf16_resnet(resnet):
    return copy.deepcopy(resnet).to(torch.bfloat16)


def test_class_visualization_starts_in_a_bf16_models_dtype(bf16_resnet):
    for start in ("blank", "noise"):
        vis = pyfastviz.class_visualization(bf16_resnet, layer="layer2", channel=0, size=32, steps=1,
                                            start=start, progress=False, seed=0)
        assert vis.images.dtype == torch.bfloat16 and torch.isfinite(vis.images.float()).all()


def test_top_patches_on_a_bf16_model(bf16_resnet, images):
    patches = inspect.top_patches(bf16_resnet, images.bfloat16(), "layer2", 1, k=2, progress=False)
    assert len(patches) == 2 and all(p.guided.numel() for p in patches)


def test_deepdream_octaves_on_a_bf16_model(bf16_resnet, images):
    dream = pyfastviz.deepdream(bf16_resnet, images[:1].bfloat16(), "layer1", octaves=2, octave_scale=1.5,
                                steps_per_octave=1, progress=False, seed=0)
    assert dream.images.shape == (1, 3, 32, 32) and dream.images.dtype == torch.bfloat16


@pytest.mark.parametrize("call", [
    lambda m, x: pyfastviz.saliency(m, x, layer=2, channel=0),
    lambda m, x: inspect.activations(m, x, 2),
    lambda m, x: inspect.top_patches(m, x, 2, 0, progress=False),
], ids=["saliency", "activations", "top_patches"])
def test_a_layer_that_is_not_a_name_is_a_type_error(resnet, images, call):
    with pytest.raises(TypeError, match="layer must be a module name"):
        call(resnet, images)


def test_bools_are_not_ints(resnet, images):
    with pytest.raises(ValueError, match="neuron must be"):
        pyfastviz.saliency(resnet, images, layer="layer2", neuron=(True, 0, 0), progress=False)
    with pytest.raises(ValueError, match="batch_size must be"):
        inspect.extract_features(resnet, images, batch_size=True, progress=False)


class ChannelsLastBlocks(nn.Module):
    """A ConvNeXt-like block (permute, LayerNorm and Linears over the last axis, permute back),
    a vision-transformer-like stage (patches folded into the batch) and a multi-branch layer that
    returns a list; a Linear head, or none (an embedding model)."""

    def __init__(self, head: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm, self.fc1, self.act, self.fc2 = nn.LayerNorm(8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)
        self.drop = nn.Dropout(0.1)  # in eval mode its output is its input
        self.tokens = nn.Identity()  # sees (N * 4, h * w / 4, C)
        self.branches = Branches()
        self.head = nn.Linear(8, 10) if head else nn.Identity()

    def forward(self, x):
        x = self.stem(x)
        x = x + self.fc2(self.drop(self.act(self.fc1(self.norm(x.permute(0, 2, 3, 1)))))).permute(0, 3, 1, 2)
        n, c, h, w = x.shape
        patches = self.tokens(x.reshape(n, c, 4, h * w // 4).permute(0, 2, 3, 1).reshape(n * 4, h * w // 4, c))
        x = patches.reshape(n, 4, h * w // 4, c).permute(0, 3, 1, 2).reshape(n, c, h, w)
        return self.head(sum(self.branches(x)).mean((2, 3)))


class Branches(nn.Module):
    def forward(self, x):
        return [x, x.relu()]


@pytest.mark.parametrize("layer, problem", [("fc1", "with channels last"), ("norm", "with channels last"),
                                            ("act", "with channels last"), ("drop", "with channels last"),
                                            ("tokens", "first axis is not the batch"), ("branches", "not one tensor")])
def test_layers_whose_axis_1_is_not_the_channels_are_refused_everywhere(images, layer, problem):
    """Channels were read from axis 1 of these: rows of an (N, H, W, C) map (also after the Linear,
    through an activation and dropout), tokens, or the patches of one image as images (other images
    got no gradient); a list crashed in extract_features."""
    torch.manual_seed(0)
    model = ChannelsLastBlocks().eval()
    before = model_state(model)
    calls = [lambda: pyfastviz.saliency(model, images, layer=layer, channel=0, progress=False),
             lambda: pyfastviz.guided_backprop(model, images, layer=layer, neuron=(0, 1, 1)),
             lambda: inspect.activations(model, images, layer),
             lambda: inspect.extract_features(model, images, layer=layer, progress=False),
             lambda: inspect.top_patches(model, images, layer, channel=0, k=2, progress=False),
             lambda: pyfastviz.StyleTargets(model, images, layers=[layer])]
    for call in calls:
        with pytest.raises(ValueError, match=f"layer={layer!r}.*{problem}"):
            call()
    assert_same_state(before, model_state(model))
    assert inspect.extract_features(model, images, layer="stem", progress=False).shape == (2, 8)


def test_penultimate_features_of_a_model_without_a_head_are_refused(images):
    """The last nn.Linear to run is then inside a block: its input is no (N, D) feature row per image."""
    torch.manual_seed(0)
    headless, with_head = ChannelsLastBlocks(head=False).eval(), ChannelsLastBlocks().eval()
    with pytest.raises(ValueError, match=r"'fc2'\) takes a \(2, 16, 16, 16\) input, not one row per image"):
        inspect.extract_features(headless, images, progress=False)
    assert inspect.extract_features(with_head, images, progress=False).shape == (2, 8)


class LayerNorm2d(nn.LayerNorm):
    """Channels-first layer norm as timm writes it: a LayerNorm subclass that permutes."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_channels_last_is_told_from_the_outputs_axes_not_guessed_from_module_types(images):
    """torchvision's ConvNeXt: Permute, LayerNorm, Linear, GELU, Linear, Permute inside each block;
    a LayerNorm subclass that permutes back (timm's LayerNorm2d) is channels first."""
    torch.manual_seed(0)
    convnext = torchvision.models.convnext_tiny(weights=None).eval()
    for layer in ("features.1.0.block.2", "features.1.0.block.3", "features.1.0.block.4"):  # norm, fc1, GELU
        with pytest.raises(ValueError, match="with channels last"):
            inspect.activations(convnext, images, layer)
    assert inspect.activations(convnext, images, "features.1.0.block").shape == (2, 96, 8, 8)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), LayerNorm2d(5), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)).eval()
    model(images)
    for layer in ("1", "2"):
        assert inspect.activations(model, images, layer).shape == (2, 5, 30, 30)
