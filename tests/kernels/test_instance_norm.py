"""The Triton instance-norm kernels (kernels/instance_norm.py) against reference.instance_norm and
F.instance_norm: values and gradients (x, weight, bias), dtypes, plane sizes from 1 to 512*512,
layouts, per-image affine, fused ReLU, empty inputs, eps, the split path, registration.
Runs on CPU tensors under TRITON_INTERPRET=1, or on a CUDA GPU.

Tolerances (kernel and reference both compute in fp32 and round once to the output dtype):
fp32 rtol 1e-5 for y, 1e-4 for the gradients (sums over up to 512*512 elements in another
order); fp16 rtol 2e-3 (2 ulp); bf16 rtol 1.6e-2 (2 ulp); each plus an absolute term of that
rtol times the largest |expected|, for entries near zero.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from tests.kernels.triton_setup import DEVICE, TRITON_MARKS  # noqa: E402

from pyfastviz import nn as pnn  # noqa: E402
from pyfastviz.kernels import instance_norm as kernels  # noqa: E402
from pyfastviz.ops import reference  # noqa: E402
from pyfastviz.ops.instance_norm import instance_norm  # noqa: E402

op_module = importlib.import_module("pyfastviz.ops.instance_norm")  # not the function pyfastviz.ops exports

pytestmark = TRITON_MARKS
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
GRAD_RTOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = list(RTOL)


def close(actual, expected, rtol):
    atol = rtol * expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def randn(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=DEVICE, dtype=dtype)


def affine(kind, n, c, dtype=torch.float32):
    """(weight, bias) of a kind: "none", "channel" (C,) or "image" (N, C)."""
    if kind == "none":
        return None, None
    shape = (c,) if kind == "channel" else (n, c)
    return 1 + 0.5 * randn(shape, dtype, seed=2), 0.5 * randn(shape, dtype, seed=3)


def leaf(t):
    """An independent leaf with t's values and strides (None stays None)."""
    if t is None:
        return None
    copy = t.detach().clone(memory_format=torch.preserve_format)
    if copy.stride() != t.stride():  # clone drops non-dense strides: use t itself
        copy = t.detach()
    return copy.requires_grad_(True)


def run(fn, x, weight, bias, grad):
    """(y, dx, dweight, dbias) of fn(x, weight, bias) on independent leaves; None for absent params."""
    inputs = [leaf(t) for t in (x, weight, bias)]
    y = fn(*inputs)
    grads = iter(torch.autograd.grad(y, [t for t in inputs if t is not None], grad))
    return (y, *[None if t is None else next(grads) for t in inputs])


def triton_and_reference(x, weight, bias, grad, eps=1e-5, relu=False):
    return [run(lambda a, w, b, backend=backend: instance_norm(a, w, b, eps=eps, relu=relu, backend=backend),
                x, weight, bias, grad)
            for backend in ("triton", "reference")]


def assert_match(results, dtype):
    (y, *grads), (y_ref, *grads_ref) = results
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    close(y, y_ref, RTOL[dtype])
    for g, g_ref in zip(grads, grads_ref):
        assert (g is None) == (g_ref is None)
        if g is not None:
            assert g.dtype == g_ref.dtype and g.shape == g_ref.shape
            close(g, g_ref, GRAD_RTOL[dtype])


# (N, C, H, W): planes of 1, 35, 221, 4095 (the largest fused interpreted tile), 4900 (split),
# 13000 and 16384 elements (on a GPU: the fused kernels at BLOCK_K = 16384, their largest tile;
# interpreted: split); N*C from 1 to 512
SHAPES = [(1, 1, 1, 1), (2, 3, 1, 1), (2, 3, 5, 7), (3, 5, 13, 17), (2, 256, 4, 4), (1, 2, 63, 65), (2, 3, 70, 70),
          (1, 2, 100, 130), (2, 3, 128, 128)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_values_and_gradients_match_reference(dtype, shape):
    n, c = shape[:2]
    x = randn(shape, dtype) * 3 + 1
    weight, bias = affine("channel", n, c, dtype)
    assert_match(triton_and_reference(x, weight, bias, randn(shape, dtype, seed=1), relu=True), dtype)


@pytest.mark.parametrize("kind", ["none", "channel", "image"])
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
def test_affine_kinds_and_relu(kind, relu):
    shape = (3, 4, 9, 11)
    weight, bias = affine(kind, 3, 4)
    assert_match(triton_and_reference(randn(shape), weight, bias, randn(shape, seed=1), relu=relu), torch.float32)


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (4, 6, 33, 31), (2, 3, 70, 70)], ids=str)
def test_matches_torch_instance_norm(shape, relu):
    c = shape[1]
    weight, bias = affine("channel", shape[0], c)

    def torch_fn(a, w, b):
        y = F.instance_norm(a, weight=w, bias=b, eps=1e-5)
        return torch.relu(y) if relu else y

    grad = randn(shape, seed=1)
    (y, *grads) = run(lambda a, w, b: instance_norm(a, w, b, relu=relu, backend="triton"), randn(shape), weight,
                      bias, grad)
    (y_ref, *grads_ref) = run(torch_fn, randn(shape), weight, bias, grad)
    close(y, y_ref, 1e-5)
    for g, g_ref in zip(grads, grads_ref):
        close(g, g_ref, 1e-4)


