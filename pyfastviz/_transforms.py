"""Where the compiled kernels' autograd stops, the reference ops take over.

The kernels differentiate in first-order reverse mode only: torch.library gives their ops no
forward-mode rule (jvp and forward_ad would see zero tangents) and no functorch support
(torch.func.grad fails inside torch), and the Triton backward kernels have no derivative of
their own. The references are plain torch code, so inputs traced by torch.func.grad / vjp /
jvp / vmap / jacrev / jacfwd or forward_ad run them (traced, kernel_allowed), and double
backward differentiates them (differentiable_backward).
"""

import torch
import torch.autograd.forward_ad as forward_ad

KERNEL_BACKENDS = ("native", "triton")


def traced(*tensors: torch.Tensor | None) -> bool:
    """True when any tensor is a torch.func transform's wrapper or carries a forward-AD tangent."""
    if torch.compiler.is_compiling():  # tracing sees FakeTensors; transforms of compiled code are torch's
        return False
    return any(t is not None and (torch._C._functorch.is_functorch_wrapped_tensor(t)
                                  or forward_ad.unpack_dual(t).tangent is not None) for t in tensors)


def kernel_allowed(op: str, backend: str, *tensors: torch.Tensor | None) -> bool:
    """False when the tensors are traced (they go to the reference); an explicit kernel backend
    ("native", "triton") is refused there instead, since it would differentiate wrongly."""
    if not traced(*tensors):
        return True
    if backend in KERNEL_BACKENDS:
        raise NotImplementedError(
            f"{op}: backend={backend!r} differentiates in reverse mode only (torch.autograd.grad, "
            "backward()); under torch.func transforms (grad, vjp, jvp, vmap) and forward-mode AD use "
            "backend='auto' or 'reference', which run the reference op there")
    return False


def differentiable_backward(forward, inputs: tuple, grad: torch.Tensor) -> tuple:
    """The backward of a Triton op under create_graph=True (double backward), where the kernel's
    backward, having no autograd of its own, would raise: the vector-Jacobian product of forward
    (the op's reference, torch code) at grad, itself differentiable. inputs: the op's inputs
    (tensors, None or numbers). Returns one gradient per input (None where none is needed)."""
    wanted = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor) and t.requires_grad]
    with torch.enable_grad():
        out = forward(*inputs)
    found = torch.autograd.grad(out, [inputs[i] for i in wanted], grad, create_graph=True, allow_unused=True)
    grads = [None] * len(inputs)
    for i, g in zip(wanted, found):
        grads[i] = g
    return tuple(grads)
