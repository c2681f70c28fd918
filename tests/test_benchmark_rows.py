"""The Triton-kernel rows of benchmarks/run.py on tiny cases, under TRITON_INTERPRET=1 or on a
GPU: the code a GPU session runs first (gram and instance_norm sections) runs in CI too, and
each case's two timed callables compute the same result (the benchmark compares like with like)."""

import pytest
import torch

pytest.importorskip("triton")

from benchmarks import cases, run  # noqa: E402
from tests.kernels.triton_setup import DEVICE, TRITON_MARKS  # noqa: E402

pytestmark = TRITON_MARKS
# Relative to the largest |expected| (both sides accumulate in fp32; tf32 and bf16 round their inputs).
RTOL = {"fp32": 1e-4, "float32": 1e-4, "tf32": 1e-2, "bf16": 2e-2, "bfloat16": 2e-2, "fp16": 4e-3}

KERNEL_CASES = [
    *(cases.GramCase(direction, (2, 5, 7, 9), precision)
      for direction in ("forward", "forward+backward") for precision in ("fp32", "tf32", "bf16", "fp16")),
    *(cases.InstanceNormCase(direction, (2, 3, 5, 7), dtype)
      for direction in ("forward", "forward+backward") for dtype in (torch.float32, torch.bfloat16)),
]


def case_id(case) -> str:
    return f"{case.op}-{case.direction}-{case.dtype_label}"


@pytest.mark.parametrize("case", KERNEL_CASES, ids=case_id)
def test_timed_callables_agree(case):
    fns = case.build(DEVICE)
    actual, expected = fns["pyfastviz"](), fns["reference"]()
    for a, e in zip(*(out if isinstance(out, tuple) else (out,) for out in (actual, expected)), strict=True):
        rtol = RTOL[case.dtype_label]
        torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * e.abs().max().item())


def test_kernel_rows_and_tables():
    gram_case, norm_case = KERNEL_CASES[1], KERNEL_CASES[-2]
    gram_row = run.kernel_row(gram_case, DEVICE, repeat=2, peak_bw=None)
    norm_row = run.kernel_row(norm_case, DEVICE, repeat=2, peak_bw=1e11)
    for row, case in ((gram_row, gram_case), (norm_row, norm_case)):
        assert "skipped" not in row
        assert row["pyfastviz_ms"] > 0 and row["speedup"] == row["reference_ms"] / row["pyfastviz_ms"]
        assert row["bytes_moved"] == case.bytes_moved() and len(row["samples_ms"]["pyfastviz"]) == 2
    assert gram_row["flops"] == gram_case.flops() and gram_row["peak_bandwidth_fraction"] is None
    assert "flops" not in norm_row and norm_row["peak_bandwidth_fraction"] == norm_row["pyfastviz_GBps"] * 1e9 / 1e11
    gram_table = run.kernel_table([gram_row], "torch.bmm").splitlines()
    assert "torch.bmm TFLOP/s" in gram_table[0] and "2x5x7x9" in gram_table[2]
    norm_table = run.kernel_table([norm_row, {**norm_row, "skipped": "why"}], "F.instance_norm").splitlines()
    assert "TFLOP/s" not in norm_table[0] and "skipped: why" in norm_table[3]
    assert len({line.count("|") for line in norm_table}) == 1  # every row has the header's columns
