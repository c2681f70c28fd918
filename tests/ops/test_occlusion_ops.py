"""occlusion_batch and occlusion_scatter against their pure-PyTorch references."""

import pytest
import torch

from pyfastviz import _native, ops
from pyfastviz.ops import reference
from pyfastviz.ops.occlusion import positions

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="pyfastviz._C not built")

# (C, H, W), window, stride: tiling, not tiling, stride > window, window = image, 1 pixel, per channel
GEOMETRIES = [
    ((3, 8, 8), (3, 4, 4), (1, 4, 4)),
    ((3, 7, 9), (3, 3, 4), (1, 2, 3)),
    ((3, 9, 9), (3, 2, 2), (1, 4, 3)),
    ((3, 6, 5), (3, 6, 5), (1, 1, 1)),
    ((1, 1, 1), (1, 1, 1), (1, 1, 1)),
    ((4, 5, 6), (2, 3, 3), (2, 2, 2)),
]


def build(images, baseline, window, stride, first, count, layout, backend):
    out = torch.empty((count * images.shape[0], *images.shape[1:]), dtype=images.dtype, device=images.device)
    out = out.contiguous(memory_format=layout)
    ops.occlusion_batch(images.contiguous(memory_format=layout), baseline.contiguous(memory_format=layout),
                        window, stride, first, out, backend=backend)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("size, window, stride", GEOMETRIES)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("batch", [1, 3])
