"""pytest-benchmark version of benchmarks/fast_style.py: one fast-style training step (the
transformer alone), pyfastviz vs torch.nn modules, tiny on the CPU (--bench-full: the script's sizes)."""

import re

import pytest
import torch

from benchmarks import fast_style
from benchmarks.test_bench_guided import synchronized
from pyfastviz.fast_style import TransformerNet


def test_torch_nn_copy_computes_the_same():
    torch.manual_seed(0)
    ours = TransformerNet()
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        torch.testing.assert_close(fast_style.torch_nn_copy(ours)(x), ours(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("method", ["torch.nn", "pyfastviz"])
def test_training_step(benchmark, bench_device, method, request):
    quick = not request.config.getoption("--bench-full")
    batch, size = (1, 16) if quick else ((4, 256) if bench_device == "cuda" else (2, 64))
    torch.manual_seed(0)
    ours = TransformerNet().to(bench_device)
    network = fast_style.torch_nn_copy(ours) if method == "torch.nn" else ours
    content = torch.rand(batch, 3, size, size, device=bench_device) * 255
    step = synchronized(fast_style.training_step_fn(network, "network", None, content, None, False), bench_device)
    benchmark.group = f"fast_style training step {tuple(content.shape)}"
    benchmark.pedantic(step, rounds=3 if quick else 10, warmup_rounds=1)


def test_rows_and_table():
    rows = fast_style.training_step_rows("cpu", batch=1, size=16, repeat=1, warmup=0, full=False)
    assert [row["step"] for row in rows] == ["network"] and rows[0]["speedup"] > 0
    assert re.search(r"\| network +\| fp32 +\| cpu +\| 1 x 16px +\|", fast_style.training_step_table(rows))
