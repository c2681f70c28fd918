"""Launch helpers of the Triton kernels (kernels/_launch.py)."""

import contextlib
import types

import pytest
import torch

pytest.importorskip("triton")

from pyfastviz.kernels._launch import on_input_device  # noqa: E402


def test_a_launch_makes_its_inputs_cuda_device_current(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def current_device(device):
        entered.append(device)
        yield

    monkeypatch.setattr(torch.cuda, "device", current_device)
    launch = on_input_device(lambda x, scale, *, split: (x, scale, split))
    on_cpu = torch.zeros(1)
    assert launch(on_cpu, 2.0, split=3) == (on_cpu, 2.0, 3) and entered == []
    on_gpu_1 = types.SimpleNamespace(device=torch.device("cuda", 1))
    assert launch(on_gpu_1, 2.0, split=3) == (on_gpu_1, 2.0, 3)
    assert entered == [torch.device("cuda", 1)]
    assert launch.__name__ == "<lambda>"  # functools.wraps: the launcher's name in tracebacks


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_kernels_run_on_a_gpu_that_is_not_current():
    from pyfastviz.ops import gram, instance_norm, reference

    x = torch.randn(2, 64, 16, 16, device="cuda:1")
    with torch.cuda.device(0):
        torch.testing.assert_close(gram(x, backend="triton"), reference.gram(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(instance_norm(x, backend="triton"), reference.instance_norm(x),
                                   rtol=1e-5, atol=1e-5)
