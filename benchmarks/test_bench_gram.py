"""pytest-benchmark version of the gram cases in benchmarks/cases.py (the rows benchmarks/run.py
tabulates): the reference and pyfastviz's Triton kernel per case, in one group.

    pytest benchmarks/test_bench_gram.py [--bench-full] [--benchmark-group-by=group]
"""

import pytest

from benchmarks import cases
from benchmarks.test_bench_guided import synchronized


def pytest_generate_tests(metafunc):
    if "gram_case" in metafunc.fixturenames:
        quick = not metafunc.config.getoption("--bench-full")
        metafunc.parametrize("gram_case", cases.gram_cases(quick), ids=gram_id)


def gram_id(case: cases.GramCase) -> str:
    return f"{case.direction}-{'x'.join(map(str, case.shape))}-{case.precision}"


@pytest.mark.parametrize("method", ["reference", "pyfastviz"])
def test_gram_op(benchmark, bench_device, gram_case, method):
    if not gram_case.available(bench_device):
        pytest.skip(f"no {bench_device} kernel for gram (Triton kernel, CUDA only)")
    fn = synchronized(gram_case.build(bench_device)[method], bench_device)
    benchmark.group = f"{gram_case.name} {gram_id(gram_case)}"
    benchmark.extra_info["flops"] = gram_case.flops()
    benchmark.pedantic(fn, rounds=20, warmup_rounds=3)
