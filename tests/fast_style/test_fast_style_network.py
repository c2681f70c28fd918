"""TransformerNet against a plain torch.nn copy of pytorch/examples' transformer_net.py: state_dict
keys and shapes, their checkpoints (with and without running statistics), outputs; sizes; styles."""

import re

import pytest
import torch

from pyfastviz.fast_style import TransformerNet, load_style_network, save_style_network
from pyfastviz.nn import ConditionalInstanceNorm2d, InstanceNorm2d


# ---- pytorch/examples fast_neural_style/neural_style/transformer_net.py (the spec) ----------------
class ExamplesTransformerNet(torch.nn.Module):
    def __init__(self, track_running_stats=False):
        super().__init__()
        norm = lambda c: torch.nn.InstanceNorm2d(c, affine=True, track_running_stats=track_running_stats)  # noqa: E731
        self.conv1 = ExamplesConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = norm(32)
        self.conv2 = ExamplesConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = norm(64)
        self.conv3 = ExamplesConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = norm(128)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ExamplesResidualBlock(128, norm) for _ in range(5))
        self.deconv1 = ExamplesUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = norm(64)
        self.deconv2 = ExamplesUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = norm(32)
        self.deconv3 = ExamplesConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = torch.nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class ExamplesConvLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ExamplesResidualBlock(torch.nn.Module):
    def __init__(self, channels, norm):
        super().__init__()
        self.conv1 = ExamplesConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = norm(channels)
        self.conv2 = ExamplesConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = norm(channels)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class ExamplesUpsampleConvLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = torch.nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))
# ----------------------------------------------------------------------------------------------------


def examples_net(seed=0, **kwargs):
    """pytorch/examples' network with random non-trivial weights (norm affines too)."""
    torch.manual_seed(seed)
    net = ExamplesTransformerNet(**kwargs)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if re.search(r"in\d+\.", name):
                parameter.uniform_(0.5, 1.5) if name.endswith("weight") else parameter.uniform_(-0.5, 0.5)
    return net.eval()


def photo(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


def test_state_dict_keys_and_shapes_match_pytorch_examples():
    ours, theirs = TransformerNet().state_dict(), ExamplesTransformerNet().state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert "res1.conv1.conv2d.weight" in ours and "deconv1.conv2d.weight" in ours


def test_relus_are_fused_into_the_norms_they_follow():
    norms = {name: m.relu for name, m in TransformerNet().named_modules() if isinstance(m, InstanceNorm2d)}
    assert len(norms) == 15
    assert [name for name, relu in norms.items() if not relu] == [f"res{i}.in2" for i in range(1, 6)]


@pytest.mark.parametrize("running_stats", [False, True], ids=["current", "old-with-running-stats"])
def test_loads_a_pytorch_examples_checkpoint_and_matches_its_outputs(tmp_path, running_stats):
    theirs = examples_net(track_running_stats=running_stats)
    path = tmp_path / "candy.pth"
    state = theirs.state_dict()
    if running_stats:  # files from torch < 0.4 hold running_mean/var but no num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)  # what pytorch/examples' train saves
    assert any("running_mean" in k for k in torch.load(path)) == running_stats
    ours = load_style_network(path)
    if running_stats:  # the old checkpoints' modules normalised with batch statistics (no running stats in eval)
        theirs = examples_net(track_running_stats=False)
    x = photo()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-3)
    assert ours.num_styles is None and not ours.training


def test_state_dict_format_loads_into_pytorch_examples(tmp_path):
    ours = load_style_network(_saved(examples_net(seed=1), tmp_path))
    path = save_style_network(ours, tmp_path / "ours.pth", format="state_dict")
    theirs = ExamplesTransformerNet().eval()
    theirs.load_state_dict(torch.load(path, weights_only=True))
    x = photo(1, 36)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name, plain", [("net.pth", True), ("net.PT", True), ("net.model", True),
                                         ("net.safetensors", False), ("net.bin", False)])
def test_the_file_name_picks_the_format(tmp_path, name, plain):
    path = save_style_network(TransformerNet(), tmp_path / name)
    assert (path.read_bytes()[:4] == b"PK\x03\x04") == plain  # torch.save's zip, else safetensors
    if plain:
        ExamplesTransformerNet().load_state_dict(torch.load(path, weights_only=True))
    assert load_style_network(path).num_styles is None


def _saved(net, tmp_path):
    torch.save(net.state_dict(), tmp_path / "net.pth")
    return tmp_path / "net.pth"


@pytest.mark.parametrize("height, width", [(1, 1), (5, 7), (31, 33), (30, 41), (64, 64)])
def test_output_size_equals_input_size(height, width):
    net = TransformerNet().eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, height, width) * 255).shape == (2, 3, height, width)


def test_multi_style_network_has_conditional_norms_with_the_same_keys():
    net = TransformerNet(num_styles=3)
    norms = [m for m in net.modules() if isinstance(m, ConditionalInstanceNorm2d)]
    assert len(norms) == 15 and all(m.num_styles == 3 for m in norms)
    assert list(net.state_dict()) == list(TransformerNet().state_dict())
    assert net.state_dict()["in1.weight"].shape == (3, 32)


def test_multi_style_forward_per_image_styles_and_blends():
    torch.manual_seed(0)
    net = TransformerNet(num_styles=2).eval()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if re.search(r"in\d+\.", name):
                parameter.uniform_(0.5, 1.5) if name.endswith("weight") else parameter.uniform_(-0.5, 0.5)
        x = photo(2, 16)
        by_index = net(x, torch.tensor([0, 1]))
        torch.testing.assert_close(by_index[0], net(x[:1], 0)[0])
        torch.testing.assert_close(by_index[1], net(x[1:], 1)[0])
        torch.testing.assert_close(net(x, torch.tensor([[1.0, 0.0], [0.0, 1.0]])), by_index)
        assert not torch.allclose(net(x, 0), net(x, 1))


def test_multi_style_network_checks_its_styles_once_per_forward(monkeypatch):
    """Each check syncs with the GPU (style index range, finite weights): once, not in all 15 norms."""
    import pyfastviz.fast_style.network as network
    import pyfastviz.nn

    calls, original = [], pyfastviz.nn.style_mixture

    def counting(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(network, "style_mixture", counting)
    monkeypatch.setattr(pyfastviz.nn, "style_mixture", lambda *a: pytest.fail("a norm checked the styles again"))
    net = TransformerNet(num_styles=2).eval()
    with torch.no_grad():
        net(photo(2, 16), torch.tensor([0, 1]))
    assert len(calls) == 1


def test_styles_argument_errors():
    x = photo(1, 16)
    with pytest.raises(ValueError, match="styles must be None"):
        TransformerNet()(x, 0)
    with pytest.raises(ValueError, match="styles is required"):
        TransformerNet(2)(x)
    with pytest.raises(ValueError, match=r"style indices must be in \[0, 2\)"):
        TransformerNet(2)(x, torch.tensor([2]))
    with pytest.raises(ValueError, match="num_styles"):
        TransformerNet(0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\)"):
        TransformerNet()(torch.rand(1, 1, 16, 16))