def test_batch_matches_reference(dtype, size, window, stride, layout, batch):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, *size, generator=gen).to(dtype)
    baseline = torch.randn(batch, *size, generator=gen).to(dtype)
    total = positions(size, window, stride)
    for first, count in [(0, total), (total // 2, total - total // 2)]:
        expected = reference.occlusion_batch(images, baseline, window, stride, first, count)
        out = build(images, baseline, window, stride, first, count, layout, "native")
        assert out.is_contiguous(memory_format=layout)
        assert torch.equal(out, expected)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_batch_of_non_contiguous_inputs(backend, layout):
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 7, 18, generator=gen)[..., ::2]  # (2, 3, 7, 9), every other column
    baseline = torch.randn(3, 1, 1, generator=gen).expand(2, 3, 7, 9)  # per-channel values, stride 0
    window, stride, first, count = (3, 3, 4), (1, 2, 3), 1, 5
    expected = reference.occlusion_batch(images.contiguous(), baseline.contiguous(), window, stride, first, count)
    assert torch.equal(build(images, baseline, window, stride, first, count, layout, backend), expected)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_batch_of_no_rows(backend):
    images = torch.randn(2, 3, 8, 8)
    for first in (0, 4):  # 4 positions: an empty chunk at either end
        ops.occlusion_batch(images, images, (3, 4, 4), (1, 4, 4), first, torch.empty(0, 3, 8, 8), backend=backend)
    ops.occlusion_batch(torch.empty(0, 3, 8, 8), torch.empty(0, 3, 8, 8), (3, 4, 4), (1, 4, 4), 0,
                        torch.empty(0, 3, 8, 8), backend=backend)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-12), (torch.float16, 1e-3),
                                         (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("size, window, stride", GEOMETRIES)
def test_scatter_matches_reference(dtype, atol, size, window, stride):
    drops = torch.randn(5, positions(size, window, stride), generator=torch.Generator().manual_seed(1)).to(dtype)
    heat = ops.occlusion_scatter(drops, window, stride, size, backend="native")
    expected = reference.occlusion_scatter(drops.double(), window, stride, size).to(dtype)
    assert heat.shape == (5, *size) and heat.dtype == dtype
    torch.testing.assert_close(heat, expected, atol=atol, rtol=atol)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_scatter_of_16_bit_drops_counts_many_overlapping_windows(backend, dtype):
    """289 windows of 17 x 17 at stride 1 cover the centre of 33 x 33: bf16 counts stop at 256."""
    size, window, stride = (1, 33, 33), (1, 17, 17), (1, 1, 1)
    drops = torch.zeros(1, positions(size, window, stride), dtype=dtype)
    drops[0, 0] = 1.0  # only the first window drops: the centre gets 1 / 289
    heat = ops.occlusion_scatter(drops, window, stride, size, backend=backend)
    assert heat.dtype == dtype
    torch.testing.assert_close(heat[0, 0, 16, 16], torch.tensor(1 / 289, dtype=dtype), atol=0, rtol=0)


def test_scatter_averages_overlapping_windows_and_zeroes_uncovered_pixels():
    # one row of 1 x 4 pixels; windows of 2 at stride 1 -> positions 0..2 with drops 1, 2, 4
    heat = ops.occlusion_scatter(torch.tensor([[1.0, 2.0, 4.0]]), (1, 1, 2), (1, 1, 1), (1, 1, 4), backend="native")
    assert torch.equal(heat.flatten(), torch.tensor([1.0, 1.5, 3.0, 4.0]))
    # windows of 1 at stride 2 over 3 pixels leave the middle one uncovered
    heat = ops.occlusion_scatter(torch.tensor([[5.0, 7.0]]), (1, 1, 1), (1, 1, 2), (1, 1, 3), backend="native")
    assert torch.equal(heat.flatten(), torch.tensor([5.0, 0.0, 7.0]))


def test_empty_and_non_contiguous_drops():
    assert ops.occlusion_scatter(torch.empty(0, 4), (1, 2, 2), (1, 2, 2), (1, 4, 4)).shape == (0, 1, 4, 4)
    drops = torch.randn(positions((3, 7, 9), (3, 3, 4), (1, 2, 3)), 4).t()  # (4, positions), transposed
    torch.testing.assert_close(ops.occlusion_scatter(drops, (3, 3, 4), (1, 2, 3), (3, 7, 9), backend="native"),
                               reference.occlusion_scatter(drops, (3, 3, 4), (1, 2, 3), (3, 7, 9)))


def test_inputs_that_need_gradients_get_them_from_the_reference():
    size, window, stride = (3, 7, 9), (3, 3, 4), (1, 2, 3)
    drops = torch.randn(2, positions(size, window, stride), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: ops.occlusion_scatter(d, window, stride, size, backend="native"),
                                    (drops,))
    images = torch.randn(2, *size, dtype=torch.float64, requires_grad=True)
    baseline = torch.zeros(2, *size, dtype=torch.float64)
    out = torch.empty(4, *size, dtype=torch.float64)
    ops.occlusion_batch(images, baseline, window, stride, 0, out, backend="native")
    (grad,) = torch.autograd.grad(out.sum(), images)
    kept = reference.occlusion_batch(torch.ones_like(images), baseline, window, stride, 0, 2)  # 1: not occluded
    torch.testing.assert_close(grad, kept.view(2, 2, *size).sum(0))  # (positions, images, ...) summed
    with pytest.raises(NotImplementedError, match="differentiates through its reference"):
        torch.ops.pyfastviz.occlusion_scatter(drops, list(window), list(stride), list(size)).sum().backward()


def opcheck_both(device, layout):
    images = torch.randn(2, 3, 6, 7, device=device).contiguous(memory_format=layout)
    baseline = torch.randn(2, 3, 6, 7, device=device).contiguous(memory_format=layout)
    out = torch.empty(4, 3, 6, 7, device=device).contiguous(memory_format=layout)
    torch.library.opcheck(torch.ops.pyfastviz.occlusion_batch.default, (images, baseline, [3, 3, 3], [1, 2, 2], 1, out))
    drops = torch.randn(3, positions((3, 6, 7), (3, 3, 3), (1, 2, 2)), device=device)
    torch.library.opcheck(torch.ops.pyfastviz.occlusion_scatter.default, (drops, [3, 3, 3], [1, 2, 2], [3, 6, 7]))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_opcheck(layout):
    opcheck_both("cpu", layout)


@pytest.mark.parametrize("window, stride, message", [
    ((3, 0, 2), (1, 1, 1), "window must be 3 positive ints"),
    ((3, 2, 2), (1, -1, 1), "stride must be 3 positive ints"),
    ((3, 9, 2), (1, 1, 1), r"window \(3, 9, 2\) is larger than the image \(3, 8, 8\)"),
    ((3, 2), (1, 1, 1), "window must be 3 positive ints"),
])
def test_bad_geometry_gets_a_clear_error(window, stride, message):
    images = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=message):
        ops.occlusion_batch(images, images, window, stride, 0, torch.empty(1, 3, 8, 8))
    with pytest.raises(ValueError, match=message):
        ops.occlusion_scatter(torch.randn(1, 4), window, stride, (3, 8, 8))


