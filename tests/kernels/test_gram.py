"""The Triton Gram kernel (kernels/gram.py) against reference.gram: values, gradients, dtypes,
odd shapes, layouts, split-K, registration. Runs on CPU tensors under TRITON_INTERPRET=1
(`make test` does: TRITON_INTERPRET=1 pytest -m triton), or on a CUDA GPU.

Tolerances (kernel and reference both accumulate in fp32 and round once to the output dtype):
fp32 rtol 1e-5; fp16 rtol 2e-3 (2 ulp); bf16 rtol 1.6e-2 (2 ulp); plus an absolute term of
that rtol times the largest |expected| for entries near zero. Gradients: the kernel rounds
dG + dG^T to bf16 (fp16: to TF32) before its dot product, the reference does not, so 2x those.
Style loss: fp32 in every case (G is never rounded), rtol 1e-5; its gradients as gram's values
(its fp32 residual is not rounded before the dot).
"""


import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.triton_setup import DEVICE, TRITON_MARKS  # noqa: E402

from pyfastviz.kernels import gram as kernels  # noqa: E402
from pyfastviz.ops import reference  # noqa: E402
from pyfastviz.ops.gram import gram, gram_style_loss  # noqa: E402

pytestmark = TRITON_MARKS
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = list(RTOL)
# (C, H, W): C in 1, 3, 63, 65; H*W in 1, 63, 65, 1000. C = 1000: test_a_thousand_channels.
SHAPES = [(c, h, w) for c in (1, 3, 63, 65) for (h, w) in ((1, 1), (7, 9), (5, 13), (25, 40))]


def close(actual, expected, rtol):
    atol = rtol * expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def features(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=DEVICE, dtype=dtype)


def triton_and_reference(x, grad, **kwargs):
    """(G, dF) from the kernel and from the reference, on independent leaves made from x."""
    results = []
    for backend in ("triton", "reference"):
        leaf = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        if x.stride() != leaf.stride():  # clone drops non-dense strides: use x itself
            leaf = x.detach().requires_grad_(True)
        g = gram(leaf, backend=backend, **kwargs)
        (df,) = torch.autograd.grad(g, leaf, grad) if g.numel() else (torch.zeros_like(leaf),)
        results.append((g, df))
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "C{}xHW{}".format(s[0], s[1] * s[2]))
def test_values_and_gradients_match_reference(dtype, shape):
    c = shape[0]
    x = features((2, *shape), dtype)
    grad = features((2, c, c), dtype, seed=1)
    (g, df), (g_ref, df_ref) = triton_and_reference(x, grad)
    assert g.shape == (2, c, c) and g.dtype == dtype and df.dtype == dtype and df.shape == x.shape
    close(g, g_ref, RTOL[dtype])
    close(df, df_ref, RTOL[dtype] * (1 if dtype == torch.float32 else 2))


@pytest.mark.skipif(DEVICE == "cpu", reason="C = 1000 takes 30-60 s per dtype interpreted (528 tiles); GPU runs only")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_thousand_channels(dtype):
    x = features((2, 1000, 7, 9), dtype)
    grad = features((2, 1000, 1000), dtype, seed=1)
    (g, df), (g_ref, df_ref) = triton_and_reference(x, grad)
    close(g, g_ref, RTOL[dtype])
    close(df, df_ref, RTOL[dtype] * (1 if dtype == torch.float32 else 2))


@pytest.mark.parametrize("normalize", [True, False])
def test_batch_of_eight_and_normalize(normalize):
    x = features((8, 20, 6, 7))
    grad = features((8, 20, 20), seed=1)
    (g, df), (g_ref, df_ref) = triton_and_reference(x, grad, normalize=normalize)
    close(g, g_ref, RTOL[torch.float32])
    close(df, df_ref, RTOL[torch.float32])
    per_image = torch.stack([gram(x[i:i + 1], normalize=normalize, backend="triton")[0] for i in range(8)])
    assert torch.equal(g, per_image)


