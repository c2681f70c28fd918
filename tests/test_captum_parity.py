"""Gradient saliency and guided backprop equal Captum's where the two define the same quantity:
Saliency, GuidedBackprop (nn.ReLU models, in-place and reused modules) and NeuronGuidedBackprop.
Captum is a test extra; these tests skip without it."""

import pytest
import torch
import torchvision
from torch import nn

import pyfastviz

captum_attr = pytest.importorskip("captum.attr", reason="captum is not installed (pip install .[test])")
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU",  # Captum's own warnings
                                        "ignore:Input Tensor 0 did not already require gradients")


class ReusedReLUNet(nn.Module):
    """One nn.ReLU module runs twice per forward, another is in place."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.conv3, self.fc = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)
        self.relu, self.relu_inplace = nn.ReLU(), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu_inplace(self.conv2(self.relu(self.conv1(x))))
        return self.fc(self.relu(self.conv3(x)).mean((2, 3)))


def with_running_statistics(model: nn.Module) -> nn.Module:
    """Eval-mode batch norms that are not the identity."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return with_running_statistics(torchvision.models.resnet18(weights=None, num_classes=10))


def reused_relu_net() -> nn.Module:
    torch.manual_seed(0)
    return ReusedReLUNet().eval()


def images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def per_column(attribute, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Captum called once per target column, stacked as pyfastviz's (N, K, ...)."""
    return torch.stack([attribute(x.clone(), target=targets[:, k]) for k in range(targets.shape[1])], 1)


TARGETS = torch.tensor([[1, 4, 7], [3, 3, 0]])
MODELS = {"resnet18": resnet18, "reused in-place ReLUs": reused_relu_net}


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_gradient_saliency_equals_captum_saliency(build):
    model, x = build(), images()
    theirs = per_column(lambda x, target: captum_attr.Saliency(model).attribute(x, target=target, abs=False),
                        x, TARGETS)
    ours = pyfastviz.saliency(model, x, TARGETS, reduce="none", progress=False)  # one batched backward
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    maps = pyfastviz.saliency(model, x, TARGETS[:, 0].tolist(), progress=False)
    torch.testing.assert_close(maps, theirs[:, 0].abs().amax(1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_guided_backprop_equals_captum_on_relu_modules(build):
    model, x = build(), images()
    theirs = per_column(captum_attr.GuidedBackprop(model).attribute, x, TARGETS)
    predicted = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=model(x).argmax(1))
    gradient = pyfastviz.saliency(model, x, TARGETS, reduce="none", progress=False)
    assert (theirs - gradient).abs().amax() > 0.1 * gradient.abs().amax()  # guiding changes these maps
    for backend in ("native", "reference"):
        torch.testing.assert_close(pyfastviz.guided_backprop(model, x, TARGETS, backend=backend), theirs,
                                   rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pyfastviz.guided_backprop(model, x), predicted, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer", ["layer1", "layer2.0.conv1", "layer3"])
def test_guided_backprop_of_a_channel_equals_captum_neuron_guided_backprop(layer):
    """pyfastviz's channel objective is the channel's mean activation; Captum's selector sums unless
    given that mean."""
    model, x, channel = resnet18(), images(), 5
    module = dict(model.named_modules())[layer]
    theirs = captum_attr.NeuronGuidedBackprop(model, module).attribute(
        x.clone(), neuron_selector=lambda output: output[:, channel].flatten(1).mean(1))
    torch.testing.assert_close(pyfastviz.guided_backprop(model, x, layer=layer, channel=channel), theirs,
                               rtol=1e-5, atol=1e-8)