@pytest.mark.parametrize("shape,dtype", [((1, 1, 512, 512), torch.float32), ((2, 3, 300, 301), torch.bfloat16)],
                         ids=["1x1x512x512-fp32", "2x3x300x301-bf16"])
def test_big_planes_use_the_split_path(shape, dtype):
    n, c, h, w = shape
    x = randn(shape, dtype) * 2 - 3  # an offset mean: catches variance by E[x^2] - E[x]^2
    _, block_k = kernels.choose_tiles(c, h * w, h * w, 1, x.element_size(), kernels.FUSED_TILE_FWD)
    assert block_k < h * w  # the plane does not fit one tile
    weight, bias = affine("image", n, c)
    assert_match(triton_and_reference(x, weight, bias, randn(shape, dtype, seed=1), relu=True), dtype)


@pytest.mark.parametrize("split", [1, 2, 5])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_split_slices_match_reference(split, channels_last):
    x = randn((2, 3, 100, 100)) + 5
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight, bias = affine("image", 2, 3)  # (N, C): their reference gradients are the kernel's rows
    grad = randn(x.shape, seed=1)
    y_ref, *grads_ref = run(lambda a, w, b: reference.instance_norm(a, w, b, relu=True), x, weight, bias, grad)
    y, mean, rstd = kernels.instance_norm_forward(x, weight, bias, 1e-5, True, split=split)
    close(y, y_ref, RTOL[torch.float32])
    close(mean, x.mean((2, 3)), 1e-5)
    close(rstd, torch.rsqrt(x.var((2, 3), unbiased=False) + 1e-5), 1e-5)
    grads = kernels.instance_norm_backward(grad, x, weight, bias, mean, rstd, True, split=split)
    for g, g_ref in zip(grads, grads_ref):  # dx, dweight rows, dbias rows
        close(g, g_ref, GRAD_RTOL[torch.float32])


def test_split_is_capped(monkeypatch):
    monkeypatch.setattr(kernels, "num_sms", lambda device: 132)  # an H100: one program would want 528 slices
    K = 512 * 512
    # (1, 64, 512, 512) bf16 channels_last: one program of 64 channels side by side, BLOCK_K = 64
    assert kernels.choose_tiles(64, K, 1, 64, 2, kernels.FUSED_TILE_FWD) == (64, 64)
    assert kernels.choose_split(1, K, 64, torch.device(DEVICE)) == kernels.MAX_SPLIT
    assert kernels.choose_split(1, K, 4096, torch.device(DEVICE)) == 32  # below the cap: unchanged


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 37, 6, 11), (1, 20, 70, 70)], ids=["fused", "split"])
def test_channels_last_is_read_in_place_and_kept(dtype, shape):
    x = randn(shape, dtype).to(memory_format=torch.channels_last)
    assert kernels.plane_strides(x) == (x.stride(0), 1, shape[1])  # read in place: one plane stride, C
    weight, bias = affine("channel", *shape[:2])
    results = triton_and_reference(x, weight, bias, randn(shape, dtype, seed=1), relu=True)
    assert_match(results, dtype)
    y, dx = results[0][:2]
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("make", [
    lambda t: t[:, ::2],                          # channel slice: planes still merge, read in place
    lambda t: t[:, :, 1:, 2:],                    # spatial slice: copied to contiguous
    lambda t: t.transpose(2, 3),                  # dense, but H and W strides do not merge
    lambda t: t[:1].expand(3, -1, -1, -1),        # batch stride 0
], ids=["channel_slice", "spatial_slice", "transposed", "expanded"])
def test_non_contiguous_input_and_grad(make):
    x = make(randn((3, 8, 9, 10)))
    n, c = x.shape[:2]
    weight, bias = affine("image", n, c)
    grad = randn(x.shape[:2] + x.shape[2:][::-1], seed=1).transpose(2, 3)  # a non-contiguous grad too
    results = triton_and_reference(x, weight, bias, grad, relu=True)
    assert_match(results, torch.float32)
    assert results[0][0].stride() == torch.empty_like(x).stride()  # x's memory format