@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (2, 0, 5, 5), (2, 3, 0, 4)])
def test_empty_inputs(shape):
    x = features(shape)
    n, c = shape[:2]
    grad = features((n, c, c), seed=1)
    (g, df), (g_ref, df_ref) = triton_and_reference(x, grad)
    assert g.shape == (n, c, c) and torch.equal(g, g_ref)  # H*W == 0: the empty sum, zeros
    assert df.shape == x.shape and torch.equal(df, df_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_channels_last_is_read_in_place_and_its_gradient_kept(dtype):
    x = features((2, 37, 6, 11), dtype).to(memory_format=torch.channels_last)
    assert kernels._spatial(x)[3]  # h and w merge into one stride: read through x's strides, no copy
    grad = features((2, 37, 37), dtype, seed=1)
    (g, df), (g_ref, df_ref) = triton_and_reference(x, grad)
    close(g, g_ref, RTOL[dtype])
    close(df, df_ref, 2 * RTOL[dtype])
    assert df.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("make", [
    lambda t: t.transpose(2, 3),                       # H and W swapped: strides don't merge
    lambda t: t[:, 1::2, ::2, 1:],                     # sliced in every dim
    lambda t: t[:1].expand(3, -1, -1, -1),             # batch stride 0
    lambda t: t.permute(0, 1, 3, 2)[..., :1],          # W == 1
], ids=["transposed", "sliced", "expanded", "w1"])
def test_non_contiguous_input(make):
    x = make(features((3, 34, 9, 10)))
    c = x.shape[1]
    grad = features((x.shape[0], c, c), seed=1).transpose(1, 2)  # a non-contiguous grad too
    (g, df), (g_ref, df_ref) = triton_and_reference(x, grad)
    close(g, g_ref, RTOL[torch.float32])
    close(df, df_ref, RTOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_output_is_exactly_symmetric(dtype):
    for split in (1, 3):
        g = kernels.gram_forward(features((2, 70, 9, 11), dtype), 1.0, False, split=split)
        assert torch.equal(g, g.mT)


@pytest.mark.parametrize("split", [1, 2, 5])
def test_split_k_slices_agree(split):
    x = features((2, 40, 10, 30))
    expected = reference.gram(x, normalize=False)
    close(kernels.gram_forward(x, 1.0, False, split=split), expected, RTOL[torch.float32])


def test_deterministic_mode_uses_one_slice(monkeypatch):
    assert kernels.choose_split(1, 64, 512 * 512, 64, 64, torch.device(DEVICE)) > 1
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert kernels.choose_split(1, 64, 512 * 512, 64, 64, torch.device(DEVICE)) == 1


def test_allow_tf32_runs_and_stays_close():
    x = features((2, 24, 8, 8))
    close(gram(x, allow_tf32=True, backend="triton"), reference.gram(x), 2e-3)


def test_offsets_past_2_31_elements_within_one_image():
    # 17 channels 2^27 elements apart: channel 16 starts at element 2^31, past int32. The store is
    # 4 GiB of address space; only the pages of the 17 x 32 elements used are ever touched.
    C, W, channel_stride = 17, 32, 2**27
    store = torch.empty(channel_stride * (C - 1) + W, dtype=torch.float16, device=DEVICE)
    x = store.as_strided((1, C, 1, W), (0, channel_stride, W, 1))
    x.copy_(features((1, C, 1, W), torch.float16))
    dense = x.contiguous()
    close(gram(x, backend="triton"), reference.gram(dense), RTOL[torch.float16])
    grad = features((1, C, C), torch.float16, seed=1)
    close(kernels.gram_backward(grad, x, 1 / (C * W), False), reference.gram_backward(grad, dense),
          2 * RTOL[torch.float16])
    target = features((C, C), seed=2) * 0.05
    close(gram_style_loss(x, target, backend="triton"), reference.gram_style_loss(dense, target), 1e-5)


def test_fp16_gradient_of_a_large_output_gradient_stays_finite():
    # dG + dG^T = 80000 overflows fp16 (max 65504), as a GradScaler's 65536 can make it; dF does not
    x = features((1, 4, 4, 4), torch.float16)
    grad = torch.full((1, 4, 4), 40000.0, dtype=torch.float16, device=DEVICE)
    (_, df), (_, df_ref) = triton_and_reference(x, grad)
    assert torch.isfinite(df_ref).all()
    close(df, df_ref, 2 * RTOL[torch.float16])


@pytest.mark.parametrize("args", [
    (features((2, 5, 4, 6)), 1 / 120, False),
    (features((1, 33, 3, 7)).to(memory_format=torch.channels_last), 1.0, False),
    (features((2, 3, 4, 5)).transpose(2, 3), 0.5, True),
    (features((3, 17, 2, 2), torch.float16), 1 / 68, False),
    (features((2, 9, 3, 5), torch.bfloat16), 1 / 135, False),
    (features((0, 3, 4, 4)), 1.0, False),
], ids=["fp32", "channels_last", "transposed", "fp16", "bf16", "empty"])
def test_opcheck(args):
    x, scale, tf32 = args
    torch.library.opcheck(torch.ops.pyfastviz.gram.default, (x.requires_grad_(True), scale, tf32))
    c = x.shape[1]
    grad = torch.randn(x.shape[0], c, c, dtype=x.dtype, device=x.device)
    torch.library.opcheck(torch.ops.pyfastviz.gram_backward.default, (grad, x.detach(), scale, tf32))


def test_works_under_torch_compile():
    def style_term(t, target):
        return (gram(t * 2.0, backend="triton") - target).square().sum()

    compiled = torch.compile(style_term, fullgraph=True, dynamic=False)
    x = features((2, 6, 5, 7)).requires_grad_(True)
    target = features((2, 6, 6), seed=1) * 0.1
    loss, loss_eager = compiled(x, target), style_term(x, target)
    (dx,) = torch.autograd.grad(loss, x)
    (dx_eager,) = torch.autograd.grad(loss_eager, x)
    torch.testing.assert_close(loss, loss_eager)
    torch.testing.assert_close(dx, dx_eager)


# ---- fused style loss -----------------------------------------------------------------------


def style_triton_and_reference(x, target, grad, **kwargs):
    """(loss, dF, dT) from the kernel and from the reference, on independent leaves."""
    results = []
    for backend in ("triton", "reference"):
        leaf = x.detach().clone().requires_grad_(True)
        t = target.detach().clone().requires_grad_(True)
        loss = gram_style_loss(leaf, t, backend=backend, **kwargs)
        results.append((loss, *torch.autograd.grad(loss, (leaf, t), grad)))
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 9), (65, 5, 13), (40, 25, 40)], ids=str)
@pytest.mark.parametrize("per_image_target", [False, True], ids=["shared_target", "per_image_target"])
def test_style_loss_matches_reference(dtype, shape, per_image_target):
    c = shape[0]
    x = features((2, *shape), dtype)
    target = features((2, c, c) if per_image_target else (c, c), dtype, seed=1) * 0.05
    grad = torch.tensor([0.7, -1.3], device=DEVICE)
    (loss, df, dt), (loss_ref, df_ref, dt_ref) = style_triton_and_reference(x, target, grad)
    assert loss.shape == (2,) and loss.dtype == torch.float32
    assert df.dtype == dtype and dt.dtype == dtype and dt.shape == target.shape
    close(loss, loss_ref, 1e-5)
    close(df, df_ref, RTOL[dtype])
    close(dt, dt_ref, RTOL[dtype])


