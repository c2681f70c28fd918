"""The native build: CPU kernels always; CUDA kernels compiled wherever nvcc and CUDA torch are."""

import os
import shutil

import pytest
import torch

from pyfastviz import _native

NVCC = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)


def test_extension_loaded_with_cpu_kernels():
    assert _native.native_available(), _native.LOAD_ERROR
    assert {"guided_relu", "guided_relu_backward"} <= _native.KERNELS["cpu"]


@pytest.mark.skipif(torch.version.cuda is None or NVCC is None or os.environ.get("PYFASTVIZ_CUDA") == "0",
                    reason="no nvcc or not a CUDA build of torch: CUDA sources are not compiled here")
def test_every_op_has_a_compiled_cuda_kernel():
    """Proves every csrc/cuda/*.cu compiled and registered, even on a machine without a GPU."""
    assert _native.KERNELS["cuda"] == _native.KERNELS["cpu"]


def test_triton_kernels_package_is_installed():
    import pyfastviz.kernels

    assert pyfastviz.kernels.__doc__
