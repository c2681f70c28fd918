"""Pure-PyTorch references of every pyfastviz op: the specification the kernels are tested against."""

import torch


class _GuidedReLU(torch.autograd.Function):
    """clamp(x, 0, upper) whose backward is guided: grad * [0 < x < upper] * [grad > 0]."""

    @staticmethod
    def forward(x, upper):
        return torch.relu(x) if upper is None else torch.clamp(x, 0.0, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, upper = inputs
        ctx.save_for_backward(relu_passes_gradient(x, upper))

    @staticmethod
    def backward(ctx, grad):
        (passes,) = ctx.saved_tensors
        return torch.where(passes & (grad > 0), grad, torch.zeros_like(grad)), None


def relu_passes_gradient(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """Bool tensor, x's shape: where ReLU (upper=None) or clamp(0, upper) has derivative 1."""
    passes = x > 0
    return passes if upper is None else passes & (x < upper)


def guided_relu(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """Reference guided ReLU: forward clamp(x, 0, upper), backward grad * [0<x<upper] * [grad>0].

    x: any shape, floating point. Saves a bool mask (1 byte per element; the kernel keeps 1 bit),
    not x, so x may be overwritten afterwards (in-place activations).
    """
    return _GuidedReLU.apply(x, upper)


def guided_relu_backward(grad: torch.Tensor, x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """The two-pass backward the hook-based method computes: ReLU's backward, then clamp(min=0)."""
    relu_grad = torch.where(relu_passes_gradient(x, upper), grad, torch.zeros_like(grad))
    return relu_grad.clamp(min=0)
