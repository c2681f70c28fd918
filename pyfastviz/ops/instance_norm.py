"""instance_norm: per-(image, channel) normalisation over H*W, with optional affine and fused ReLU.

y = relu?((x - mean) / sqrt(var + eps) * weight + bias), mean and biased var over H*W of each
(n, c) plane, accumulated in fp32. weight/bias are (C,) (torch.nn.InstanceNorm2d's affine) or
(N, C) (conditional instance norm: one scale/shift per image, e.g. per style). Kernel:
kernels/instance_norm.py (Triton); spec: reference.instance_norm. Elsewhere (CPU tensors,
float64) ATen's batch_norm kernels run it, as torch.nn.functional.instance_norm does: forward
and backward with ReLU 2.2-2.6x faster than the reference on the CPU (2 cores). Registered as
pyfastviz::instance_norm and pyfastviz::instance_norm_backward (torch.library.custom_op +
register_fake + register_autograd), so the op composes with autograd, torch.compile and
torch.library.opcheck.
"""

import math

import torch

from pyfastviz.ops import reference
from pyfastviz.ops._checks import check_float_tensor
from pyfastviz._transforms import differentiable_backward
from pyfastviz.ops._triton import BACKENDS, TritonBackend

try:
    from pyfastviz.kernels import instance_norm as _kernels

    TRITON_ERROR = None
except ImportError as error:  # triton not installed
    _kernels = None
    TRITON_ERROR = error

TRITON = TritonBackend("instance_norm", TRITON_ERROR)


def triton_available() -> bool:
    """True when Triton imported (pyfastviz.kernels.instance_norm is usable)."""
    return TRITON.available()


def use_triton(x: torch.Tensor, backend: str, *others: torch.Tensor | None) -> bool:
    return TRITON.use(x, backend, "x", *others)


def instance_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
                  eps: float = 1e-5, relu: bool = False, backend: str = "auto") -> torch.Tensor:
    """Instance norm of x (N, C, H, W) -> (N, C, H, W) in x's dtype and memory format.

    weight, bias: None, (C,) or (N, C), floating point, on x's device. eps: added to the
    variance (> 0). relu: a bool, apply ReLU to the output (fused in the kernel). backend: "auto"
    (CUDA tensor of float32/float16/bfloat16: the Triton kernel; otherwise, or Triton missing
    (one warning), ATen's batch_norm as in aten_instance_norm), "triton" (the kernel; on CPU
    tensors only under TRITON_INTERPRET=1, else a ValueError) or "reference". Differentiable in
    x, weight and bias.
    """
    check_float_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    n, c = x.shape[:2]
    for name, param in (("weight", weight), ("bias", bias)):
        if param is None:
            continue
        check_float_tensor(param, name)
        if tuple(param.shape) not in ((c,), (n, c)):
            raise ValueError(f"{name} must have shape ({c},) or ({n}, {c}), got {tuple(param.shape)}")
        if param.device != x.device:
            raise ValueError(f"{name} must be on x's device ({x.device}), got {param.device}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise ValueError(f"eps must be a finite number >= 0 (as torch's instance norm takes), got {eps!r}")
    eps = float(eps)
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if use_triton(x, backend, weight, bias):
        return torch.ops.pyfastviz.instance_norm(x, weight, bias, float(eps), relu)[0]
    # ATen's batch_norm needs a channel, and drops the affine's gradient for one value per channel
    if backend == "reference" or x.numel() == 0 or x.shape[2] * x.shape[3] == 1:
        return reference.instance_norm(x, weight, bias, eps=float(eps), relu=relu)
    return aten_instance_norm(x, weight, bias, float(eps), relu)


def aten_instance_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                       relu: bool) -> torch.Tensor:
    """instance_norm as batch statistics of x viewed as one image of N * C channels: ATen's
    batch_norm, with weight/bias (C,) repeated per image or (N, C) flattened, in fp32 (fp64 for
    fp64 x; fp16/bf16 x with fp32 statistics and affine, as the reference). Same arguments and
    result as instance_norm."""
    n, c, h, w = x.shape
    work = torch.promote_types(x.dtype, torch.float32)

    def per_plane(param, fill: float):  # 16-bit x: always an fp32 affine, or batch_norm rounds twice
        if param is None:
            return None if work == x.dtype else x.new_full((n * c,), fill, dtype=work)
        param = param.to(work)  # first: the gradient's sum over images in fp32
        return param.repeat(n) if param.dim() == 1 else param.reshape(n * c)

    # ATen's CPU batch_norm backward is wrong unless its input and output gradient have one layout
    # (a channels_last view of N * C planes for N = 1 with a contiguous gradient, or the reverse: the
    # gradient off by O(1); a strided fp16 gradient: inf): both are made contiguous
    y = torch.batch_norm(x.contiguous().view(1, n * c, h, w), per_plane(weight, 1.0), per_plane(bias, 0.0), None,
                         None, True, 0.0, eps, False)
    if y.requires_grad:
        y.register_hook(torch.Tensor.contiguous)
    y = y.view(n, c, h, w)
    if relu:
        y = y.relu_()  # batch_norm's backward reads its input, not y
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        y = y.contiguous(memory_format=torch.channels_last)
    return y


# ---- registration ---------------------------------------------------------------------------


@torch.library.custom_op("pyfastviz::instance_norm", mutates_args=())
def _instance_norm_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                      relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd): y like x; mean and rstd = 1 / sqrt(var + eps), (N, C) fp32 (Triton kernel)."""
    if _kernels is None:
        raise RuntimeError(f"pyfastviz::instance_norm needs Triton ({TRITON_ERROR})")
    return _kernels.instance_norm_forward(x, weight, bias, eps, relu)


@_instance_norm_op.register_fake
def _(x, weight, bias, eps, relu):
    stats = x.new_empty(x.shape[:2], dtype=torch.float32)
    return torch.empty_like(x), stats, torch.empty_like(stats)


@torch.library.custom_op("pyfastviz::instance_norm_backward", mutates_args=())
def _instance_norm_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                               bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor,
                               relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight_rows, dbias_rows): dx like x; per-(n, c) sums of g * xhat and g, (N, C) fp32,
    g the output gradient masked by y > 0 under ReLU (Triton kernels)."""
    if _kernels is None:
        raise RuntimeError(f"pyfastviz::instance_norm_backward needs Triton ({TRITON_ERROR})")
    return _kernels.instance_norm_backward(grad, x, weight, bias, mean, rstd, relu)


@_instance_norm_backward_op.register_fake
def _(grad, x, weight, bias, mean, rstd, relu):
    rows = x.new_empty(x.shape[:2], dtype=torch.float32)
    return torch.empty_like(x), rows, torch.empty_like(rows)


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, relu = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.eps, ctx.relu = eps, relu


def _param_grad(rows: torch.Tensor, param: torch.Tensor | None) -> torch.Tensor | None:
    """The gradient of a (C,) or (N, C) weight/bias from its (N, C) fp32 rows."""
    if param is None:
        return None
    return (rows.sum(0) if param.dim() == 1 else rows).to(param.dtype)


def _backward(ctx, grad, _grad_mean, _grad_rstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a backward that double backward can go through
        return differentiable_backward(reference.instance_norm, (x, weight, bias, ctx.eps, ctx.relu), grad)
    dx, dweight, dbias = torch.ops.pyfastviz.instance_norm_backward(grad, x, weight, bias, mean, rstd, ctx.relu)
    return dx, _param_grad(dweight, weight), _param_grad(dbias, bias), None, None


_instance_norm_op.register_autograd(_backward, setup_context=_setup_context)
