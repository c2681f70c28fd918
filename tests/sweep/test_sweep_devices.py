"""sweep()'s device and dtype: the device names users give, models in other dtypes."""

import numpy as np
import pytest
import torch
from torch import nn

from pyfastviz.sweep import load_sweep, runner, sweep
from pyfastviz.sweep.distributed import local_device
from tiny_sweep import PREPROCESS, TinyNet, make_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_folder(root, 4)
    return root


def run(data, out, **kwargs):
    return sweep(data, out, **{"method": "gradient", "model": TinyNet(), "preprocess": PREPROCESS, "shard_size": 4,
                               "batch_size": 3, "workers": 0, "progress": False, **kwargs})


@pytest.fixture
def two_gpus(monkeypatch):
    """torch sees two GPUs (none needed: only device names are compared)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


class OnGpu(nn.Module):
    """Reports its parameter on `device`, as a model moved there does."""

    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)

    def parameters(self, recurse=True):
        yield type("Parameter", (), {"device": self.device})()


@pytest.mark.parametrize("given, settled", [
    ("cpu", "cpu"), ("cpu:0", "cpu"), (torch.device("cpu", 3), "cpu"),
    ("cuda", "cuda:0"), (torch.device("cuda"), "cuda:0"), ("cuda:1", "cuda:1")])
def test_local_device_settles_the_index(given, settled, two_gpus):
    assert local_device(given) == torch.device(settled)


def test_cuda_is_the_ranks_own_gpu_under_torchrun(two_gpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("cuda") == torch.device("cuda:1")
    assert runner._resolve_model(OnGpu("cuda:1"), None, PREPROCESS, None, "cuda")[3] == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"device='cuda' \(cuda:1\) but the model is on cuda:0"):
        runner._resolve_model(OnGpu("cuda:0"), None, PREPROCESS, None, "cuda")
    with pytest.raises(ValueError, match="each rank computes on its own GPU: the model is on cuda:0, this rank's is "
                                         r"cuda:1 \(LOCAL_RANK\)"):
        runner._resolve_model(OnGpu("cuda:0"), None, PREPROCESS, None, None)


def test_cuda_names_the_model_on_cuda0(two_gpus):
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        assert runner._resolve_model(OnGpu("cuda:0"), None, PREPROCESS, None, name)[3] == torch.device("cuda:0")
    with pytest.raises(ValueError, match="move the model there first"):
        runner._resolve_model(OnGpu("cuda:0"), None, PREPROCESS, None, "cuda:1")


def test_cpu_with_an_index_is_the_cpu(data, tmp_path):
    assert run(data, tmp_path / "out", device="cpu:0").mapped == 4


@pytest.mark.parametrize("method", ["occlusion", "gradient", "guided"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-3), (torch.bfloat16, 0.05)])
def test_models_in_other_dtypes(data, tmp_path, method, dtype, tolerance):
    options = {"window": 8, "stride": 4} if method == "occlusion" else {}
    run(data, tmp_path / "float32", method=method, **options)
    summary = run(data, tmp_path / "other", method=method, model=TinyNet().to(dtype), **options)
    assert summary.mapped == 4
    single, other = load_sweep(tmp_path / "float32"), load_sweep(tmp_path / "other")
    if dtype == torch.bfloat16 and method == "occlusion":
        tolerance = 1.0  # its probability drops are below bfloat16's resolution here: only the sweep runs
    for row in single.index:
        reference = single.map(row["path"]).astype(np.float32)
        difference = np.abs(other.map(row["path"]).astype(np.float32) - reference)
        assert difference.mean() < tolerance * np.abs(reference).max()
