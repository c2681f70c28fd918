"""gram: the Gram matrix of feature maps, G = F F^T / (C H W), for texture synthesis and style transfer.

F is features (N, C, H, W) viewed as (N, C, H*W). Kernel: kernels/gram.py (Triton, split-K,
upper triangle only); spec: reference.gram. Registered as pyfastviz::gram and
pyfastviz::gram_backward (torch.library.custom_op + register_fake + register_autograd), so
the op composes with autograd, torch.compile and torch.library.opcheck.

dtypes: float32, float16, bfloat16 (and float64 on the reference only). The output has the
features' dtype; the sums are accumulated in fp32 and rounded once. fp32 dot products are
IEEE fp32 unless allow_tf32=True (allow_tf32=None follows torch's cuBLAS switch, matmul_tf32()).
"""

import torch

from pyfastviz.ops import reference
from pyfastviz.ops._checks import check_float_tensor
from pyfastviz._transforms import differentiable_backward
from pyfastviz.ops._triton import BACKENDS, TritonBackend

try:
    from pyfastviz.kernels import gram as _kernels

    TRITON_ERROR = None
except ImportError as error:  # triton not installed
    _kernels = None
    TRITON_ERROR = error

TRITON = TritonBackend("gram", TRITON_ERROR)


def triton_available() -> bool:
    """True when Triton imported (pyfastviz.kernels.gram is usable)."""
    return TRITON.available()


def use_triton(features: torch.Tensor, backend: str, *others: torch.Tensor) -> bool:
    return TRITON.use(features, backend, "features", *others)


@torch.compiler.assume_constant_result  # torch.compile cannot trace the getter: read it at trace time
def matmul_tf32() -> bool:
    """Whether torch lets fp32 matmuls use TF32: torch.backends.cuda.matmul.fp32_precision == "tf32"
    (set directly, through torch.backends.fp32_precision, or by the legacy allow_tf32 flag, whose
    read raises once the new API has been used)."""
    return torch.backends.cuda.matmul.fp32_precision == "tf32"


def gram(features: torch.Tensor, *, normalize: bool = True, allow_tf32: bool | None = None,
         backend: str = "auto") -> torch.Tensor:
    """Gram matrices of a batch of feature maps.

    features: (N, C, H, W) floating point, any strides (channels_last is read in place),
    N may be 0. normalize: divide by C*H*W (by 1 when that is 0). allow_tf32: let fp32
    inputs use TF32 dot products on the GPU (None: follow torch's matmul setting, matmul_tf32()).
    backend: "auto" (CUDA tensor: the Triton kernel; CPU tensor or float64: the reference;
    Triton missing: the reference with one warning), "triton" (the kernel on any device; on
    CPU tensors it runs only under TRITON_INTERPRET=1) or "reference".
    Returns G (N, C, C) in features' dtype, symmetric, accumulated in fp32.
    """
    check_float_tensor(features, "features")
    if features.dim() != 4:
        raise ValueError(f"features must be 4-D (N, C, H, W), got shape {tuple(features.shape)}")
    _check_normalize(normalize)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if allow_tf32 is None:
        allow_tf32 = matmul_tf32()
    if use_triton(features, backend):
        return torch.ops.pyfastviz.gram(features, scale(features, normalize), bool(allow_tf32))
    return reference.gram(features, normalize=normalize)


def _check_normalize(normalize) -> None:
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")


def scale(features: torch.Tensor, normalize: bool) -> float:
    """The factor G is multiplied by: 1 / (C*H*W), or 1 (normalize=False or C*H*W == 0)."""
    _, c, h, w = features.shape
    return 1.0 / (c * h * w) if normalize and c * h * w else 1.0


# ---- registration ---------------------------------------------------------------------------


@torch.library.custom_op("pyfastviz::gram", mutates_args=())
def _gram_op(features: torch.Tensor, scale: float, allow_tf32: bool) -> torch.Tensor:
    """G = scale * F @ F^T, (N, C, C) in features' dtype (Triton kernel)."""
    if _kernels is None:
        raise RuntimeError(f"pyfastviz::gram needs Triton ({TRITON_ERROR})")
    return _kernels.gram_forward(features, scale, allow_tf32)


@_gram_op.register_fake
def _(features, scale, allow_tf32):
    n, c = features.shape[0], features.shape[1]
    return features.new_empty((n, c, c))


@torch.library.custom_op("pyfastviz::gram_backward", mutates_args=())
def _gram_backward_op(grad: torch.Tensor, features: torch.Tensor, scale: float, allow_tf32: bool) -> torch.Tensor:
    """dF = scale * (dG + dG^T) @ F, features' dtype and (dense) layout (Triton kernel)."""
    if _kernels is None:
        raise RuntimeError(f"pyfastviz::gram_backward needs Triton ({TRITON_ERROR})")
    return _kernels.gram_backward(grad, features, scale, allow_tf32)


@_gram_backward_op.register_fake
def _(grad, features, scale, allow_tf32):
    return torch.empty_like(features)


def _setup_context(ctx, inputs, output):
    features, scale_, allow_tf32 = inputs
    ctx.save_for_backward(features)
    ctx.scale, ctx.allow_tf32 = scale_, allow_tf32