@pytest.mark.parametrize("size", [(3, 6), (3, 6.0, 6), [3, 6, True]])
def test_scatter_size_must_be_three_ints(size):
    with pytest.raises(ValueError, match="size must be 3 positive ints"):
        ops.occlusion_scatter(torch.randn(1, 4), (3, 2, 2), (3, 2, 2), size)


def test_gram_normalize_must_be_a_bool():
    for call in (ops.gram, lambda f, **k: ops.gram_style_loss(f, torch.zeros(2, 2), **k)):
        with pytest.raises(TypeError, match="normalize must be a bool, got None"):
            call(torch.randn(1, 2, 3, 3), normalize=None)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("change, error, message", [
    (dict(first=-1), ValueError, r"first must be an int in 0\.\.2 \(out holds 2 of the 4 window positions\), got -1"),
    (dict(first=3), ValueError, r"first must be an int in 0\.\.2"),
    (dict(first=1.0), ValueError, "first must be an int"),
    (dict(first=True), ValueError, "first must be an int"),
    (dict(out=torch.empty(3, 3, 8, 8)), ValueError, r"out must be \(rows, 3, 8, 8\) with rows a multiple of N = 2"),
    (dict(out=torch.empty(4, 3, 8, 7)), ValueError, r"out must be \(rows, 3, 8, 8\)"),
    (dict(out=torch.empty(4, 3, 8, 8, dtype=torch.float64)), TypeError, "out must have the images' dtype"),
    (dict(out=torch.empty(4, 3, 8, 16)[..., ::2]), ValueError, "out must be contiguous or channels_last"),
    (dict(out=[0.0]), TypeError, "out must be a torch.Tensor"),
    (dict(out=torch.empty(4, 3, 8, 8, dtype=torch.int32)), TypeError, "out must be a floating-point tensor"),
    (dict(baseline=torch.zeros(1, 3, 8, 8)), ValueError, r"baseline must have the images' shape \(2, 3, 8, 8\)"),
    (dict(baseline=torch.zeros(2, 3, 8, 8, dtype=torch.float16)), TypeError, "baseline must have the images' dtype"),
    (dict(baseline=0.5), TypeError, "baseline must be a torch.Tensor"),
    (dict(images=torch.randn(3, 8, 8)), ValueError, r"images must be \(N, C, H, W\)"),
    (dict(out=torch.empty(10, 3, 8, 8)), ValueError, "out holds 5 copies per image, but there are only 4 window"),
    (dict(out=torch.empty(4, 3, 8, 8, requires_grad=True)), ValueError, "out must not require grad"),
    (dict(out=torch.empty(4, 3, 8, 8) * torch.ones(1, requires_grad=True)), ValueError, "out must not require grad"),
])
def test_batch_arguments_get_clear_errors(backend, change, error, message):
    args = dict(images=torch.randn(2, 3, 8, 8), baseline=torch.zeros(2, 3, 8, 8), first=0, out=torch.empty(4, 3, 8, 8))
    args.update(change)
    with pytest.raises(error, match=message):
        ops.occlusion_batch(args["images"], args["baseline"], (3, 4, 4), (1, 4, 4), args["first"], args["out"],
                            backend=backend)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_out_sharing_memory_with_an_input_is_refused(backend):
    """The kernel would read rows of images (or baseline) it has already overwritten."""
    out = torch.randn(6, 3, 8, 8)
    for images, baseline in ((out[:2], torch.zeros(2, 3, 8, 8)), (torch.randn(2, 3, 8, 8), out[4:])):
        name = "images" if images.data_ptr() == out.data_ptr() else "baseline"
        with pytest.raises(ValueError, match=f"out shares memory with {name}"):
            ops.occlusion_batch(images, baseline, (3, 4, 4), (1, 4, 4), 0, out[:4] if name == "baseline" else out[2:],
                                backend=backend)


