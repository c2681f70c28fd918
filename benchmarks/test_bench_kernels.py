"""pytest-benchmark version of the Triton-kernel cases in benchmarks/cases.py (the gram and
instance-norm rows benchmarks/run.py tabulates): the reference and pyfastviz's kernels per
case, in one group.

    pytest benchmarks/test_bench_kernels.py [--bench-full] [--benchmark-group-by=group]
"""

import pytest

from benchmarks import cases
from benchmarks.test_bench_guided import synchronized


def pytest_generate_tests(metafunc):
    if "kernel_case" in metafunc.fixturenames:
        quick = not metafunc.config.getoption("--bench-full")
        kernel_cases = cases.gram_cases(quick) + cases.instance_norm_cases(quick)
        metafunc.parametrize("kernel_case", kernel_cases, ids=kernel_id)


def kernel_id(case: cases.GramCase | cases.InstanceNormCase) -> str:
    return f"{case.op}-{case.direction}-{'x'.join(map(str, case.shape))}-{case.dtype_label}"


@pytest.mark.parametrize("method", ["reference", "pyfastviz"])
def test_kernel_op(benchmark, bench_device, kernel_case, method):
    if not kernel_case.available(bench_device):
        pytest.skip(f"no {bench_device} kernel for {kernel_case.op} (Triton kernel, CUDA only)")
    fn = synchronized(kernel_case.build(bench_device)[method], bench_device)
    benchmark.group = f"{kernel_case.name} {kernel_id(kernel_case)}"
    benchmark.extra_info["bytes_moved"] = kernel_case.bytes_moved()
    if hasattr(kernel_case, "flops"):
        benchmark.extra_info["flops"] = kernel_case.flops()
    benchmark.pedantic(fn, rounds=20, warmup_rounds=3)
