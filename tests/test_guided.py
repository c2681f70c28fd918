"""Guided backprop: equal to the module-hook reference, any ReLU form, honest about the rest."""

import warnings

import pytest
import torch
import torch.utils.checkpoint
import torchvision
from torch import nn

from helpers import FunctionalReLUNet, ModuleReLUNet, assert_same_state, model_state, quadrant_shares
from pyfastviz.guided import guided_backprop, guided_backprop_hooks
from pyfastviz.saliency import saliency


@pytest.fixture
def images():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", [torchvision.models.vgg11, torchvision.models.resnet18, torchvision.models.squeezenet1_1])
def test_equals_the_hook_reference_on_torchvision_models(arch):
    torch.manual_seed(0)
    model = arch(weights=None, num_classes=10).eval()  # in-place nn.ReLU modules
    x = torch.randn(2, 3, 64, 64)
    ours = guided_backprop(model, x, [3, 7])
    assert ours.abs().sum() > 0
    assert torch.equal(ours, guided_backprop_hooks(model, x, [3, 7]))


def test_functional_relus_are_guided_like_their_module_twin(images):
    functional = FunctionalReLUNet().eval()
    twin = ModuleReLUNet(functional).eval()
    ours = guided_backprop(functional, images, 2)
    assert torch.allclose(ours, guided_backprop_hooks(twin, images, 2), atol=1e-7)
    # and it differs from the vanilla gradient: the negative gradients were cut
    plain = torch.func.grad(lambda x: functional(x)[:, 2].sum())(images)
    assert not torch.allclose(ours, plain, atol=1e-4)


class ClampReLUNet(FunctionalReLUNet):
    """FunctionalReLUNet with its ReLUs written as clamps, plus clamps that are no ReLU."""

    def forward(self, x):
        x = torch.clamp(self.conv1(x), 0).clamp(max=50.0)  # the second clamp has no floor: not a ReLU
        x = self.conv2(x).clamp(min=0).clone().clamp_(min=-100.0)
        x = self.bn(x).clamp_min_(0)
        x = torch.clip(self.conv3(x), 0, 6.0)
        return self.fc(x.mean((2, 3)))


def test_clamps_with_floor_zero_are_guided_as_relus(images):
    clamped = ClampReLUNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = guided_backprop(clamped, images, 2)
    torch.testing.assert_close(ours, guided_backprop_hooks(ModuleReLUNet(clamped).eval(), images, 2), atol=1e-7,
                               rtol=0)


def test_reference_and_native_backends_agree(images):
    model = FunctionalReLUNet().eval()
    assert torch.equal(guided_backprop(model, images, 1, backend="native"),
                       guided_backprop(model, images, 1, backend="reference"))


def test_several_targets_and_intermediate_units(images):
    model = FunctionalReLUNet().eval()
    maps = guided_backprop(model, images, [[0, 4], [1, 3]])
    assert maps.shape == (2, 2, 3, 16, 16)
    assert torch.allclose(maps[:, 1], guided_backprop(model, images, [4, 3]), atol=1e-7)
    unit = guided_backprop(model, images, layer="conv2", neuron=(1, 5, 6), reduce="abs_max")
    support = unit.nonzero()[:, 1:]  # two 3x3 convs: rows 5..9, cols 6..10
    assert unit.shape == (2, 16, 16) and support.numel()
    assert support[:, 0].min() >= 5 and support[:, 0].max() <= 9
    assert support[:, 1].min() >= 6 and support[:, 1].max() <= 10
    assert guided_backprop(model, images, layer="bn", channel=[0, 2]).shape == (2, 2, 3, 16, 16)


def test_model_left_exactly_as_found_also_after_errors(images):
    model = FunctionalReLUNet().train()
    twin = ModuleReLUNet(FunctionalReLUNet()).train()
    before, twin_before = model_state(model), model_state(twin)
    guided_backprop(model, images, 1)
    guided_backprop_hooks(twin, images, 1)
    with pytest.raises(ValueError, match="out of range"):
        guided_backprop(model, images, 9)
    with pytest.raises(ValueError, match="out of range"):
        guided_backprop_hooks(twin, images, 9)
    assert_same_state(before, model_state(model))
    assert_same_state(twin_before, model_state(twin))


def test_raises_inside_the_forward_pass_and_restores(images):
    class Exploding(FunctionalReLUNet):
        def forward(self, x):
            torch.relu(x)
            raise RuntimeError("boom")

    model = Exploding().train()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(model, images, 0)
    assert_same_state(before, model_state(model))


def test_says_what_it_cannot_guide(images):
    silu_only = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    with pytest.raises(ValueError, match="no ReLU/ReLU6 activation .*silu.*use pyfastviz.saliency"):
        guided_backprop(silu_only, images, 0)
    mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3))
    for target in (0, None):  # the predicted class costs no second forward pass, nor a second count
        with pytest.warns(RuntimeWarning, match="guided 1 ReLU-family calls but left gelu x1 unguided"):
            guided_backprop(mixed, images, target)
    with pytest.raises(ValueError, match="strict=True.*gelu"):
        guided_backprop(mixed, images, 0, strict=True)