def test_kernel_checks_layouts_and_ranges():
    """The native op's own checks, for callers of torch.ops.pyfastviz.* directly."""
    images, batch = torch.randn(2, 3, 8, 8), torch.ops.pyfastviz.occlusion_batch
    with pytest.raises(RuntimeError, match="laid out alike"):
        batch(images, images, [3, 4, 4], [1, 4, 4], 0, torch.empty(2, 3, 8, 8).to(memory_format=torch.channels_last))
    with pytest.raises(RuntimeError, match="exceed the 4 window positions"):
        batch(images, images, [3, 4, 4], [1, 4, 4], 3, torch.empty(4, 3, 8, 8))
    with pytest.raises(RuntimeError, match="must stay under 2\\^31"):  # the kernels' int32 index math
        ops.occlusion_scatter(torch.randn(1, 1), (1, 1, 1), (1, 1, 2**31), (1, 1, 2**31), backend="native")
    with pytest.raises(ValueError, match=r"drops must be \(rows, 4\)"):
        ops.occlusion_scatter(torch.randn(2, 5), (3, 4, 4), (1, 4, 4), (3, 8, 8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size, window, stride", GEOMETRIES + [((3, 224, 224), (3, 16, 16), (1, 8, 8))])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_matches_cpu_kernels(dtype, size, window, stride, layout):
    images, baseline = torch.randn(3, *size).to(dtype), torch.randn(3, *size).to(dtype)
    total = positions(size, window, stride)
    count = min(total, 40)
    on_cpu = build(images, baseline, window, stride, total - count, count, layout, "native")
    on_gpu = build(images.cuda(), baseline.cuda(), window, stride, total - count, count, layout, "native")
    assert torch.equal(on_gpu.cpu(), on_cpu)
    drops = torch.randn(6, total)
    torch.testing.assert_close(ops.occlusion_scatter(drops.cuda(), window, stride, size).cpu(),
                               ops.occlusion_scatter(drops, window, stride, size), atol=1e-6, rtol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rows_beyond_the_grid_limit_and_opcheck():
    """More rows than CUDA's 65535 grid rows: the kernels' row loops go on past it."""
    images, baseline = torch.randn(70_000, 2, 1, 3), torch.randn(70_000, 2, 1, 3)
    on_cpu = build(images, baseline, (1, 1, 2), (1, 1, 1), 1, 1, torch.contiguous_format, "native")
    on_gpu = build(images.cuda(), baseline.cuda(), (1, 1, 2), (1, 1, 1), 1, 1, torch.contiguous_format, "native")
    assert torch.equal(on_gpu.cpu(), on_cpu)
    drops = torch.randn(70_000, 4)
    torch.testing.assert_close(ops.occlusion_scatter(drops.cuda(), (1, 1, 2), (1, 1, 1), (2, 1, 3)).cpu(),
                               ops.occlusion_scatter(drops, (1, 1, 2), (1, 1, 1), (2, 1, 3)), atol=1e-6, rtol=1e-6)
    for layout in (torch.contiguous_format, torch.channels_last):
        opcheck_both("cuda", layout)
