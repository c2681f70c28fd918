"""pyfastviz.nn: InstanceNorm2d as a drop-in for torch.nn.InstanceNorm2d (plus a fused ReLU) and
ConditionalInstanceNorm2d (one scale/shift row per style). CPU tensors: the reference runs
(tests/kernels/test_instance_norm.py runs the kernel)."""

import pytest
import torch
from torch import nn

from pyfastviz import nn as pnn
from pyfastviz.ops import instance_norm


def randomize(module):
    """Non-trivial affine parameters (ones/zeros would hide a missing or swapped one)."""
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param))
    return module


def grads(module, x, grad):
    """(y, dx, {name: dparam}) of module(x) on a fresh leaf x."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad()
    y = module(x)
    y.backward(grad)
    return y, x.grad, {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (5, 7, 6)], ids=["batched", "unbatched"])
def test_instance_norm_matches_torch(affine, shape):
    torch.manual_seed(0)
    ours, theirs = pnn.InstanceNorm2d(5, eps=1e-3, affine=affine), nn.InstanceNorm2d(5, eps=1e-3, affine=affine)
    randomize(theirs)
    ours.load_state_dict(theirs.state_dict())
    x, grad = torch.randn(shape) * 3 + 1, torch.randn(shape)
    y, dx, dparams = grads(ours, x, grad)
    y_ref, dx_ref, dparams_ref = grads(theirs, x, grad)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    assert dparams.keys() == dparams_ref.keys() == ({"weight", "bias"} if affine else set())
    for name in dparams:
        torch.testing.assert_close(dparams[name], dparams_ref[name])


@pytest.mark.parametrize("track_running_stats", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_state_dict_keys_match_and_load_both_ways(affine, track_running_stats):
    kwargs = dict(affine=affine, track_running_stats=track_running_stats)
    ours, theirs = pnn.InstanceNorm2d(4, **kwargs), randomize(nn.InstanceNorm2d(4, **kwargs))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    nn.InstanceNorm2d(4, **kwargs).load_state_dict(ours.state_dict())


@pytest.mark.parametrize("relu", [False, True])
def test_track_running_stats_runs_torch_and_updates_the_stats(relu):
    torch.manual_seed(0)
    ours = pnn.InstanceNorm2d(3, affine=True, track_running_stats=True, relu=relu)
    theirs = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    ours.load_state_dict(randomize(theirs).state_dict())
    act = torch.relu if relu else (lambda t: t)
    for training in (True, False):
        ours.train(training), theirs.train(training)
        x = torch.randn(2, 3, 5, 5) + 2
        torch.testing.assert_close(ours(x), act(theirs(x)))
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)
        assert ours.running_mean.abs().min() > 0.1  # updated by the training step, kept in eval


def test_relu_flag_fuses_relu():
    torch.manual_seed(0)
    theirs = randomize(nn.InstanceNorm2d(4, affine=True))
    ours = pnn.InstanceNorm2d(4, affine=True, relu=True)
    ours.load_state_dict(theirs.state_dict())
    x, grad = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    y, dx, dparams = grads(ours, x, grad)
    y_ref, dx_ref, dparams_ref = grads(nn.Sequential(theirs, nn.ReLU()), x, grad)
    torch.testing.assert_close(y, y_ref)
    assert (y == 0).any() and (y > 0).any()
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(dparams["weight"], dparams_ref["0.weight"])
    torch.testing.assert_close(dparams["bias"], dparams_ref["0.bias"])
    assert "relu=True" in repr(ours) and "relu" not in repr(pnn.InstanceNorm2d(4))


@pytest.mark.filterwarnings("error")  # torch.nn.InstanceNorm2d warns nothing here either
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_on_an_empty_batch_warns_nothing(affine):
    x = torch.randn(0, 4, 8, 8, requires_grad=True)
    y = pnn.InstanceNorm2d(4, affine=affine, relu=True)(x)
    assert y.shape == nn.InstanceNorm2d(4)(x).shape == (0, 4, 8, 8)  # torch's, affine: an IndexError
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_instance_norm_rejects_bad_input():
    norm = pnn.InstanceNorm2d(4, affine=True)
    with pytest.raises(ValueError, match=r"InstanceNorm2d\(4\) got input with 3 channels"):
        norm(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\) or \(C, H, W\) input"):
        norm(torch.randn(4, 5))


def test_instance_norm_edge_cases_behave_as_torch():
    x = torch.randn(2, 3, 5, 5)
    with pytest.warns(UserWarning, match="num_features is not used"):  # no affine: torch warns too
        y = pnn.InstanceNorm2d(4)(x)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(y, nn.InstanceNorm2d(4)(x))
    one_pixel = torch.randn(2, 4, 1, 1)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nn.InstanceNorm2d(4)(one_pixel)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        pnn.InstanceNorm2d(4)(one_pixel)
    tracked = pnn.InstanceNorm2d(4, track_running_stats=True).eval()  # the running statistics: no error
    torch.testing.assert_close(tracked(one_pixel), nn.InstanceNorm2d(4, track_running_stats=True).eval()(one_pixel))


# ---- conditional instance norm --------------------------------------------------------------


def conditional(num_features=4, num_styles=3, relu=False):
    torch.manual_seed(0)
    return randomize(pnn.ConditionalInstanceNorm2d(num_features, num_styles, relu=relu))


def test_conditional_starts_as_plain_instance_norm():
    module = pnn.ConditionalInstanceNorm2d(4, 3)
    assert module.weight.shape == module.bias.shape == (3, 4)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(module(x, 1), nn.functional.instance_norm(x))


@pytest.mark.parametrize("relu", [False, True])
def test_conditional_int_style_uses_that_row(relu):
    module = conditional(relu=relu)
    x = torch.randn(2, 4, 5, 6)
    expected = instance_norm(x, module.weight[2], module.bias[2], relu=relu)
    torch.testing.assert_close(module(x, 2), expected)


def test_conditional_index_tensor_picks_a_row_per_image():
    module = conditional()
    x = torch.randn(3, 4, 5, 6)
    y = module(x, torch.tensor([2, 0, 2]))
    for i, style in enumerate([2, 0, 2]):
        torch.testing.assert_close(y[i:i + 1], module(x[i:i + 1], style))


def test_conditional_blend_of_two_styles_averages_scale_and_shift():
    module = conditional()
    x = torch.randn(2, 4, 5, 6)
    blend = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    y = module(x, blend)
    averaged = instance_norm(x[:1], (module.weight[0] + module.weight[2]) / 2, (module.bias[0] + module.bias[2]) / 2)
    torch.testing.assert_close(y[:1], averaged)
    torch.testing.assert_close(y[1:], module(x[1:], 1))


def test_conditional_gradients_reach_only_the_styles_used():
    module = conditional(num_styles=4)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    module(x, torch.tensor([1, 3, 1])).backward(torch.randn(3, 4, 5, 6))
    for grad in (module.weight.grad, module.bias.grad):
        used = grad.abs().sum(1) > 0
        assert used.tolist() == [False, True, False, True]
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_conditional_takes_numpy_ints_as_style_indices():
    import numpy as np

    module = conditional()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(module(x, np.int64(2)), module(x, torch.tensor([2, 2])))


def test_conditional_rejects_bad_styles():
    module = conditional()
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match=r"style indices must be in \[0, 3\), got \[0, 3\]"):
        module(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"style indices must be in \[0, 3\)"):
        module(x, -1)
    with pytest.raises(ValueError, match=r"style indices must have shape \(2,\), got \(3,\)"):
        module(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"style weights must have shape \(2, 3\), got \(2, 2\)"):
        module(x, torch.ones(2, 2))
    with pytest.raises(ValueError, match="style weights must be finite"):
        module(x, torch.tensor([[1.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]]))
    with pytest.raises(TypeError, match="styles must be an int or an integer or real tensor, got str"):
        module(x, "starry")
    with pytest.raises(TypeError, match="styles must be an int or an integer or real tensor, got bool"):
        module(x, True)
    with pytest.raises(TypeError, match="got a torch.bool tensor"):
        module(x, torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"expects \(N, 4, H, W\) input, got shape \(2, 3, 5, 5\)"):
        module(torch.randn(2, 3, 5, 5), 0)
    with pytest.raises(ValueError, match="num_styles must be >= 1"):
        pnn.ConditionalInstanceNorm2d(4, 0)


def test_conditional_blend_stays_fp32_under_autocast(monkeypatch):
    module = conditional()
    x, blend = torch.randn(2, 4, 5, 5), torch.tensor([[0.3, 0.3, 0.4], [0.1, 0.0, 0.9]])
    seen = []
    monkeypatch.setattr(pnn, "instance_norm", lambda x, weight, bias, **kwargs: seen.append((weight, bias)) or x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # would run the blend's matmul in bf16
        module(x, blend)
    weight, bias = seen[0]
    assert weight.dtype == bias.dtype == torch.float32
    torch.testing.assert_close(weight, blend @ module.weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bias, blend @ module.bias, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_eps_zero_is_taken_as_torch_takes_it(backend):
    """A constant plane of 7s has variance exactly 0: with eps = 0 torch's instance norm gives 0
    there, not NaN."""
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    x[1, 2] = 7.0
    x.requires_grad_(True)
    ours = instance_norm(x, eps=0, backend=backend)
    theirs = nn.functional.instance_norm(x, eps=0)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(*(torch.autograd.grad(y.square().sum(), x)[0] for y in (ours, theirs)))
    torch.testing.assert_close(pnn.InstanceNorm2d(3, eps=0)(x), nn.InstanceNorm2d(3, eps=0)(x))
