"""pytest-benchmark version of the inspect cases in benchmarks/cases.py (feature extraction,
nearest neighbours, PCA); one group per case holds its reference and pyfastviz."""

import pytest

from benchmarks import cases
from benchmarks.test_bench_guided import synchronized


def pytest_generate_tests(metafunc):
    if "inspect_case" in metafunc.fixturenames:
        quick = not metafunc.config.getoption("--bench-full")
        metafunc.parametrize("inspect_case", cases.inspect_cases(quick), ids=inspect_id)


def inspect_id(case) -> str:
    return f"{case.name.split()[0]}-{'x'.join(map(str, case.shape))}" + (f"-k{case.k}" if hasattr(case, "k") else "")


@pytest.mark.parametrize("method", ["reference", "pyfastviz"])
def test_inspect(benchmark, bench_device, inspect_case, method):
    fn = synchronized(inspect_case.build(bench_device)[method], bench_device)
    benchmark.group = f"{inspect_case.name} {inspect_id(inspect_case)}"
    benchmark.extra_info["items"] = inspect_case.items
    benchmark.extra_info["unit"] = inspect_case.unit
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