def test_channel_slice_is_not_copied():
    x = randn((2, 8, 5, 6))[:, ::2]
    assert kernels.plane_strides(x) == (240, 60, 1)
    assert kernels.plane_strides(x.transpose(2, 3)) is None  # this one is copied


def test_strided_and_per_image_parameters_and_mixed_dtypes():
    x = randn((2, 4, 6, 7), torch.bfloat16)
    weight = randn((8,), seed=2)[::2]  # (C,) at stride 2, fp32 with bf16 x
    bias = randn((4, 2), seed=3).t()  # (N, C) transposed
    results = triton_and_reference(x, weight, bias, randn(x.shape, torch.bfloat16, seed=1), relu=True)
    assert_match(results, torch.bfloat16)
    assert results[0][2].dtype == torch.float32 and results[0][3].shape == (2, 4)


def test_relu_masks_the_gradient():
    x = randn((2, 3, 8, 8))
    bias = torch.full((3,), -0.5, device=DEVICE)  # about a third of y is > 0
    grad = torch.ones_like(x)
    y, _, _, dbias = run(lambda a, w, b: instance_norm(a, w, b, relu=True, backend="triton"), x, None, bias, grad)
    xhat = (x - x.mean((2, 3), keepdim=True)) * torch.rsqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    positive = xhat > 0.5
    assert torch.equal(y > 0, positive)
    torch.testing.assert_close(dbias, positive.sum((0, 2, 3)).float())
    assert_match(triton_and_reference(x, None, bias, grad, relu=True), torch.float32)


@pytest.mark.filterwarnings("ignore:var\\(\\):UserWarning")  # the reference's var() on H*W == 0
@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (2, 0, 5, 5), (2, 3, 0, 4)])
def test_empty_inputs(shape):
    n, c = shape[:2]
    weight, bias = affine("channel", n, c)
    (y, dx, dw, db), _ = results = triton_and_reference(randn(shape), weight, bias, randn(shape, seed=1))
    assert y.shape == shape and dx.shape == shape
    assert torch.equal(dw, torch.zeros(c, device=DEVICE)) and torch.equal(db, torch.zeros(c, device=DEVICE))
    assert_match(results, torch.float32)


@pytest.mark.parametrize("eps", [1e-5, 0.5, 3])
def test_eps_is_passed_through(eps):
    x = randn((2, 3, 6, 6)) * 0.5
    x[0, 0] = 2.0  # a constant plane: y = bias whatever eps, dx = 0
    weight, bias = affine("channel", 2, 3)
    results = triton_and_reference(x, weight, bias, randn(x.shape, seed=1), eps=eps)
    assert_match(results, torch.float32)
    y = results[0][0]
    assert torch.equal(y[0, 0], bias[0].expand(6, 6))
    rstd = torch.rsqrt(x[1, 2].var(unbiased=False) + eps)
    close(y[1, 2], (x[1, 2] - x[1, 2].mean()) * rstd * weight[2] + bias[2], 1e-5)


def test_module_parameters_get_gradients(monkeypatch):
    monkeypatch.setattr(op_module, "use_triton", lambda x, backend, *params: True)  # the kernel on CPU tensors too
    torch.manual_seed(0)
    module = pnn.InstanceNorm2d(5, affine=True, relu=True).to(DEVICE)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
    x = randn((2, 5, 7, 6)).requires_grad_(True)
    grad = randn(x.shape, seed=1)
    module(x).backward(grad)
    expected = run(lambda a, w, b: reference.instance_norm(a, w, b, relu=True), x, module.weight, module.bias, grad)
    close(x.grad, expected[1], 1e-4)
    close(module.weight.grad, expected[2], 1e-4)
    close(module.bias.grad, expected[3], 1e-4)


def test_conditional_instance_norm_gets_style_gradients(monkeypatch):
    torch.manual_seed(0)
    module = pnn.ConditionalInstanceNorm2d(4, 3, relu=True).to(DEVICE)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
    x = randn((2, 4, 6, 5))
    styles = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]], device=DEVICE)
    grad = randn(x.shape, seed=1)
    results = []
    for kernel in (True, False):
        monkeypatch.setattr(op_module, "use_triton", lambda x, backend, *params, kernel=kernel: kernel)
        module.zero_grad()
        leaf_x = x.clone().requires_grad_(True)
        module(leaf_x, styles).backward(grad)
        results.append((leaf_x.grad, module.weight.grad.clone(), module.bias.grad.clone()))
    for got, expected in zip(*results):
        close(got, expected, 1e-4)
    assert results[0][1][:, 0].abs().min() > 0  # every style row used by the blend has a gradient