@pytest.mark.parametrize("gate, name", [(nn.Sigmoid(), "sigmoid"), (nn.Hardsigmoid(), "hardsigmoid"),
                                        (nn.Tanh(), "tanh")])
def test_gates_are_named_unguided(images, gate, name):
    """Squeeze-and-excitation gates (MobileNetV3's hardsigmoid, EfficientNet's sigmoid) pass their
    gradient unguided, said as for SiLU."""
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gate, self.fc = nn.Conv2d(3, 4, 3), gate, nn.Linear(4, 3)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc((y * self.gate(y.mean((2, 3), keepdim=True))).mean((2, 3)))

    with pytest.warns(RuntimeWarning, match=f"left {name} x1 unguided"):
        guided_backprop(Gated(), images, 0)
    with pytest.raises(ValueError, match=f"strict=True.*{name}"):
        guided_backprop(Gated(), images, 0, strict=True)


def test_compiled_models_are_guided_and_torchscript_is_refused(images):
    model = FunctionalReLUNet().eval()
    expected = guided_backprop(model, images, 2)
    torch.testing.assert_close(guided_backprop(torch.compile(model), images, 2), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but users still have such models
        scripted = torch.jit.trace(model, images)
    with pytest.raises(TypeError, match="TorchScript"):
        guided_backprop(scripted, images, 2)


def test_works_inside_no_grad(images):
    model = FunctionalReLUNet().eval()
    expected = guided_backprop(model, images, 2)
    with torch.no_grad():
        torch.testing.assert_close(guided_backprop(model, images, 2), expected)


def test_hardtanh_is_guided_only_as_a_clamped_relu(images):
    clamped = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardtanh(0.0, 2.0), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guided_backprop(clamped, images, 0)
    symmetric = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardtanh(), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    with pytest.warns(RuntimeWarning, match="hardtanh"):
        guided_backprop(symmetric, images, 0)


@pytest.mark.slow
def test_default_model_reuses_relu6_and_matches_the_hook_reference(default_model):
    from pyfastviz.models import sample_image

    x = default_model.preprocess.batch([sample_image("chelsea"), sample_image("rocket")])
    ours = guided_backprop(default_model.net, x)
    assert torch.allclose(ours, guided_backprop_hooks(default_model.net, x), atol=1e-6)
    assert torch.allclose(ours, guided_backprop(default_model.net, x, backend="reference"), atol=1e-6)


@pytest.mark.slow
def test_guided_backprop_of_the_cat_class_lies_on_the_cat(default_model, cat_quadrant_canvases):
    """At least twice a quadrant's share of the map on the cat (measured 0.70-0.79)."""
    cat = default_model.class_index("Egyptian cat")
    for quadrant, canvas in cat_quadrant_canvases:
        shares = quadrant_shares(guided_backprop(default_model.net, canvas, cat, reduce="abs_max")[0])
        assert shares[quadrant] >= 0.5 and max(shares) == shares[quadrant], (quadrant, shares)


@pytest.mark.slow
def test_neuron_of_an_early_layer_sees_only_its_receptive_field(default_model):
    from pyfastviz.models import sample_image

    x = default_model.preprocess.batch([sample_image("astronaut")])
    # _blocks.1 runs at stride 4; its neuron (row 20, col 30) sits near pixel (80, 120)
    unit = guided_backprop(default_model.net, x, layer="_blocks.1._project_conv", neuron=(5, 20, 30), reduce="abs_max")[0]
    rows, cols = unit.nonzero().unbind(1)
    assert rows.numel() > 0
    assert 60 <= rows.min() and rows.max() <= 100 and 100 <= cols.min() and cols.max() <= 140


class Checkpointed(nn.Module):
    def __init__(self, use_reentrant: bool):
        super().__init__()
        self.block, self.fc = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Linear(4, 3)
        self.use_reentrant = use_reentrant

    def forward(self, x):
        x = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=self.use_reentrant)
        return self.fc(x.mean((2, 3)))


def test_activation_checkpointing_gets_a_clear_error():
    """The backward's recomputation runs outside the guiding mode (torch's CheckpointError before);
    reentrant checkpointing gives no input gradients at all (torch's error named .grad())."""
    x = torch.randn(2, 3, 8, 8)
    assert saliency(Checkpointed(use_reentrant=False).eval(), x, progress=False).shape == (2, 8, 8)
    with pytest.raises(ValueError, match="guided backprop cannot go through activation checkpointing"):
        guided_backprop(Checkpointed(use_reentrant=False).eval(), x)
    for technique in (lambda m: saliency(m, x, progress=False), lambda m: guided_backprop(m, x)):
        with pytest.raises(ValueError, match="reentrant activation checkpointing"):
            technique(Checkpointed(use_reentrant=True).eval())
