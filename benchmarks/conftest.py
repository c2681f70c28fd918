"""pytest-benchmark setup: `benchmarks` importable from the repo root, and the size/device options.

    pytest benchmarks/                       quick sizes, CUDA when available
    pytest benchmarks/ --bench-full          the full sizes of benchmarks/run.py
    pytest benchmarks/ --bench-device cpu
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true", help="full benchmark sizes (default: the --quick sizes)")
    parser.addoption("--bench-device", choices=("cpu", "cuda", "auto"), default="auto")


@pytest.fixture(scope="session")
def bench_device(request) -> str:
    choice = request.config.getoption("--bench-device")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda: no CUDA device")
    return choice
