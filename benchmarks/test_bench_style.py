"""pytest-benchmark version of benchmarks/style.py: one Gatys iteration on VGG19, the reference
and pyfastviz's Gram ops in one group (64 px unless --bench-full on CUDA: 512 px)."""

import re

import pytest

from benchmarks import style
from benchmarks.test_bench_guided import synchronized
from pyfastviz.style import StyleTargets, default_layers


@pytest.fixture(scope="module")
def vgg19(bench_device):
    return style.vgg19(bench_device)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_gatys_iteration(benchmark, bench_device, vgg19, backend, request):
    full = request.config.getoption("--bench-full") and bench_device == "cuda"
    content, style_image = style.images(512 if full else 64, bench_device)
    targets = StyleTargets(vgg19, style_image, backend=backend)
    iteration = synchronized(style.iteration_fn(vgg19, targets, content, default_layers(vgg19).content), bench_device)
    benchmark.group = f"gatys iteration vgg19 {content.shape[-1]}px"
    benchmark.pedantic(iteration, rounds=10 if full else 2, warmup_rounds=1)


def test_rows_and_table(vgg19, bench_device):
    rows = style.iteration_rows("cpu", quick=True, repeat=1, model=vgg19 if bench_device == "cpu" else None)
    assert rows[0]["size"] == 64 and rows[0]["speedup"] > 0
    large = {"name": "style_transfer large", "model": "vgg19", "size": 2048, "device": "cuda", "steps": 2,
             "s_per_step": 1.5, "peak_GiB": 30.0, "estimate_GiB": 40.0}
    table = style.style_table(rows + [large])
    assert re.search(r"\| gatys iteration +\| vgg19 +\| 64 +\| cpu +\|", table)
    assert "| 1500 per step |" in table and "30.0 GiB / 40.0 GiB" in table
