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
    out = torch.empty((count * images.shape[0], *images.shape[1:]), dtype=images.dtype).contiguous(memory_format=layout)
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


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-12), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("size, window, stride", GEOMETRIES)
def test_scatter_matches_reference(dtype, atol, size, window, stride):
    drops = torch.randn(5, positions(size, window, stride), generator=torch.Generator().manual_seed(1)).to(dtype)
    heat = ops.occlusion_scatter(drops, window, stride, size, backend="native")
    expected = reference.occlusion_scatter(drops.double(), window, stride, size).to(dtype)
    assert heat.shape == (5, *size) and heat.dtype == dtype
    torch.testing.assert_close(heat, expected, atol=atol, rtol=atol)


def test_scatter_averages_overlapping_windows_and_zeroes_uncovered_pixels():
    # one row of 1 x 4 pixels; windows of 2 at stride 1 -> positions 0..2 with drops 1, 2, 4
    heat = ops.occlusion_scatter(torch.tensor([[1.0, 2.0, 4.0]]), (1, 1, 2), (1, 1, 1), (1, 1, 4), backend="native")
    assert torch.equal(heat.flatten(), torch.tensor([1.0, 1.5, 3.0, 4.0]))
    # windows of 1 at stride 2 over 3 pixels leave the middle one uncovered
    heat = ops.occlusion_scatter(torch.tensor([[5.0, 7.0]]), (1, 1, 1), (1, 1, 2), (1, 1, 3), backend="native")
    assert torch.equal(heat.flatten(), torch.tensor([5.0, 0.0, 7.0]))


def test_empty_drops():
    assert ops.occlusion_scatter(torch.empty(0, 4), (1, 2, 2), (1, 2, 2), (1, 4, 4)).shape == (0, 1, 4, 4)


def test_opcheck():
    images, baseline = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 6, 7)
    out = torch.empty(4, 3, 6, 7)
    torch.library.opcheck(torch.ops.pyfastviz.occlusion_batch.default, (images, baseline, [3, 3, 3], [1, 2, 2], 1, out))
    drops = torch.randn(3, positions((3, 6, 7), (3, 3, 3), (1, 2, 2)))
    torch.library.opcheck(torch.ops.pyfastviz.occlusion_scatter.default, (drops, [3, 3, 3], [1, 2, 2], [3, 6, 7]))


@pytest.mark.parametrize("window, stride, message", [
    ((3, 0, 2), (1, 1, 1), "window must be positive ints"),
    ((3, 2, 2), (1, -1, 1), "stride must be positive ints"),
    ((3, 9, 2), (1, 1, 1), r"window \(3, 9, 2\) is larger than the image \(3, 8, 8\)"),
    ((3, 2), (1, 1, 1), "window must be positive ints"),
])
def test_bad_geometry_gets_a_clear_error(window, stride, message):
    images = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=message):
        ops.occlusion_batch(images, images, window, stride, 0, torch.empty(1, 3, 8, 8))
    with pytest.raises(ValueError, match=message):
        ops.occlusion_scatter(torch.randn(1, 4), window, stride, (3, 8, 8))


def test_kernel_checks_layouts_and_ranges():
    images = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match="laid out alike"):
        ops.occlusion_batch(images, images, (3, 4, 4), (1, 4, 4), 0,
                            torch.empty(2, 3, 8, 8).to(memory_format=torch.channels_last), backend="native")
    with pytest.raises(RuntimeError, match="exceed the 4 window positions"):
        ops.occlusion_batch(images, images, (3, 4, 4), (1, 4, 4), 3, torch.empty(4, 3, 8, 8), backend="native")
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
