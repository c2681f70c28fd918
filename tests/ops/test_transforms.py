"""The ops under torch.func transforms and forward-mode AD (pyfastviz/_transforms.py): the
default backend gives the reference's answer there, never torch.library's silent zero tangents
or its functorch errors; an explicit kernel backend is refused; plain calls keep the kernel."""

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

from helpers import FunctionalReLUNet, RecordOps, forward_ad_tangent, jvp, weighted_sum
from pyfastviz import _native, ops
from pyfastviz.guided import GuidedReLUMode, guided_backprop
from pyfastviz._transforms import traced

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="pyfastviz._C not built")

NO_GUIDED_JVP = "guided_relu has no forward-mode derivative"
REVERSE_ONLY = "differentiates in reverse mode only"


def guided_relu(backend):
    return lambda x: ops.guided_relu(x, 6.0, backend=backend)


def guided_relu_inplace(backend):
    return lambda x: ops.guided_relu_(x.clone(), backend=backend)


def scatter(backend):
    return lambda drops: ops.occlusion_scatter(drops, (1, 2, 2), (1, 1, 1), (1, 5, 6), backend=backend)


def batch(backend):
    def build(images):
        out = images.new_empty((20, 1, 5, 6))
        ops.occlusion_batch(images, torch.zeros_like(images), (1, 2, 2), (1, 1, 1), 0, out, backend=backend)
        return out
    return build


NATIVE_OPS = {"guided_relu": (guided_relu, (2, 3, 5, 6)), "guided_relu_": (guided_relu_inplace, (2, 3, 5, 6)),
              "occlusion_scatter": (scatter, (2, 20)), "occlusion_batch": (batch, (1, 1, 5, 6))}


@pytest.fixture(params=list(NATIVE_OPS))
def native_op(request):
    make, shape = NATIVE_OPS[request.param]
    return request.param, make, torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 4


def test_plain_calls_run_the_kernel_and_traced_calls_the_reference(native_op):
    name, make, x = native_op
    with RecordOps() as plain:
        make("auto")(x)
    assert plain.pyfastviz_ops() == {f"pyfastviz::{name}"}
    with RecordOps() as transformed:
        torch.func.vmap(make("auto"))(x[None])
    assert not transformed.pyfastviz_ops()


# transform name -> (the transformed function of f, its input made from x)
TRANSFORMS = {
    "grad": (lambda f: torch.func.grad(lambda a: weighted_sum(f(a))), lambda x: x),
    "jacrev": (torch.func.jacrev, lambda x: x),
    "vmap": (torch.func.vmap, lambda x: torch.stack([x, -x])),
    "vmap of grad": (lambda f: torch.func.vmap(torch.func.grad(lambda a: weighted_sum(f(a)))),
                     lambda x: torch.stack([x, -x])),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_reverse_transforms_and_vmap_equal_the_reference(native_op, transform):
    _, make, x = native_op
    apply, prepare = TRANSFORMS[transform]
    expected = apply(make("reference"))(prepare(x))
    assert expected.abs().sum() > 0
    assert torch.equal(apply(make("auto"))(prepare(x)), expected)


@pytest.mark.parametrize("forward_mode", [jvp, forward_ad_tangent])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_forward_mode_through_guided_relu_is_refused_clearly(forward_mode, backend):
    x = torch.randn(2, 3, 4, 4)
    for make in (guided_relu, guided_relu_inplace):
        with pytest.raises(NotImplementedError, match=NO_GUIDED_JVP):
            forward_mode(make(backend), x)


@pytest.mark.parametrize("forward_mode", [jvp, forward_ad_tangent])
@pytest.mark.parametrize("make", [scatter, batch])
def test_forward_mode_through_occlusion_equals_the_reference(forward_mode, make):
    x = torch.randn(NATIVE_OPS["occlusion_batch" if make is batch else "occlusion_scatter"][1])
    expected = forward_mode(make("reference"), x)
    assert expected is not None and expected.abs().sum() > 0  # the kernel's tangent was None or 0
    assert torch.equal(forward_mode(make("auto"), x), expected)


@pytest.mark.parametrize("forward_mode", [jvp, forward_ad_tangent, lambda f, x: torch.func.grad(lambda a: f(a).sum())(x)])
def test_an_explicit_kernel_backend_is_refused_under_transforms(native_op, forward_mode):
    name, make, x = native_op
    with pytest.raises(NotImplementedError, match=f"{name}: backend='native' {REVERSE_ONLY}"):
        forward_mode(make("native"), x)


def test_traced_sees_every_kind_of_wrapper():
    x = torch.ones(3)
    assert not traced(x, None)
    assert torch.func.vmap(lambda a: torch.tensor(traced(a)))(x[None]).item()
    assert torch.func.grad(lambda a: a.sum() * traced(None, a))(x).eq(1).all()
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x, x)
        assert traced(x, dual) and not traced(x)


def test_torch_func_grad_through_guided_relu_mode_is_guided_backprop():
    torch.manual_seed(0)
    model = FunctionalReLUNet().eval()
    images = torch.randn(2, 3, 16, 16)
    expected = guided_backprop(model, images, 2)
    with GuidedReLUMode():
        got = torch.func.grad(lambda x: model(x)[:, 2].sum())(images)
    assert torch.allclose(got, expected, atol=1e-7)
