"""pytest-benchmark version of the instance-norm cases in benchmarks/cases.py (the rows
benchmarks/run.py tabulates): F.instance_norm and pyfastviz's Triton kernels per case, in one group.

    pytest benchmarks/test_bench_instance_norm.py [--bench-full] [--benchmark-group-by=group]
"""

import pytest

from benchmarks import cases
from benchmarks.test_bench_guided import synchronized


def pytest_generate_tests(metafunc):
    if "instance_norm_case" in metafunc.fixturenames:
        quick = not metafunc.config.getoption("--bench-full")
        metafunc.parametrize("instance_norm_case", cases.instance_norm_cases(quick), ids=instance_norm_id)


def instance_norm_id(case: cases.InstanceNormCase) -> str:
    return f"{case.direction}-{'x'.join(map(str, case.shape))}-{str(case.dtype).removeprefix('torch.')}"


@pytest.mark.parametrize("method", ["reference", "pyfastviz"])
def test_instance_norm_op(benchmark, bench_device, instance_norm_case, method):
    if not instance_norm_case.available(bench_device):
        pytest.skip(f"no {bench_device} kernel for instance_norm (Triton kernel, CUDA only)")
    fn = synchronized(instance_norm_case.build(bench_device)[method], bench_device)
    benchmark.group = f"{instance_norm_case.name} {instance_norm_id(instance_norm_case)}"
    benchmark.extra_info["bytes_moved"] = instance_norm_case.bytes_moved()
    benchmark.pedantic(fn, rounds=20, warmup_rounds=3)
