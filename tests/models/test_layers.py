import pytest
import torch
from torch import nn

from pyfastviz.models import ActivationTap, find_layer, layer_names


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU()))


def test_find_layer_and_names():
    model = tiny()
    assert find_layer(model, "2.0") is model[2][0]
    assert layer_names(model) == ["0", "1", "2", "2.0", "2.1"]
    assert layer_names(model, nn.Conv2d) == ["0", "2.0"]
    assert layer_names(model, (nn.ReLU, nn.Sequential)) == ["1", "2", "2.1"]


def test_unknown_layer_lists_close_names(default_model):
    with pytest.raises(ValueError, match="layer='_conv_hed'") as info:
        find_layer(default_model.net, "_conv_hed")
    assert "'_conv_head'" in str(info.value)


def test_a_wrapped_models_layer_is_suggested_with_its_prefix():
    model = tiny()
    for wrapped, prefix in ((torch.compile(model), "_orig_mod."), (nn.DataParallel(model), "module.")):
        with pytest.raises(ValueError, match=rf"layer='2\.0' is not a module of .*close names: '{prefix}2\.0'"):
            find_layer(wrapped, "2.0")
        assert find_layer(wrapped, f"{prefix}2.0") is model[2][0]


def test_tap_records_and_removes_hooks():
    model = tiny()
    x = torch.randn(2, 3, 8, 8)
    with ActivationTap(model, ["1", "2.0"]) as tap:
        out = model(x)
    assert not model[1]._forward_hooks and not model[2][0]._forward_hooks
    torch.testing.assert_close(tap["1"], torch.relu(model[0](x)))
    assert tap["2.0"].shape == (2, 2, 6, 6)
    torch.testing.assert_close(torch.relu(tap["2.0"]), out)
    assert not tap["1"].requires_grad
    model(x)  # outside the block: not recorded
    assert len(tap.calls("1")) == 1
    tap.clear()
    with pytest.raises(ValueError, match="did not run"):
        tap["1"]
    with pytest.raises(KeyError, match="not tapped"):
        tap.calls("0")


def test_tap_removes_hooks_after_exception():
    model = tiny()
    with pytest.raises(RuntimeError):
        with ActivationTap(model, "0"):
            model(torch.randn(1, 5, 8, 8))  # wrong channel count
    assert not model[0]._forward_hooks


def test_unknown_layer_registers_nothing():
    model = tiny()
    with pytest.raises(ValueError, match="layer='3'"):
        ActivationTap(model, ["0", "3"])
    assert not model[0]._forward_hooks


def test_tap_detach_false_keeps_graph():
    model = tiny()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with ActivationTap(model, "2.0", detach=False) as tap:
        model(x)
    tap["2.0"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tap_reentry_clears_old_recordings():
    model = tiny()
    tap = ActivationTap(model, "1")
    for _ in range(2):
        with tap:
            model(torch.randn(1, 3, 8, 8))
    assert len(tap.calls("1")) == 1


def test_reused_module_records_every_call(default_model):
    net = default_model.net
    name = "_blocks.1._swish"  # one ReLU6 used after the expand and the depthwise conv
    with ActivationTap(net, [name, "_conv_head"]) as tap, torch.no_grad():
        net(torch.randn(1, 3, 224, 224))
    assert not net._blocks[1]._swish._forward_hooks
    calls = tap.calls(name)
    assert len(calls) == 2
    assert [c.shape for c in calls] == [(1, 96, 112, 112), (1, 96, 56, 56)]  # stride-2 depthwise between
    assert tap["_conv_head"].shape == (1, 1280, 7, 7)
    with pytest.raises(ValueError, match=r"fired 2 times.*tap\.calls"):
        tap[name]


def test_tap_copies_and_detaches_tensors_inside_tuple_outputs():
    lstm = nn.LSTM(4, 3, batch_first=True)
    model = nn.Sequential()
    model.lstm = lstm
    x = torch.randn(2, 5, 4)
    with ActivationTap(model, "lstm") as tap:
        output, (hidden, _) = lstm(x)
        output.relu_()  # an in-place op after the layer
        hidden.zero_()
    recorded, (recorded_hidden, _) = tap["lstm"]
    assert recorded.min() < 0 and recorded_hidden.abs().sum() > 0
    assert not recorded.requires_grad and not recorded_hidden.requires_grad
