"""pytest-benchmark version of benchmarks/ascent.py: STEPS steps of each gradient-ascent technique
and of the forward+backward floor, grouped by shape.

    pytest benchmarks/test_bench_ascent.py [--bench-full] [--benchmark-disable]
"""

import pytest

from benchmarks import ascent
from pyfastviz.models import load_model


@pytest.fixture(scope="module")
def net(bench_device):
    return load_model(device=bench_device).net


def pytest_generate_tests(metafunc):
    if "ascent_case" in metafunc.fixturenames:
        quick = not metafunc.config.getoption("--bench-full")
        metafunc.parametrize("ascent_case", ascent.ascent_cases(quick),
                             ids=lambda c: f"{c.technique}-b{c.batch}-{c.size}px")


def test_ascent(benchmark, net, bench_device, ascent_case):
    benchmark.group = f"ascent b{ascent_case.batch} {ascent_case.size}px"
    fn = ascent_case.build(net, bench_device)
    benchmark(lambda: (fn(), ascent._sync(bench_device)))


def test_table_lists_every_technique():
    rows = [{"name": t, "batch": 1, "size": 64, "steps_per_s": 2.0, "floor_steps_per_s": 4.0, "floor_fraction": 0.5}
            for t in ascent.TECHNIQUES]
    table = ascent.ascent_table(rows).splitlines()
    assert len(table) == 2 + len(ascent.TECHNIQUES) and "| classvis-fourier | 1 | 64 | 2.00 | 4.00 | 0.50 |" in table
