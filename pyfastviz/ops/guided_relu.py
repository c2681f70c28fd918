"""guided_relu: ReLU / ReLU6 whose backward is guided (Springenberg et al. 2015).

Forward y = clamp(x, 0, upper) saves a 1-bit-per-element mask instead of x; backward
dx = dy * [0 < x < upper] * [dy > 0]. Kernels: csrc/cpu, csrc/cuda; spec: reference.py.
"""

import torch

from pyfastviz import _native
from pyfastviz.ops import reference
from pyfastviz.ops._checks import check_backend, check_float_tensor

OP = "guided_relu"
OP_INPLACE = "guided_relu_"


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the kernels read x in (mirrors guided_relu_layout in csrc/guided_relu.h)."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def mask_words(numel):
    """int32 words of the mask for numel elements (mirrors mask_words in csrc/ops.h)."""
    return (numel + 31) // 32


def check_upper(upper) -> None:
    """upper: None or a positive real number (not a bool), else a clear error naming it."""
    if upper is None:
        return
    if isinstance(upper, bool) or not isinstance(upper, (int, float)):
        raise TypeError(f"upper must be a positive number or None, got {type(upper).__name__} {upper!r}")
    if not upper > 0:
        raise ValueError(f"upper must be a positive number or None, got {upper!r}")


def guided_relu(x: torch.Tensor, upper: float | None = None, *, backend: str = "auto") -> torch.Tensor:
    """clamp(x, 0, upper) with a guided backward pass.

    x: floating-point tensor of any shape (fp32/fp16/bf16/fp64; channels_last kept).
    upper: None for ReLU, 6.0 for ReLU6. backend: "auto" (compiled kernel for x's device
    when there is one, else the reference), "native" or "reference".
    Returns y, x's shape and dtype.
    """
    check_float_tensor(x, "x")
    check_upper(upper)
    if _native.use_native(OP, check_backend(backend), x):
        out, _mask = torch.ops.pyfastviz.guided_relu(x, None if upper is None else float(upper))
        return out
    return reference.guided_relu(x, upper)


def guided_relu_(x: torch.Tensor, upper: float | None = None, *, backend: str = "auto") -> torch.Tensor:
    """In-place guided_relu: x = clamp(x, 0, upper), its guided backward recorded on x; returns x.

    What in-place activations (nn.ReLU(inplace=True), F.relu_) run under guided backprop: x is
    read and written once, as torch.relu_ does (no out-of-place result copied back, and no copy
    in the backward pass). Arguments as guided_relu.
    """
    check_float_tensor(x, "x")
    check_upper(upper)
    if _native.use_native(OP_INPLACE, check_backend(backend), x):
        upper = None if upper is None else float(upper)
        if not (torch.is_grad_enabled() and x.requires_grad):  # no autograd.Function: fullgraph compiles it
            torch.ops.pyfastviz.guided_relu_(x, upper)
            return x
        return _GuidedReLUInPlace.apply(x, upper)
    return x.copy_(reference.guided_relu(x, upper))


class _GuidedReLUInPlace(torch.autograd.Function):
    """pyfastviz::guided_relu_ with the backward of guided_relu (autograd marks x modified)."""

    @staticmethod
    def forward(ctx, x, upper):
        mask = torch.ops.pyfastviz.guided_relu_(x, upper)
        ctx.mark_dirty(x)
        ctx.save_for_backward(mask)
        ctx.channels_last = memory_format(x) == torch.channels_last
        return x

    @staticmethod
    def backward(ctx, grad_out):
        (mask,) = ctx.saved_tensors
        return torch.ops.pyfastviz.guided_relu_backward(grad_out, mask, ctx.channels_last, 1), None


def _register() -> None:
    """Fake kernels, autograd (double backward too) and vmap for the C++ ops (torch.compile,
    opcheck, is_grads_batched); guided_relu_'s autograd is _GuidedReLUInPlace."""
    forward_op = torch.ops.pyfastviz.guided_relu.default
    backward_op = torch.ops.pyfastviz.guided_relu_backward.default

    @torch.library.register_fake(forward_op)
    def _(x, upper):
        out = torch.empty_like(x, memory_format=memory_format(x))
        return out, x.new_empty((mask_words(x.numel()),), dtype=torch.int32)

    @torch.library.register_fake(torch.ops.pyfastviz.guided_relu_.default)
    def _(x, upper):
        return x.new_empty((mask_words(x.numel()),), dtype=torch.int32)

    @torch.library.register_fake(backward_op)
    def _(grad_output, mask, channels_last, copies):
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty_like(grad_output, memory_format=layout)

    def setup_context(ctx, inputs, output):
        x, _upper = inputs
        _out, mask = output
        ctx.save_for_backward(mask)
        ctx.channels_last = memory_format(x) == torch.channels_last

    def backward(ctx, grad_out, _grad_mask):
        (mask,) = ctx.saved_tensors
        return backward_op(grad_out, mask, ctx.channels_last, 1), None

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)

    def backward_setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    def double_backward(ctx, grad_grad):
        """dx = dy * [x passes] * [dy > 0] is linear in dy where dx > 0 and zero elsewhere."""
        (dx,) = ctx.saved_tensors
        return torch.where(dx > 0, grad_grad, torch.zeros_like(grad_grad)), None, None, None

    torch.library.register_autograd(backward_op, double_backward, setup_context=backward_setup_context)

    def backward_vmap(info, in_dims, grad_output, mask, channels_last, copies):
        """Batched gradients (is_grads_batched): the K vmapped gradients become K more copies."""
        grad_dim, mask_dim = in_dims[0], in_dims[1]
        if mask_dim is not None:
            raise NotImplementedError("guided_relu_backward: vmap over the mask is not supported")
        if grad_dim is None:
            return backward_op(grad_output, mask, channels_last, copies), None
        grads = grad_output.movedim(grad_dim, 0)
        batch = grads.shape[0]
        stacked = grads.reshape(batch * grads.shape[1], *grads.shape[2:]) if grads.dim() > 1 else grads
        out = backward_op(stacked, mask, channels_last, copies * batch)
        return out.reshape(grads.shape), 0

    torch.library.register_vmap(backward_op, backward_vmap)


if _native.native_available():
    _register()
