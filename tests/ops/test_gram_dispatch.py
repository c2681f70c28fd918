"""gram's CPU side: the reference (the spec), dtype rules, backend dispatch and errors (the
fallback when Triton is missing: test_triton_backend.py). No Triton kernel runs here
(tests/kernels/test_gram.py runs them)."""

import warnings

import pytest
import torch

from pyfastviz.ops import reference
from pyfastviz.ops.gram import gram, gram_style_loss


def naive_gram(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """G[n, i, j] = sum over h, w of x[n, i, h, w] * x[n, j, h, w], in float64."""
    n, c, h, w = x.shape
    g = torch.einsum("nihw,njhw->nij", x.double(), x.double())
    return g / (c * h * w) if normalize and c * h * w else g


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 65, 1, 63), (0, 4, 2, 2), (2, 3, 0, 4)])
@pytest.mark.parametrize("normalize", [True, False])
def test_reference_is_the_normalised_gram_matrix(shape, normalize):
    x = torch.randn(shape, dtype=torch.float64)
    g = reference.gram(x, normalize=normalize)
    assert g.shape == (shape[0], shape[1], shape[1]) and g.dtype == torch.float64
    torch.testing.assert_close(g, naive_gram(x, normalize))
    torch.testing.assert_close(g, g.mT)  # BLAS may differ in the last bit; the kernel is exact


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_summed_in_fp32_and_rounded_once(dtype):
    x = torch.randn(2, 8, 16, 16).to(dtype)
    g = gram(x)  # CPU tensor: the reference
    assert g.dtype == dtype
    assert torch.equal(g, naive_gram(x.float()).float().to(dtype))


def test_reference_gradient_is_symmetrised_and_gradchecks():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reference.gram(t), (x,))
    grad = torch.randn(2, 3, 3, dtype=torch.float64)
    (dx,) = torch.autograd.grad(reference.gram(x), x, grad)
    torch.testing.assert_close(reference.gram_backward(grad, x.detach()), dx)
    flat = x.detach().reshape(2, 3, 20)
    torch.testing.assert_close(dx, ((grad + grad.mT) @ flat / 60).reshape(x.shape))


def test_cpu_tensors_use_the_reference_without_a_warning(monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "gram", lambda x, normalize=True: calls.append(normalize) or x.new_zeros(()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gram(torch.randn(1, 2, 3, 3), normalize=False)
        gram(torch.randn(1, 2, 3, 3, dtype=torch.float64))
    assert calls == [False, True]


@pytest.mark.parametrize("make", [
    lambda: torch.randn(2, 4, 5, 6).to(memory_format=torch.channels_last),
    lambda: torch.randn(2, 4, 6, 5).transpose(2, 3),
    lambda: torch.randn(1, 4, 5, 6).expand(3, -1, -1, -1),
])
def test_reference_backend_takes_any_layout(make):
    x = make()
    torch.testing.assert_close(gram(x, backend="reference"), naive_gram(x).float())


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="features must be a floating-point tensor"):
        gram(torch.ones(1, 2, 3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="features must be a torch.Tensor"):
        gram([[1.0]])
    with pytest.raises(ValueError, match=r"features must be 4-D \(N, C, H, W\)"):
        gram(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        gram(torch.ones(1, 2, 3, 3), backend="native")


@pytest.mark.parametrize("target_shape", [(4, 4), (2, 4, 4)])
def test_reference_style_loss_and_its_checks(target_shape):
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    target = (torch.randn(target_shape, dtype=torch.float64) * 0.1).requires_grad_(True)
    loss = gram_style_loss(x, target)  # CPU: the reference
    assert loss.shape == (2,) and loss.dtype == torch.float64
    torch.testing.assert_close(loss, (naive_gram(x) - target).square().sum((1, 2)))
    assert torch.autograd.gradcheck(lambda a, b: reference.gram_style_loss(a, b), (x, target))
    assert gram_style_loss(x.detach().to(torch.bfloat16), target.detach()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"target must have shape \(4, 4\) or \(2, 4, 4\)"):
        gram_style_loss(x, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="target must be a floating-point tensor"):
        gram_style_loss(x, torch.zeros(4, 4, dtype=torch.int32))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_use_the_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "gram", lambda *a, **k: calls.append(1))
    x = torch.randn(2, 64, 32, 32, device="cuda")
    g = gram(x, allow_tf32=False)
    assert not calls
    torch.testing.assert_close(g, naive_gram(x).float(), rtol=1e-5, atol=1e-6)
