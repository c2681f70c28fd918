"""pytest-benchmark version of the occlusion cases in benchmarks/cases.py; one group per case
holds every method (Captum when installed, the plain loops, pyfastviz fp32, fast path, compiled,
the kernels alone, and on CUDA the compiled plain loop and the CUDA-graph variants)."""

import pytest

from benchmarks import cases
from benchmarks.test_bench_guided import synchronized

METHODS = ["captum ppe=1", "captum ppe=128", "plain loop", "plain loop bf16", "plain loop compiled", "pyfastviz",
           "pyfastviz fast", "pyfastviz compiled", "pyfastviz graphs", "pyfastviz compiled+graphs", "kernels",
           "kernels fast"]


def pytest_generate_tests(metafunc):
    if "occlusion_case" in metafunc.fixturenames:
        quick = not metafunc.config.getoption("--bench-full")
        metafunc.parametrize("occlusion_case", cases.occlusion_cases(quick), ids=lambda case: case.model)


@pytest.mark.parametrize("method", METHODS)
def test_occlusion(benchmark, bench_device, occlusion_case, method):
    methods = occlusion_case.build(bench_device)
    if method not in methods:
        pytest.skip(f"{method}: " + ("captum is not installed" if method.startswith("captum") else "CUDA only"))
    benchmark.group = f"{occlusion_case.name} {occlusion_case.size}px"
    benchmark.extra_info["positions"] = occlusion_case.positions
    benchmark.pedantic(synchronized(methods[method], bench_device), rounds=3, warmup_rounds=1)
