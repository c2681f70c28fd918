"""Builds pyfastviz._C: the C++ CPU kernels always, the CUDA kernels when CUDA is there.

CUDA sources are compiled when torch is a CUDA build and nvcc is found (CUDA_HOME or
/usr/local/cuda), or when PYFASTVIZ_CUDA=1 forces it; PYFASTVIZ_CUDA=0 turns them off.
Build with `pip install -e . --no-build-isolation` so the installed torch is used.
"""

import glob
import os
import shutil

from setuptools import setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def find_cuda_home():
    """The CUDA toolkit folder holding bin/nvcc, or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for path in candidates:
        if path and os.path.exists(os.path.join(path, "bin", "nvcc")):
            return path
    return None


def want_cuda(cuda_home):
    forced = os.environ.get("PYFASTVIZ_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and cuda_home is not None


def cuda_wheel_include_dirs():
    """Headers shipped by torch's nvidia-* wheels (cusparse.h and friends live there)."""
    dirs = []
    for site in {os.path.dirname(os.path.dirname(torch.__file__))}:
        dirs += glob.glob(os.path.join(site, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include"))
    return sorted(d for d in set(dirs) if os.path.isdir(d))


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc")]
    openmp = ["-fopenmp"] if os.name != "nt" else ["/openmp"]
    cxx_flags = ["-O3", *openmp]
    cuda_home = find_cuda_home()
    if not want_cuda(cuda_home):
        return cpp_extension.CppExtension(
            "pyfastviz._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=openmp,
        )
    if cuda_home is None:
        raise RuntimeError("PYFASTVIZ_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the folder that holds "
                           "bin/nvcc (e.g. /usr/local/cuda), or PYFASTVIZ_CUDA=0 for a CPU-only build")
    os.environ.setdefault("CUDA_HOME", cuda_home)
    cpp_extension.CUDA_HOME = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    include_dirs += cuda_wheel_include_dirs()
    return cpp_extension.CUDAExtension(
        "pyfastviz._C", sources, include_dirs=include_dirs,
        define_macros=[("PYFASTVIZ_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=openmp,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
