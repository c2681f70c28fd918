"""guided_relu against its pure-PyTorch reference: values, gradients, dtypes, layouts, registration."""

import subprocess
import sys
import warnings

import pytest
import torch

from pyfastviz import _native, ops
from pyfastviz.ops import reference
from pyfastviz.ops.guided_relu import mask_words

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="pyfastviz._C not built")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SHAPES = [(0,), (0, 3, 4, 4), (1,), (31,), (32,), (33,), (1000,), (2, 3, 5, 7), (3, 65), (1, 1, 1, 1)]
UPPERS = [None, 6.0, 1.5]


def native_and_reference(x, upper, grad):
    """(y, dx) from the kernel and from the reference, on independent copies of x."""
    results = []
    for backend in ("native", "reference"):
        leaf = x.detach().clone().requires_grad_(True)
        y = ops.guided_relu(leaf, upper, backend=backend)
        (dx,) = torch.autograd.grad(y, leaf, grad) if y.numel() else (torch.zeros_like(leaf),)
        results.append((y, dx))
    return results


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("upper", UPPERS)
def test_values_and_gradients_match_reference(dtype, shape, upper):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 4).to(dtype)
    grad = torch.randn(shape, generator=gen).to(dtype)
    (y, dx), (y_ref, dx_ref) = native_and_reference(x, upper, grad)
    assert y.dtype == dtype and y.shape == x.shape
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_guided_gradient_rule_at_the_edges(dtype):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([-1.0, 0.0, -0.0, 0.5, 6.0, 7.0, 3.0, 3.0, inf, -inf, nan, -nan], dtype=dtype, requires_grad=True)
    grad = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -2.0, 2.0, 1.0, 1.0, 1.0, 1.0], dtype=dtype)
    y = ops.guided_relu(x, 6.0, backend="native")
    (dx,) = torch.autograd.grad(y, x, grad)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.5, 6.0, 6.0, 3.0, 3.0, 6.0, 0.0], dtype=dtype)
    assert torch.equal(y[:10], expected) and y[10:].isnan().all()
    # passes only where 0 < x < 6 and grad > 0
    assert torch.equal(dx, torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 2.0, 0, 0, 0, 0], dtype=dtype))
    y_relu = ops.guided_relu(x, None, backend="native")
    assert torch.equal(y_relu[8:10], torch.tensor([inf, 0.0], dtype=dtype)) and y_relu[10:].isnan().all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_an_upper_bound_between_two_16_bit_values_is_not_rounded_onto_one(dtype):
    """6.1 is not a bf16 or fp16 value: the largest one below it still passes, as clamp's derivative is 1 there."""
    nearest = torch.tensor(6.1, dtype=dtype)
    below_bits = nearest.view(torch.int16).item() - int(nearest.item() > 6.1)
    x = torch.tensor([below_bits, below_bits + 1], dtype=torch.int16).view(dtype)
    below, above = x.tolist()
    assert below < 6.1 < above
    x.requires_grad_(True)
    for backend in ("native", "reference"):
        y = ops.guided_relu(x, 6.1, backend=backend)
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(x))
        assert torch.equal(dx, torch.tensor([1.0, 0.0], dtype=dtype)), backend
        assert torch.equal(y, torch.tensor([below, 6.1], dtype=dtype)), backend


