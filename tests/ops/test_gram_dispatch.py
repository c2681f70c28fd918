"""gram's CPU side: the reference (the spec), dtype rules, backend dispatch and errors (the
fallback when Triton is missing: test_triton_backend.py). No Triton kernel runs here
(tests/kernels/test_gram.py runs them)."""

import warnings

import pytest
import torch

from pyfastviz.ops import reference
from pyfastviz.ops.gram import gram, gram_style_loss, matmul_tf32


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


def test_target_on_another_device_is_refused():
    x = torch.randn(2, 4, 5, 6)
    with pytest.raises(ValueError, match=r"target must be on features' device \(cpu\), got meta"):
        gram_style_loss(x, torch.zeros(4, 4, device="meta"))


@pytest.fixture
def restore_fp32_precision():
    """Every precision setting back as it was: the legacy allow_tf32 flag also sets the legacy
    float32 matmul precision, which later tests (k-NN's certification bound) read."""
    backends = torch.backends
    nodes = [backends, backends.cuda.matmul, backends.cudnn, backends.cudnn.conv, backends.cudnn.rnn,
             backends.mkldnn, backends.mkldnn.matmul, backends.mkldnn.conv, backends.mkldnn.rnn]
    legacy, saved = torch.get_float32_matmul_precision(), [node.fp32_precision for node in nodes]
    yield
    torch.set_float32_matmul_precision(legacy)  # first: it rewrites the new API's settings
    for node, precision in zip(nodes, saved):
        node.fp32_precision = precision
    assert torch.get_float32_matmul_precision() == legacy


@pytest.mark.parametrize("setting, expected", [
    (lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"), True),
    (lambda: setattr(torch.backends, "fp32_precision", "tf32"), True),
    (lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "ieee"), False),
    (lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", True), True),  # the legacy flag
], ids=["matmul", "global", "ieee", "legacy"])
def test_allow_tf32_none_follows_torchs_tf32_setting(restore_fp32_precision, setting, expected):
    setting()
    assert matmul_tf32() is expected
    x = torch.randn(1, 3, 4, 4)
    gram(x)  # reads the setting: the legacy allow_tf32 read raised under the new API
    gram_style_loss(x, torch.zeros(3, 3))


class RecordGrid:
    """Stands in for a Triton kernel: `kernel[grid](...)` records (name, grid), runs nothing."""

    def __init__(self, name, launches):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        self.launches.append((self.name, grid))
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("side", [2048, 4096])
def test_launch_grids_fit_cuda_limits_at_large_outputs(monkeypatch, side):
    """relu1_1 of a 2048 / 4096 px image on an H100 (132 SMs), every launch of kernels/gram.py:
    CUDA allows 2^31 - 1 programs on grid axis 0 but 65535 on axes 1 and 2. Meta tensors: the
    launchers' own grid code runs, no kernel."""
    pytest.importorskip("triton")
    from pyfastviz.kernels import gram as kernels

    launches = []
    names = ["_gram_fwd_kernel", "_gram_finish_kernel", "_gram_bwd_kernel", "_style_loss_kernel",
             "_style_loss_finish_kernel"]
    for name in names:
        monkeypatch.setattr(kernels, name, RecordGrid(name, launches))
    monkeypatch.setattr(kernels, "num_sms", lambda device: 132)
    x = torch.empty(1, 64, side, side, device="meta")
    target = torch.empty(1, 64, 64, device="meta")
    kernels.gram_forward(x, 1.0, False)
    kernels.gram_backward(torch.empty(1, 64, 64, device="meta"), x, 1.0, False)
    kernels.style_loss_forward(x, target, 1.0, False)  # split-K
    kernels.style_loss_forward(x, target, 1.0, False, split=1)
    kernels.style_loss_backward(torch.empty(1, device="meta"), x, target, 1.0, False)
    assert {name for name, _ in launches} == set(names)
    for name, grid in launches:
        assert grid[0] <= 2**31 - 1 and all(g <= 65535 for g in grid[1:]), (name, grid)
    assert max(grid[0] for name, grid in launches if name == "_gram_bwd_kernel") > 65535  # K's tiles alone