def test_style_loss_gradient_keeps_a_small_residual_in_fp32():
    """R = 2 grad (G - T) ~ 2e-6 (a small loss weight): rounded to fp16 before the dot it would
    keep few bits (fp16 is subnormal below 6.1e-5); dF ~ 1e-4 is a normal fp16."""
    x = features((1, 16, 4, 4), torch.float16) * 8
    target = reference.gram(x.float(), normalize=False)[0] + features((16, 16), seed=1)
    grad = torch.full((1,), 1e-6, device=DEVICE)
    (_, df, _), (_, df_ref, _) = style_triton_and_reference(x, target, grad, normalize=False)
    close(df, df_ref, RTOL[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_shared_target_gradient_is_summed_over_images_before_rounding(dtype):
    """A (C, C) target's gradient sums the images' -R. Two nearly equal images with output gradients
    1 and -1 cancel: rounded to 16 bits per image first, dT was off by an ulp of the terms (1000x
    the result's); summed in fp32 and rounded once it is as exact as the reference's."""
    first = features((1, 16, 4, 4))
    x = torch.cat([first, first + 0.01 * features((1, 16, 4, 4), seed=2)]).to(dtype)
    target = (features((16, 16), seed=1) * 0.1).to(dtype)
    grad = torch.tensor([1.0, -1.0], device=DEVICE)
    (_, _, dt), (_, _, dt_ref) = style_triton_and_reference(x, target, grad)
    wide = x.double().flatten(2)
    exact = (-2 * (wide @ wide.mT / 256 - target.double()) * grad.double()[:, None, None]).sum(0)
    assert (dt.double() - exact).abs().max() <= 2 * (dt_ref.double() - exact).abs().max()


@pytest.mark.parametrize("split", [1, 3, 7])
def test_style_loss_split_k_slices_agree(split):
    x = features((2, 40, 10, 30))
    target = features((2, 40, 40), seed=1) * 0.05
    expected = reference.gram_style_loss(x, target, normalize=False)
    close(kernels.style_loss_forward(x, target, 1.0, False, split=split), expected, 1e-5)


def test_style_loss_splits_long_reductions_over_few_tiles():
    x = features((1, 8, 40, 50))  # one tile, 2000 positions: split-K (on the GPU too, with more slices)
    assert kernels.choose_split(1, 8, 2000, kernels._block(8), kernels._block_k(x.dtype), x.device) > 1
    target = features((8, 8), seed=1) * 0.05
    close(gram_style_loss(x, target, backend="triton"), reference.gram_style_loss(x, target), 1e-5)


@pytest.mark.parametrize("split", [1, 3])
def test_style_loss_forward_writes_no_gram_matrix_of_the_features_dtype(monkeypatch, split):
    """One slice: no Gram kernel runs (G's tiles stay in registers). Split-K: the only (N, C, C)
    written is the fp32 workspace of partial sums, never G in the features' dtype (fp16 here)."""
    x = features((2, 20, 6, 30), torch.float16)
    target = features((20, 20), seed=1) * 0.05
    outputs, launch_gram = [], kernels._gram_fwd_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(f, out, *args, **kwargs):
                outputs.append((out.dtype, tuple(out.shape)))
                return launch_gram[grid](f, out, *args, **kwargs)
            return launch

    monkeypatch.setattr(kernels, "_gram_fwd_kernel", Spy())
    monkeypatch.setattr(kernels, "gram_forward", lambda *a, **k: pytest.fail("the forward computed G"))
    loss = kernels.style_loss_forward(x, target.expand(2, 20, 20), 1 / 3600, False, split=split)
    close(loss, reference.gram_style_loss(x, target), 1e-5)
    assert outputs == ([] if split == 1 else [(torch.float32, (2, 20, 20))])


@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (2, 3, 0, 4)])
def test_style_loss_empty_inputs(shape):
    x = features(shape)
    target = features((shape[1], shape[1]), seed=1)
    (loss, df, dt), (loss_ref, df_ref, dt_ref) = style_triton_and_reference(x, target, features((shape[0],), seed=2))
    assert loss.shape == (shape[0],)
    close(loss, loss_ref, 1e-5)
    assert torch.equal(df, df_ref)
    close(dt, dt_ref, 1e-5)


