"""pytest-benchmark versions of the cases in benchmarks/cases.py (the same work benchmarks/run.py
tabulates). Each group holds the reference, the hook method and pyfastviz for one case, so
pytest-benchmark's own table compares them:

    pytest benchmarks/ [--bench-full] [--bench-device cpu|cuda] [--benchmark-group-by=group]
    pytest benchmarks/ --benchmark-disable      # smoke: run every case once, no timing
"""

import pytest
import torch

from benchmarks import cases


def pytest_generate_tests(metafunc):
    quick = not metafunc.config.getoption("--bench-full")
    if "op_case" in metafunc.fixturenames:
        metafunc.parametrize("op_case", cases.op_cases(quick), ids=op_id)
    if "technique_case" in metafunc.fixturenames:
        metafunc.parametrize("technique_case", cases.technique_cases(quick), ids=technique_id)


def op_id(case: cases.OpCase) -> str:
    return f"{case.direction}-{'x'.join(map(str, case.shape))}-{str(case.dtype).removeprefix('torch.')}"


def technique_id(case: cases.TechniqueCase) -> str:
    return f"{case.model}-{'x'.join(map(str, case.shape))}"


def synchronized(fn, device: str):
    """fn followed by a device sync, so the benchmark's wall clock covers the GPU work."""
    if device != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize()

    return call


@pytest.fixture(scope="session")
def models():
    """Models built once per session, keyed by (model name, device)."""
    return {}


@pytest.mark.parametrize("method", ["reference", "hooks", "pyfastviz"])
def test_guided_relu_op(benchmark, bench_device, op_case, method):
    if not op_case.available(bench_device):
        pytest.skip(f"pyfastviz._C has no {bench_device} kernel for guided_relu")
    fn = synchronized(op_case.build(bench_device)[method], bench_device)
    benchmark.group = f"{op_case.name} {op_id(op_case)}"
    benchmark.extra_info["bytes_moved_by_kernel"] = op_case.bytes_moved()
    benchmark.pedantic(fn, rounds=20, warmup_rounds=3)


@pytest.mark.parametrize("method", ["reference", "pyfastviz", "vanilla"])
def test_guided_backprop(benchmark, bench_device, technique_case, method, models):
    key = (technique_case.model, bench_device)
    if key not in models:
        models[key] = technique_case.build_model(bench_device)
    fn = synchronized(technique_case.build(bench_device, models[key])[method], bench_device)
    benchmark.group = f"{technique_case.name} {technique_id(technique_case)}"
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)