@pytest.mark.parametrize("args", [
    (randn((2, 5, 4, 6)), None, None, 1e-5, False),
    (randn((2, 5, 4, 6)), randn((5,), seed=2), randn((5,), seed=3), 1e-5, True),
    (randn((2, 5, 3, 7)).to(memory_format=torch.channels_last), randn((2, 5), seed=2), None, 0.1, True),
    (randn((3, 4, 5, 5), torch.float16), None, randn((4,), torch.float16, seed=3), 1e-5, False),
    (randn((2, 4, 6, 5), torch.bfloat16), randn((4,), torch.bfloat16, seed=2), randn((2, 4), seed=3), 1e-5, True),
    (randn((2, 3, 7, 5)).transpose(2, 3), randn((2, 3), seed=2), randn((3,), seed=3), 1e-5, True),
    (randn((2, 5, 4, 6)), randn((5,), seed=2).expand(2, 5), randn((5, 2), seed=3).t(), 1e-5, True),
    (randn((2, 3, 70, 70)), randn((3,), seed=2), randn((3,), seed=3), 1e-5, True),
    (randn((0, 3, 4, 4)), randn((3,), seed=2), None, 1e-5, False),
], ids=["plain", "affine_relu", "channels_last_per_image", "fp16", "bf16", "transposed", "expanded_strided_params",
        "split", "empty"])
def test_opcheck(args):
    x, weight, bias, eps, relu = args
    inputs = [leaf(t) for t in (x, weight, bias)]  # keeps the strides (clone would drop the expanded ones)
    torch.library.opcheck(torch.ops.pyfastviz.instance_norm.default, (*inputs, eps, relu))
    _, mean, rstd = torch.ops.pyfastviz.instance_norm(x, weight, bias, eps, relu)
    grad = torch.randn_like(x)
    torch.library.opcheck(torch.ops.pyfastviz.instance_norm_backward.default,
                          (grad, x, weight, bias, mean, rstd, relu))


def test_works_under_torch_compile(monkeypatch):
    monkeypatch.setattr(op_module, "use_triton", lambda x, backend, *params: True)  # the kernel on CPU tensors too
    torch.manual_seed(0)
    norm = pnn.InstanceNorm2d(6, affine=True, relu=True).to(DEVICE)
    with torch.no_grad():
        norm.bias.uniform_(-0.5, 0.5)

    def block(t):
        return (norm(t * 2.0) * 3.0).square().sum()

    compiled = torch.compile(block, fullgraph=True, dynamic=False)
    x = randn((2, 6, 5, 7)).requires_grad_(True)
    loss = compiled(x)
    dx, dw = torch.autograd.grad(loss, (x, norm.weight))
    loss_ref = block(x)
    dx_ref, dw_ref = torch.autograd.grad(loss_ref, (x, norm.weight))
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(dw, dw_ref)
    with monkeypatch.context() as patch:  # and both agree with the reference
        patch.setattr(op_module, "use_triton", lambda x, backend, *params: False)
        close(loss, block(x).detach(), 1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 300, 300)], ids=["one-block", "split"])
def test_fused_relu_keeps_nan_as_torch_relu_does(shape):
    """A plane with a NaN or inf is NaN throughout; the fused ReLU must not turn it into zeros."""
    x = randn(shape)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = float("nan"), float("inf")
    grad = randn(shape, seed=1)
    (y, dx, _, _), (y_ref, dx_ref, _, _) = triton_and_reference(x, None, None, grad, relu=True)
    assert y[0, :2].isnan().all() and y_ref[0, :2].isnan().all()
    assert dx[0, :2].isnan().all() and dx_ref[0, :2].isnan().all()
    close(y[1:], y_ref[1:], 1e-5)
    close(dx[1:], dx_ref[1:], 1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 300, 300)], ids=["one-block", "split"])
def test_a_constant_plane_with_eps_zero_normalises_to_zero(shape):
    """1 / sqrt(0 + 0) is taken as 0 there, as ATen's batch norm (and F.instance_norm) take it."""
    x = randn(shape)
    x[0, 1] = 3.0
    grad = randn(shape, seed=1)
    (y, dx, _, _), (y_ref, dx_ref, _, _) = triton_and_reference(x, None, None, grad, eps=0)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all() and (y[0, 1] == 0).all()
    close(y, y_ref, 1e-5)
    close(dx, dx_ref, 1e-4)
