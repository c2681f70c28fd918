"""The Triton ops (gram, gram_style_loss, instance_norm) where their kernels' reverse-mode autograd
stops. Under torch.func transforms and forward AD, backend="auto" runs the reference (on a GPU it
would otherwise reach the kernel, whose tangents torch.library leaves at zero) and backend="triton"
is refused; plain calls keep the kernel. Double backward (create_graph=True) differentiates the
reference's backward; first-order backward stays on the kernel. On the CPU (TRITON_INTERPRET=1)
"auto" is the reference anyway; on a GPU this checks the gate."""


import pytest
import torch

from helpers import RecordOps, forward_ad_tangent, jvp, weighted_sum
from pyfastviz import ops
from tests.kernels.triton_setup import DEVICE, TRITON_MARKS

pytest.importorskip("triton")

pytestmark = TRITON_MARKS
REVERSE_ONLY = "differentiates in reverse mode only"


FEATURES = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0)).to(DEVICE)


# op name -> (call of x with backend, where x is the traced argument)
CALLS = {
    "gram": lambda x, backend: ops.gram(x, backend=backend, allow_tf32=False),
    "gram_style_loss": lambda x, backend: ops.gram_style_loss(x, torch.eye(3, device=DEVICE) / 9, backend=backend,
                                                              allow_tf32=False),
    "gram_style_loss target": lambda t, backend: ops.gram_style_loss(FEATURES, t[0, 0, :3, :3], backend=backend,
                                                                     allow_tf32=False),
    "instance_norm": lambda x, backend: ops.instance_norm(x, backend=backend),
    "instance_norm weight": lambda w, backend: ops.instance_norm(FEATURES, w[0, :, 0, 0], backend=backend),
}


TRANSFORMS = {
    "grad": lambda f, x: torch.func.grad(lambda a: weighted_sum(f(a)))(x),
    "vmap": lambda f, x: torch.func.vmap(f)(torch.stack([x, 2 * x])),
    "jvp": jvp,
    "forward_ad": forward_ad_tangent,
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("call", list(CALLS))
def test_auto_gives_the_reference_and_triton_is_refused(call, transform):
    op, apply = CALLS[call], TRANSFORMS[transform]
    x = FEATURES
    expected = apply(lambda a: op(a, "reference"), x)
    assert expected.abs().sum() > 0
    with RecordOps() as recorded:
        got = apply(lambda a: op(a, "auto"), x)
    assert not recorded.pyfastviz_ops()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match=f"backend='triton' {REVERSE_ONLY}"):
        apply(lambda a: op(a, "triton"), x)


@pytest.mark.parametrize("call", ["gram", "gram_style_loss", "instance_norm"])
def test_plain_calls_keep_the_kernel(call):
    with RecordOps() as recorded:
        CALLS[call](FEATURES, "triton" if DEVICE == "cpu" else "auto")
    assert f"pyfastviz::{call}" in recorded.pyfastviz_ops()


# op -> (call of (x, extra input) with backend, the extra input: target / weight / None)
DOUBLE_BACKWARD = {
    "gram": (lambda x, _, backend: ops.gram(x, backend=backend, allow_tf32=False), None),
    "gram_style_loss": (lambda x, t, backend: ops.gram_style_loss(x, t, backend=backend, allow_tf32=False),
                        torch.rand(3, 3, generator=torch.Generator().manual_seed(1))),
    "instance_norm": (lambda x, w, backend: ops.instance_norm(x, w, relu=True, backend=backend),
                      torch.rand(3, generator=torch.Generator().manual_seed(2)) + 0.5),
}


def first_and_second_grads(call, extra, backend, create_graph):
    x = FEATURES.clone().requires_grad_()
    other = None if extra is None else extra.to(DEVICE).requires_grad_()
    inputs = [t for t in (x, other) if t is not None]
    with RecordOps() as recorded:
        grads = torch.autograd.grad(weighted_sum(call(x, other, backend)), inputs, create_graph=create_graph)
    second = torch.autograd.grad(sum((g * g.cos()).sum() for g in grads), inputs) if create_graph else None
    return grads, second, recorded.pyfastviz_ops()


@pytest.mark.parametrize("op", list(DOUBLE_BACKWARD))
def test_double_backward_runs_through_the_reference_and_first_order_stays_on_the_kernel(op):
    call, extra = DOUBLE_BACKWARD[op]
    kernel_grads, _, kernel_ops = first_and_second_grads(call, extra, "triton", create_graph=False)
    assert f"pyfastviz::{op}_backward" in kernel_ops
    grads, second, double_ops = first_and_second_grads(call, extra, "triton", create_graph=True)
    assert f"pyfastviz::{op}_backward" not in double_ops
    expected_grads, expected_second, _ = first_and_second_grads(call, extra, "reference", create_graph=True)
    for got, plain, expected in zip(grads, kernel_grads, expected_grads):
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6) and torch.allclose(plain, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(second, expected_second):
        assert expected.abs().sum() > 0
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
