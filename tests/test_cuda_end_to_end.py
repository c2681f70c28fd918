"""Whole techniques on a CUDA GPU against the same calls on the CPU, and the large style-transfer
run: what `make gpu-test` (and benchmarks/gpu_session.sh) checks beyond the op tests. Each test
runs a technique on CUDA (native / Triton kernels) and on the CPU (C++ kernels / references)."""

import pytest
import torch
import torchvision

from pyfastviz import guided_backprop, occlusion, saliency
from pyfastviz.fast_style import TransformerNet
from pyfastviz.inspect import nearest_neighbours
from pyfastviz.models import Preprocess
from pyfastviz.report import run_demo
from pyfastviz.report.gallery import referenced_images
from pyfastviz.style import estimate_peak_memory, style_transfer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GiB = 2**30


@pytest.fixture(autouse=True)
def exact_fp32_on_the_gpu():
    """cuDNN convolutions default to TF32 (10-bit mantissa), which moves activations near 0 across
    the ReLU threshold; the comparisons with the CPU want IEEE fp32 on both sides."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul  # the fp32_precision API (torch >= 2.9)
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    yield
    conv.fp32_precision, matmul.fp32_precision = saved


def random_images(n, size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return Preprocess(size).normalize(torch.rand(n, 3, size, size, generator=generator))


@pytest.fixture(scope="module")
def vgg11():
    torch.manual_seed(0)
    return torchvision.models.vgg11(weights=None).eval()


def on_both(fn, model, *tensors):
    """(fn on the CPU, fn on CUDA, moved back); model is moved to CUDA and back to the CPU."""
    cpu = fn(model, *tensors)
    try:
        gpu = fn(model.cuda(), *(t.cuda() for t in tensors))
    finally:
        model.cpu()
    return cpu, gpu.cpu()


def test_saliency_and_guided_backprop_match_the_cpu(vgg11):
    x = random_images(2, 64)
    targets = [3, 7]
    for technique in (saliency, guided_backprop):
        cpu, gpu = on_both(lambda m, images: technique(m, images, targets), vgg11, x)
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3 * cpu.abs().max().item())


def test_occlusion_matches_the_cpu(vgg11):
    x = random_images(1, 64)
    options = dict(window=16, stride=8, score="logit", progress=False)
    cpu, gpu = on_both(lambda m, images: occlusion(m, images, 5, **options), vgg11, x)
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3 * cpu.abs().max().item())


@pytest.mark.parametrize("num_styles", [None, 2])
def test_transformer_network_on_triton_instance_norm_matches_the_cpu(num_styles):
    torch.manual_seed(0)
    net = TransformerNet(num_styles)
    x = torch.rand(2, 3, 48, 40) * 255
    styles = None if num_styles is None else torch.tensor([0, 1])

    def output_and_grads(model, images, *style):
        model.zero_grad()
        out = model(images, *style)
        out.square().mean().backward()
        return torch.cat([out.flatten().detach().cpu(), *(p.grad.flatten().cpu() for p in model.parameters())])

    extra = () if styles is None else (styles,)
    cpu, gpu = on_both(output_and_grads, net, x, *extra)
    torch.testing.assert_close(gpu, cpu, rtol=2e-3, atol=2e-3 * cpu.abs().max().item())


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_nearest_neighbours_on_the_gpu_equal_the_cpus(precision):
    """float32 candidates on the GPU, certified against TF32's rounding too, then exact."""
    torch.backends.cuda.matmul.fp32_precision = precision  # the fixture restores it
    generator = torch.Generator().manual_seed(0)
    features = torch.relu(torch.randn(20_000, 1280, generator=generator))
    queries = features[:300] + 0.01 * torch.randn(300, 1280, generator=generator)
    for metric in ("cosine", "l2"):
        cpu = nearest_neighbours(features, queries, k=5, metric=metric)
        gpu = nearest_neighbours(features.cuda(), queries.cuda(), k=5, metric=metric)
        assert torch.equal(gpu[1].cpu(), cpu[1])
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-6, atol=1e-12)


@pytest.mark.slow  # benchmarks/gpu_session.sh leaves it to `make gpu-test`: its minutes go to the issues' targets
def test_the_quick_demo_runs_on_the_gpu(tmp_path):
    index = run_demo(tmp_path / "demo", progress=False, device="cuda")
    assert "on cuda" in index.read_text(encoding="utf-8")
    assert all(path.stat().st_size > 0 for path in referenced_images(index))


def test_2048px_style_transfer_runs_within_80_gb_on_vgg19():
    """The issue's size bar: a 2048 px output on an 80 GB GPU; the estimate bounds the real peak."""
    torch.manual_seed(0)
    vgg19 = torchvision.models.vgg19(weights=None).requires_grad_(False).eval().cuda()
    content, style = random_images(1, 2048).cuda(), random_images(1, 2048, seed=1).cuda()
    estimate = estimate_peak_memory(vgg19, 2048)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    result = style_transfer(vgg19, content, style, steps=2, progress=False)
    peak = torch.cuda.max_memory_allocated()
    assert peak < 80 * GiB, f"peak {peak / GiB:.1f} GiB"
    assert peak <= estimate, f"peak {peak / GiB:.1f} GiB above the estimate {estimate / GiB:.1f} GiB"
    assert result.image.shape == (1, 3, 2048, 2048) and torch.isfinite(result.image).all()
    assert result.history["style"][-1] < result.history["style"][0]