def test_style_loss_channels_last_and_opcheck():
    x = features((2, 17, 5, 6)).to(memory_format=torch.channels_last)
    target = features((17, 17), seed=1) * 0.05
    (loss, df, _), (loss_ref, df_ref, _) = style_triton_and_reference(x, target, torch.ones(2, device=DEVICE))
    close(loss, loss_ref, 1e-5)
    close(df, df_ref, 1e-5)
    args = (x.detach().requires_grad_(True), target.expand(2, 17, 17).clone().requires_grad_(True), 1 / 510, False)
    torch.library.opcheck(torch.ops.pyfastviz.gram_style_loss.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("target_shape", [(2, 9, 9), (9, 9)], ids=["per_image_target", "shared_target"])
def test_style_loss_ops_opcheck(dtype, target_shape):
    x = features((2, 9, 3, 5), dtype)
    target = (features(target_shape, seed=1) * 0.05).to(dtype)
    torch.library.opcheck(torch.ops.pyfastviz.gram_style_loss.default,
                          (x.requires_grad_(True), target.requires_grad_(True), 1 / 135, False))
    grad = features((2,), seed=2)
    torch.library.opcheck(torch.ops.pyfastviz.gram_style_loss_backward.default,
                          (grad, x.detach(), target.detach(), 1 / 135, False))


def test_a_batch_larger_than_a_grid_axis_runs_in_chunks(monkeypatch):
    """The batch is grid axis 1 or 2 (at most 65535 programs): larger batches launch per chunk."""
    from pyfastviz.kernels import _launch

    x = features((5, 6, 4, 3))
    target = features((6, 6), seed=1).expand(5, 6, 6)
    grad = features((5, 6, 6), seed=2)
    expected = (kernels.gram_forward(x, 0.5, False), kernels.gram_backward(grad, x, 0.5, False),
                kernels.style_loss_forward(x, target, 0.5, False))
    monkeypatch.setattr(_launch, "MAX_GRID_YZ", 2)
    assert len(_launch.batch_chunks(5)) == 3
    chunked = (kernels.gram_forward(x, 0.5, False), kernels.gram_backward(grad, x, 0.5, False),
               kernels.style_loss_forward(x, target, 0.5, False))
    for actual, reference_value in zip(chunked, expected):
        close(actual, reference_value, 1e-5)
