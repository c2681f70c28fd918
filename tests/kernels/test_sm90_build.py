"""Every Triton kernel compiles for Hopper (sm_90) as the GPU path launches it: no compile error,
no register spills, shared memory within an SM's (tests/kernels/sm90_build.py; no GPU needed).
The CUDA kernels of pyfastviz._C, when it was built with them, do not spill either."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

from triton.runtime.jit import JITFunction  # noqa: E402

import sm90_build  # noqa: E402  (this folder, put on sys.path by pytest)
from pyfastviz import _native  # noqa: E402
from pyfastviz.kernels import gram, instance_norm  # noqa: E402

SCRIPT = Path(__file__).with_name("sm90_build.py")
needs_cuobjdump = pytest.mark.skipif(not Path(sm90_build.CUOBJDUMP).exists(),
                                     reason="Triton's CUDA backend binaries are not installed")


def launched_kernels(module) -> set[str]:
    """Names of the module's @triton.jit kernels (the *_kernel functions; the rest are helpers)."""
    return {name for name, value in vars(module).items() if isinstance(value, JITFunction) and name.endswith("_kernel")}


@needs_cuobjdump
def test_every_kernel_compiles_for_sm90_within_the_sm_limits(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    report = tmp_path / "builds.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(report)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    builds = json.loads(report.read_text())
    assert {b["kernel"] for b in builds} == launched_kernels(gram) | launched_kernels(instance_norm)
    assert all(b["registers"] > 0 and b["spilled_bytes"] == 0 for b in builds)


@needs_cuobjdump
@pytest.mark.skipif(not _native.KERNELS["cuda"], reason="pyfastviz._C was built without its CUDA kernels")
def test_the_cuda_kernels_do_not_spill():
    usage = sm90_build.resource_usage_by_kernel(importlib.util.find_spec("pyfastviz._C").origin)
    ours = {name: regs_local for name, regs_local in usage.items() if "pyfastviz" in name}
    for kernel in ("guided_relu_forward_packed_kernel", "guided_relu_backward_packed_kernel", "occlusion_batch_kernel",
                   "occlusion_scatter_kernel"):
        assert any(kernel in name for name in ours), (kernel, sorted(ours))
    assert all(local == 0 for _, local in ours.values()), ours
