"""instance_norm's CPU side: the reference (the spec), argument errors and backend dispatch (the
fallback when Triton is missing: test_triton_backend.py). No Triton kernel runs here
(tests/kernels/test_instance_norm.py runs them)."""

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F

from pyfastviz.ops import _triton, reference
from pyfastviz.ops.instance_norm import instance_norm

op_module = importlib.import_module("pyfastviz.ops.instance_norm")  # not the function pyfastviz.ops exports


def naive_instance_norm(x, weight=None, bias=None, eps=1e-5, relu=False):
    """Plane by plane in float64, straight from the definition."""
    out = torch.empty(x.shape, dtype=torch.float64)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[i, c].double()
            y = (plane - plane.mean()) / torch.sqrt(((plane - plane.mean()) ** 2).mean() + eps)
            if weight is not None:
                y = y * (weight[c] if weight.dim() == 1 else weight[i, c]).double()
            if bias is not None:
                y = y + (bias[c] if bias.dim() == 1 else bias[i, c]).double()
            out[i, c] = y.clamp(min=0) if relu else y
    return out


@pytest.mark.parametrize("kind", ["none", "channel", "image"])
@pytest.mark.parametrize("relu", [False, True])
def test_reference_matches_the_definition_and_gradchecks(kind, relu):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    shape = {"none": None, "channel": (3,), "image": (2, 3)}[kind]
    weight = None if shape is None else torch.randn(shape, dtype=torch.float64, requires_grad=True)
    bias = None if shape is None else torch.randn(shape, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(instance_norm(x, weight, bias, eps=0.1, relu=relu),
                               naive_instance_norm(x, weight, bias, eps=0.1, relu=relu))
    inputs = tuple(t for t in (x, weight, bias) if t is not None)
    assert torch.autograd.gradcheck(
        lambda *t: reference.instance_norm(t[0], *(t[1:] or (None, None)), eps=0.1, relu=relu), inputs)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_reference_backend_equals_torch_instance_norm(affine, relu):
    x = torch.randn(3, 4, 7, 6).to(memory_format=torch.channels_last)
    weight, bias = (torch.randn(4), torch.randn(4)) if affine else (None, None)
    y = instance_norm(x, weight, bias, eps=1e-3, relu=relu, backend="reference")
    expected = F.instance_norm(x, weight=weight, bias=bias, eps=1e-3)
    torch.testing.assert_close(y, torch.relu(expected) if relu else expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_fp32_and_rounded_once(dtype):
    x = (torch.randn(2, 3, 8, 8) * 4 + 2).to(dtype)
    y = instance_norm(x)  # CPU tensor: ATen's batch_norm
    assert y.dtype == dtype
    assert torch.equal(y, F.instance_norm(x.float()).to(dtype))


def test_cpu_tensors_use_atens_batch_norm_without_a_warning(monkeypatch):
    calls = []
    monkeypatch.setattr(op_module, "aten_instance_norm", lambda *a: calls.append(a[3:]) or a[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        instance_norm(torch.randn(1, 2, 3, 3), eps=0.5, relu=True)
        instance_norm(torch.randn(1, 2, 3, 3, dtype=torch.float64))
    assert calls == [(0.5, True), (1e-5, False)]


def leaves_of(*tensors):
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["none", "channel", "image"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("batch", [1, 2])  # one channels_last image is a view of itself as (1, N*C, H, W)
def test_aten_path_equals_the_reference(dtype, kind, layout, relu, batch):
    """Values, gradients and memory format (fp16/bf16: statistics and affine in fp32, so equal)."""
    x = (torch.randn(batch, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 3 + 1).to(dtype)
    x = {"contiguous": x, "channels_last": x.to(memory_format=torch.channels_last),
         "transposed": x.transpose(2, 3)}[layout]
    shape = {"none": None, "channel": (3,), "image": (batch, 3)}[kind]
    weight, bias = (None, None) if shape is None else (torch.randn(shape).to(dtype), torch.randn(shape).to(dtype))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    results = []
    for backend in ("auto", "reference"):
        leaves = leaves_of(x, weight, bias)
        y = instance_norm(*leaves, eps=1e-3, relu=relu, backend=backend)
        results.append((y, torch.autograd.grad(y, [t for t in leaves if t is not None], grad)))
    (y, grads), (y_ref, grads_ref) = results
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    torch.testing.assert_close(y, y_ref)
    # A copied (transposed) plane sums in another order: 16-bit gradients may differ in their last bit.
    rtol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-5)
    for actual, expected in zip(grads, grads_ref):
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def gradient_in_layout(grad: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as `grad`, stored another way."""
    if layout == "channels_last":
        return grad.contiguous(memory_format=torch.channels_last)
    if layout == "hwnc":  # N and C adjacent: a (1, N*C, H, W) view of it is channels_last
        return grad.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
    return grad[:, :, :1].expand(grad.shape)  # "expanded": stride 0 over H


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("grad_layout", ["channels_last", "hwnc", "expanded"])
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("batch", [1, 2])
def test_aten_path_gradients_for_any_output_gradient_layout(dtype, grad_layout, x_layout, batch):
    """ATen's CPU batch_norm backward mishandles a gradient laid out unlike its input (off by O(1); an
    expanded fp16 gradient of large activations: inf), as torch's own F.instance_norm does for N = 1."""
    generator = torch.Generator().manual_seed(0)
    scale = 1e4 if dtype == torch.float16 else 1.0
    x = (torch.randn(batch, 3, 4, 5, generator=generator) * scale).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last) if x_layout == "channels_last" else x
    weight, bias = torch.randn(3, generator=generator).to(dtype), torch.randn(3, generator=generator).to(dtype)
    grad = gradient_in_layout(torch.randn(x.shape, generator=generator).to(dtype), grad_layout)
    results = []
    for backend in ("auto", "reference"):
        leaves = leaves_of(x, weight, bias)
        results.append(torch.autograd.grad(instance_norm(*leaves, backend=backend), leaves, grad))
    tolerance = 2e-3 if dtype == torch.float16 else 1e-5
    for actual, wanted in zip(*results):
        assert torch.isfinite(actual).all()
        torch.testing.assert_close(actual, wanted, rtol=tolerance, atol=tolerance * wanted.abs().max().item())


@pytest.mark.filterwarnings("error")  # no "degrees of freedom <= 0" from var() on empty input, as torch
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 7), (2, 3, 1, 1), (0, 3, 4, 4), (2, 0, 3, 3), (2, 3, 0, 4)])
def test_aten_path_on_odd_and_empty_shapes(shape):
    x, weight = torch.randn(shape), torch.randn(shape[1])
    leaves, leaves_ref = leaves_of(x, weight), leaves_of(x, weight)
    y, y_ref = instance_norm(*leaves, relu=True), instance_norm(*leaves_ref, relu=True, backend="reference")
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    if y.numel():
        grads = torch.autograd.grad(y.sum(), leaves)
        for actual, expected in zip(grads, torch.autograd.grad(y_ref.sum(), leaves_ref)):
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_bad_arguments_name_the_argument():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        instance_norm([[1.0]])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        instance_norm(torch.ones(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\)"):
        instance_norm(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\) or \(2, 3\), got \(4,\)"):
        instance_norm(x, torch.ones(4))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\) or \(2, 3\), got \(3, 2\)"):
        instance_norm(x, None, torch.ones(3, 2))
    with pytest.raises(TypeError, match="bias must be a floating-point tensor"):
        instance_norm(x, None, torch.ones(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="weight must be on x's device"):
        instance_norm(x, torch.ones(3, device="meta"))
    for eps in (-1e-5, float("inf"), "1e-5", None, True):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            instance_norm(x, eps=eps)
    for relu in (1, "yes", None):
        with pytest.raises(TypeError, match="relu must be a bool"):
            instance_norm(x, relu=relu)
    with pytest.raises(ValueError, match="backend must be one of"):
        instance_norm(x, backend="native")


def test_triton_backend_on_a_cpu_tensor_needs_the_interpreter(monkeypatch):
    if not op_module.triton_available():
        pytest.skip("Triton not installed")
    monkeypatch.setattr(_triton, "INTERPRET", False)
    with pytest.raises(ValueError, match="backend='triton' needs x on a CUDA device.*got x on cpu"):
        instance_norm(torch.randn(2, 3, 4, 4), backend="triton")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_use_the_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "instance_norm", lambda *a, **k: calls.append(1))
    x = torch.randn(2, 64, 32, 32, device="cuda")
    y = instance_norm(x, torch.ones(64, device="cuda"), relu=True)
    assert not calls
    torch.testing.assert_close(y, torch.relu(F.instance_norm(x)), rtol=1e-5, atol=1e-5)