def test_mask_is_one_bit_per_element_in_memory_order():
    x = torch.randn(2, 3, 11, 13)
    out, mask = torch.ops.pyfastviz.guided_relu(x, 6.0)
    assert mask.dtype == torch.int32 and mask.numel() == mask_words(x.numel()) == (x.numel() + 31) // 32
    bits = torch.arange(x.numel())
    words = mask.to(torch.int64) & 0xFFFFFFFF
    unpacked = (words[bits // 32] >> (bits % 32)) & 1
    assert torch.equal(unpacked.bool(), reference.relu_passes_gradient(x, 6.0).flatten())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_is_kept_and_read_in_place(dtype):
    x = torch.randn(2, 5, 6, 7).to(dtype).to(memory_format=torch.channels_last)
    grad = torch.randn(2, 5, 6, 7).to(dtype)  # contiguous grad against a channels_last mask
    (y, dx), (y_ref, dx_ref) = native_and_reference(x, None, grad)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)


@pytest.mark.parametrize("make", [
    lambda t: t.transpose(1, 3),
    lambda t: t[:, :, ::2, 1:],
    lambda t: t.expand(3, -1, -1, -1)[1:],
])
def test_non_contiguous_input(make):
    x = make(torch.randn(1, 4, 9, 10))
    grad = make(torch.randn(1, 4, 9, 10))
    (y, dx), (y_ref, dx_ref) = native_and_reference(x, 6.0, grad)
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_gradients_equal_one_by_one(channels_last):
    x = torch.randn(2, 3, 5, 4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grads = torch.randn(4, 2, 3, 5, 4)
    y = ops.guided_relu(x, 6.0, backend="native")
    (batched,) = torch.autograd.grad(y, x, grads, is_grads_batched=True)
    singles = [torch.autograd.grad(ops.guided_relu(x, 6.0, backend="native"), x, g)[0] for g in grads]
    assert torch.equal(batched, torch.stack(singles))


def test_gradcheck_in_float64():
    # With one-hot (positive) output gradients the guided backward is ReLU6's true derivative.
    x = torch.tensor([-2.0, -0.5, 0.3, 1.7, 5.2, 6.5, 9.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.guided_relu(t, 6.0, backend="native"), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.guided_relu(t, backend="native"), (x,))


@pytest.mark.parametrize("inplace", [False, True])
def test_double_backward_matches_reference(inplace):
    # gradients of the guided gradient with respect to the output gradient (create_graph=True)
    x = torch.tensor([[-2.0, -0.5, 0.3, 1.7, 5.2, 6.5, 9.0]], dtype=torch.float64)
    dy = torch.tensor([[0.7, -1.1, 0.9, -0.4, 1.3, 0.8, 0.2]], dtype=torch.float64)
    v = torch.tensor([[1.5, 2.0, -3.0, 4.0, 0.5, 6.0, 7.0]], dtype=torch.float64)
    results = []
    for backend in ("native", "reference"):
        leaf, grad = x.clone().requires_grad_(True), dy.clone().requires_grad_(True)
        y = (ops.guided_relu_ if inplace else ops.guided_relu)(leaf.clone(), 6.0, backend=backend)
        (dx,) = torch.autograd.grad(y, leaf, grad, create_graph=True)
        results.append(torch.autograd.grad(dx, grad, v)[0])
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    assert results[0].tolist() == [[0.0, 0.0, -3.0, 0.0, 0.5, 0.0, 0.0]]
    mask = torch.ops.pyfastviz.guided_relu(x, 6.0)[1]
    assert torch.autograd.gradcheck(
        lambda g: torch.ops.pyfastviz.guided_relu_backward(g, mask, False, 1), (dy.clone().requires_grad_(True),))


@pytest.mark.parametrize("args", [
    (torch.randn(3, 4), 6.0),
    (torch.randn(2, 3, 4, 5), None),
    (torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last), 6.0),
    (torch.randn(33, dtype=torch.float16), None),
    (torch.randn(0, 3), 6.0),
])
def test_opcheck(args):
    x, upper = args
    torch.library.opcheck(torch.ops.pyfastviz.guided_relu.default, (x.requires_grad_(True), upper))
    mask = torch.ops.pyfastviz.guided_relu(x.detach(), upper)[1]
    grad = torch.randn(x.shape, requires_grad=True)
    torch.library.opcheck(torch.ops.pyfastviz.guided_relu_backward.default, (grad, mask, False, 1))


def test_works_under_torch_compile():
    def block(t):
        return ops.guided_relu(t * 2.0 + 1.0, 6.0, backend="native").sum(dim=1)

    compiled = torch.compile(block, fullgraph=True, dynamic=False)
    x = torch.randn(4, 8, requires_grad=True)
    grad = torch.randn(4)
    (dx,) = torch.autograd.grad(compiled(x), x, grad)
    (dx_eager,) = torch.autograd.grad(block(x), x, grad)
    torch.testing.assert_close(compiled(x), block(x))
    torch.testing.assert_close(dx, dx_eager)


def test_the_in_place_op_compiles_fullgraph_without_gradients():
    """Inference: an input that needs no gradient, or no_grad, takes no autograd.Function (whose
    mark_dirty fullgraph compilation does not support)."""
    def block(t):
        y = t.clone()
        ops.guided_relu_(y, 6.0, backend="native")
        return y

    x = torch.randn(2, 3, 4, 5) * 4
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), x.clamp(0, 6))
    with torch.no_grad():
        assert torch.equal(compiled(x.requires_grad_(True)), x.detach().clamp(0, 6))


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        ops.guided_relu(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ops.guided_relu([1.0, 2.0])
    with pytest.raises(ValueError, match="upper must be a positive number"):
        ops.guided_relu(torch.ones(3), upper=0.0)
    for bad in ("6", True):
        with pytest.raises(TypeError, match="upper must be a positive number"):
            ops.guided_relu_(torch.ones(3), upper=bad)
    for raw_op in (torch.ops.pyfastviz.guided_relu, torch.ops.pyfastviz.guided_relu_):
        with pytest.raises(RuntimeError, match="upper must be > 0"):
            raw_op(torch.ones(3), -1.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.guided_relu(torch.ones(3), backend="fast")


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_native, "LOAD_ERROR", ImportError("simulated"))
    monkeypatch.setattr(_native, "_warned", False)
    x = torch.randn(10)
    with pytest.warns(RuntimeWarning, match="simulated"):
        y = ops.guided_relu(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.guided_relu(x)  # the second call is silent
    assert torch.equal(y, torch.relu(x))
    with pytest.raises(RuntimeError, match="backend='native'"):
        ops.guided_relu(x, backend="native")


def test_package_imports_and_runs_without_the_extension():
    code = (
        "import sys, warnings; sys.modules['pyfastviz._C'] = None\n"
        "import torch, pyfastviz\n"
        "from pyfastviz.guided import guided_backprop\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    out = guided_backprop(net, torch.randn(2, 3, 8, 8), 1)\n"
        "print(tuple(out.shape), sum('reference' in str(w.message) for w in caught))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["(2,", "3,", "8,", "8)", "1"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
# Packed kernels where numel is a multiple of the 16-byte packet (4 fp32, 8 fp16/bf16), else one
# element per thread: 4100 is packed in fp32 only, 4104 in every dtype.
@pytest.mark.parametrize("numel", [1, 31, 32, 33, 4096, 4097, 4100, 4104, 1 << 22, (1 << 22) + 17])
@pytest.mark.parametrize("upper", [None, 6.0])
def test_cuda_matches_cpu_kernel_and_reference(dtype, numel, upper):
    x = (torch.randn(numel) * 4).to(dtype)
    grad = torch.randn(numel).to(dtype)
    (y, dx), (y_ref, dx_ref) = native_and_reference(x.cuda(), upper, grad.cuda())
    (y_cpu, dx_cpu), _ = native_and_reference(x, upper, grad)
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)
    assert torch.equal(y.cpu(), y_cpu) and torch.equal(dx.cpu(), dx_cpu)
    _, mask = torch.ops.pyfastviz.guided_relu(x.cuda(), upper)
    _, mask_cpu = torch.ops.pyfastviz.guided_relu(x, upper)
    assert torch.equal(mask.cpu(), mask_cpu)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_channels_last_batched_and_opcheck():
    x = torch.randn(2, 5, 6, 7, device="cuda").to(memory_format=torch.channels_last).requires_grad_(True)
    grads = torch.randn(3, 2, 5, 6, 7, device="cuda")
    (batched,) = torch.autograd.grad(ops.guided_relu(x, 6.0, backend="native"), x, grads, is_grads_batched=True)
    x_ref = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference.guided_relu(x_ref, 6.0), x_ref, grads, is_grads_batched=True)
    assert torch.equal(batched, expected)
    torch.library.opcheck(torch.ops.pyfastviz.guided_relu.default, (x, 6.0))


def backward_through(x, upper, grad, backend):
    leaf = x.detach().clone().requires_grad_(True)
    y = ops.guided_relu(leaf, upper, backend=backend)
    return y, torch.autograd.grad(y, leaf, grad, is_grads_batched=grad.dim() > x.dim())[0]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", ["misaligned", "transposed", "channels_last_fp16", "channels_last_bf16",
                                  "batched_contiguous", "empty", "32M"])