def _backward(ctx, grad):
    (features,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a backward that double backward can go through
        return differentiable_backward(_scaled_gram, (features, ctx.scale), grad) + (None,)
    return torch.ops.pyfastviz.gram_backward(grad, features, ctx.scale, ctx.allow_tf32), None, None


def _scaled_gram(features: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * F F^T in features' dtype, multiplied as reference.gram does (fp32 for 16-bit F)."""
    return _scaled_gram_fp32(features, scale).to(features.dtype)


def _scaled_gram_fp32(features: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * F F^T before any rounding: fp32 (fp64 for fp64 features)."""
    wide = features if features.dtype == torch.float64 else features.float()
    return reference.gram(wide, normalize=False) * scale


_gram_op.register_autograd(_backward, setup_context=_setup_context)


# ---- fused style loss -----------------------------------------------------------------------


def gram_style_loss(features: torch.Tensor, target: torch.Tensor, *, normalize: bool = True,
                    allow_tf32: bool | None = None, backend: str = "auto") -> torch.Tensor:
    """Style loss per image, sum over i, j of (gram(features) - target)^2, G never materialised
    in the output dtype (its tiles stay in registers, or long reductions use an fp32 split-K workspace).

    features: (N, C, H, W) as for gram. target: (C, C) (the same for every image, read in
    place) or (N, C, C), floating point, on features' device. normalize, allow_tf32, backend: as for gram.
    Returns (N,) float32 (float64 for float64 features, reference only); G is accumulated
    and compared in fp32, never rounded to fp16/bf16. Differentiable in features and target
    (the backward recomputes G with the Gram kernel).
    """
    check_float_tensor(features, "features")
    check_float_tensor(target, "target")
    if features.dim() != 4:
        raise ValueError(f"features must be 4-D (N, C, H, W), got shape {tuple(features.shape)}")
    _check_normalize(normalize)
    n, c = features.shape[:2]
    if tuple(target.shape) not in ((c, c), (n, c, c)):
        raise ValueError(f"target must have shape ({c}, {c}) or ({n}, {c}, {c}), got {tuple(target.shape)}")
    if target.device != features.device:
        raise ValueError(f"target must be on features' device ({features.device}), got {target.device}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if allow_tf32 is None:
        allow_tf32 = matmul_tf32()
    if use_triton(features, backend, target):
        return torch.ops.pyfastviz.gram_style_loss(features, target, scale(features, normalize), bool(allow_tf32))
    return reference.gram_style_loss(features, target, normalize=normalize)


@torch.library.custom_op("pyfastviz::gram_style_loss", mutates_args=())
def _style_loss_op(features: torch.Tensor, target: torch.Tensor, scale: float, allow_tf32: bool) -> torch.Tensor:
    """(N,) fp32: sum over i, j of (scale * F F^T - target)^2 (Triton kernels, kernels.gram.style_loss_forward).
    target: (C, C), the same for every image (read in place), or (N, C, C)."""
    if _kernels is None:
        raise RuntimeError(f"pyfastviz::gram_style_loss needs Triton ({TRITON_ERROR})")
    n, c = features.shape[:2]
    return _kernels.style_loss_forward(features, target.expand(n, c, c), scale, allow_tf32)


@_style_loss_op.register_fake
def _(features, target, scale, allow_tf32):
    return features.new_empty((features.shape[0],), dtype=torch.float32)


@torch.library.custom_op("pyfastviz::gram_style_loss_backward", mutates_args=())
def _style_loss_backward_op(grad: torch.Tensor, features: torch.Tensor, target: torch.Tensor, scale: float,
                            allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dF, dT): R = 2 grad[n] (G - T), dF = scale (R + R^T) F, dT = -R (summed over images in fp32
    for a (C, C) target, rounded to its dtype once) (Triton kernels)."""
    if _kernels is None:
        raise RuntimeError(f"pyfastviz::gram_style_loss_backward needs Triton ({TRITON_ERROR})")
    return _kernels.style_loss_backward(grad, features, target, scale, allow_tf32)


@_style_loss_backward_op.register_fake
def _(grad, features, target, scale, allow_tf32):
    return torch.empty_like(features), target.new_empty(target.shape)


def _style_setup_context(ctx, inputs, output):
    features, target, scale_, allow_tf32 = inputs
    ctx.save_for_backward(features, target)
    ctx.scale, ctx.allow_tf32 = scale_, allow_tf32


def _style_backward(ctx, grad):
    features, target = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        return differentiable_backward(_style_loss, (features, target, ctx.scale), grad) + (None,)
    df, dt = torch.ops.pyfastviz.gram_style_loss_backward(grad, features, target, ctx.scale, ctx.allow_tf32)
    return df, dt, None, None


_style_loss_op.register_autograd(_style_backward, setup_context=_style_setup_context)


def _style_loss(features: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """(N,) fp32: sum over i, j of (scale * F F^T - target)^2, as reference.gram_style_loss."""
    g = _scaled_gram_fp32(features, scale)
    return (g - target.to(g.dtype)).square().sum((1, 2))