def test_cuda_layouts_and_sizes_match_reference(case):
    gen = torch.Generator(device="cuda").manual_seed(0)
    dtype = {"channels_last_fp16": torch.float16, "channels_last_bf16": torch.bfloat16}.get(case, torch.float32)
    shape = {"empty": (0, 8), "32M": ((1 << 25) + 64,), "misaligned": (4097,)}.get(case, (2, 8, 6, 10))
    x = (torch.randn(shape, generator=gen, device="cuda") * 4).to(dtype)
    if case == "misaligned":
        x = x[1:]  # 4096 elements, data 4 bytes past a 16-byte boundary: the one-element kernels
    elif case == "transposed":
        x = x.transpose(1, 3)
    elif case.startswith("channels_last"):
        x = x.to(memory_format=torch.channels_last)
    grad_shape = (3, *x.shape) if case == "batched_contiguous" else x.shape
    grad = torch.randn(grad_shape, generator=gen, device="cuda").to(dtype)
    y, dx = backward_through(x, 6.0, grad, "native")
    y_ref, dx_ref = backward_through(x, 6.0, grad, "reference")
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_backward_opcheck(channels_last):
    x = torch.randn(2, 8, 6, 10, device="cuda")
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    mask = torch.ops.pyfastviz.guided_relu(x, 6.0)[1]
    grad = torch.randn(3 * 2, 8, 6, 10, device="cuda")
    if channels_last:
        grad = grad.to(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.pyfastviz.guided_relu_backward.default, (grad, mask, channels_last, 3))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "slice"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_inplace_matches_out_of_place(layout, dtype):
    gen = torch.Generator().manual_seed(0)
    leaf = (torch.randn(2, 5, 6, 7, generator=gen) * 4).to(dtype).requires_grad_(True)

    def arrange(t):
        if layout == "channels_last":
            return t.to(memory_format=torch.channels_last)
        return t.transpose(1, 3) if layout == "transposed" else t

    def run(activation, backend="native"):
        hidden = arrange(leaf * 1.0)
        part = hidden[:, :, 1:] if layout == "slice" else hidden
        out = activation(part, 6.0, backend=backend)
        grads = torch.randn((3, *out.shape), generator=torch.Generator().manual_seed(1)).to(dtype)
        return out, part, torch.autograd.grad(out, leaf, grads, is_grads_batched=True)[0]  # 3 targets at once

    out, part, dx = run(ops.guided_relu_)
    expected, _, dx_expected = run(ops.guided_relu)
    assert out is part
    if layout in ("contiguous", "channels_last"):  # a view's grad_fn is autograd's rebased view node
        assert out.grad_fn.name() == "_GuidedReLUInPlaceBackward"
    assert torch.equal(out, expected) and torch.equal(dx, dx_expected)
    reference_out, _, reference_dx = run(ops.guided_relu_, backend="reference")
    assert torch.equal(reference_out, expected) and torch.equal(reference_dx, dx_expected)


@pytest.mark.parametrize("x", [torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
                               torch.randn(5, 4).t(), torch.randn(0, 3)], ids=["contiguous", "channels_last",
                                                                                "transposed", "empty"])
def test_inplace_opcheck(x):
    torch.library.opcheck(torch.ops.pyfastviz.guided_relu_.default, (x, 6.0))


@pytest.mark.parametrize("activation", ["guided_relu", "guided_relu_"])
def test_autograd_saves_only_the_one_bit_mask(activation):
    leaf = torch.randn(4, 8, 16, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        getattr(ops, activation)(leaf * 1.0, 6.0, backend="native")
    assert [t.dtype for t in saved] == [torch.int32]
    assert saved[0].numel() * 4 == leaf.numel() / 8  # bytes: 1 bit per element
