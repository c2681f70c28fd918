"""The issues' speed and memory targets, checked against benchmarks/run.py's JSON rows.

    python benchmarks/targets.py bench.json [bench-rest.json ...]

One line per target: its issue, the target, the worst row it covers (value and which row)
and whether it is met. "no rows" when no row covers it: the section did not run, was cut
short, or ran at other sizes (--quick, the CPU). The targets are the issues' own, set for an
H100 at full sizes; run.py prints this table after a CUDA run.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import FAST_PATHS  # noqa: E402

M = 2**20
GRAM_TARGET_SHAPES = ((64, 512, 512), (128, 256, 256))  # (C, H, W) of VGG features of a 512 px image
INSTANCE_NORM_TARGET_SHAPES = ((4, 32, 256, 256), (4, 64, 128, 128), (4, 128, 64, 64), (16, 128, 64, 64))


@dataclass(frozen=True)
class Target:
    issue: int
    text: str
    covers: Callable[[dict], bool]  # the rows the target speaks of
    value: Callable[[dict], float]  # a row's measured value
    bound: float
    at_least: bool = True  # met when every value >= bound (False: every value < bound)
    unit: str = "x"  # "x" (ratio), "%" (a fraction shown in percent) or "GB"


def numel(row: dict) -> int:
    return math.prod(row["shape"])


def op_that_ran(row: dict, prefix: str) -> bool:
    """An op row (run.op_row, run.kernel_row) that was not skipped, its name starting with prefix."""
    return row.get("kind") == "op" and row.get("name", "").startswith(prefix) and "skipped" not in row


def occlusion_target_row(row: dict) -> bool:
    return (row.get("kind") == "occlusion" and row["name"] in ("occlusion resnet50", "occlusion vgg16")
            and row["shape"][-1] == 224 and (row["window"], row["stride"]) == (16, 8))


def speedup_over_captum(row: dict, methods) -> float | None:
    """The best of `methods`' speedups over Captum at its best setting; None without Captum."""
    speedups = row["speedup_vs_best_captum"]
    return max(speedups[name] for name in methods if name in speedups) if speedups else None


def guided_backward_32m(row: dict) -> bool:
    return op_that_ran(row, "guided_relu") and row["name"].endswith("backward") and numel(row) >= 32 * M


TARGETS = [
    Target(2, "guided_relu backward >= 2x the two-pass reference at >= 32M elements",
           guided_backward_32m, lambda r: r["speedup"], 2.0),
    Target(2, "guided_relu backward >= 80% of HBM bandwidth at >= 32M elements",
           guided_backward_32m, lambda r: r["peak_bandwidth_fraction"], 0.8, unit="%"),
    Target(2, "guided backprop of VGG16 at batch 16 no slower than a vanilla gradient",
           lambda r: r.get("kind") == "technique" and r["name"] == "guided_backprop vgg16" and r["shape"][0] == 16,
           lambda r: r["vanilla_ms"] / r["pyfastviz_ms"], 1.0),
    Target(3, "occlusion kernels < 5% of the end-to-end time (fp32, and bf16 of the fastest fast path)",
           occlusion_target_row, lambda r: max(r["kernels_share"], r["kernels_fast_share"]), 0.05,
           at_least=False, unit="%"),
    Target(3, "occlusion fp32 >= 1.2x Captum at its best setting",
           occlusion_target_row, lambda r: speedup_over_captum(r, ["pyfastviz"]), 1.2),
    Target(3, "occlusion fast path >= 4x Captum at its best setting",
           occlusion_target_row, lambda r: speedup_over_captum(r, FAST_PATHS), 4.0),
    Target(5, "gram >= 5x torch.bmm in exact fp32 at (64, 512^2) and (128, 256^2)",
           lambda r: op_that_ran(r, "gram") and r["dtype"] == "fp32" and tuple(r["shape"][1:]) in GRAM_TARGET_SHAPES,
           lambda r: r["speedup"], 5.0),
    Target(5, "gram >= 2x torch.bmm in tf32 at (64, 512^2) and (128, 256^2)",
           lambda r: op_that_ran(r, "gram") and r["dtype"] == "tf32" and tuple(r["shape"][1:]) in GRAM_TARGET_SHAPES,
           lambda r: r["speedup"], 2.0),
    Target(5, "gram >= 1.3x torch.bmm at C >= 256",
           lambda r: op_that_ran(r, "gram") and r["shape"][1] >= 256, lambda r: r["speedup"], 1.3),
    Target(5, "one Gatys iteration (VGG19, 512 px) faster than the reference iteration",
           lambda r: r.get("kind") == "style" and r["name"] == "gatys iteration" and r["size"] == 512,
           lambda r: r["speedup"], 1.0),
    Target(5, "a 2048 px style transfer fits an 80 GB GPU (peak allocated)",
           lambda r: r.get("kind") == "style" and r["name"] == "style_transfer large" and r["size"] == 2048,
           lambda r: r["peak_GiB"] * 2**30 / 1e9, 80.0, at_least=False, unit="GB"),
    Target(8, "instance norm forward+backward >= 3x F.instance_norm at the four style-network shapes",
           lambda r: op_that_ran(r, "instance_norm forward+backward") and tuple(r["shape"]) in INSTANCE_NORM_TARGET_SHAPES,
           lambda r: r["speedup"], 3.0),
    Target(8, "instance norm >= 60% of HBM bandwidth at >= 32M elements",
           lambda r: op_that_ran(r, "instance_norm") and numel(r) >= 32 * M, lambda r: r["peak_bandwidth_fraction"], 0.6,
           unit="%"),
    Target(8, "fast-style training step (batch 4, 256 px) faster than the torch.nn build",
           lambda r: r.get("kind") == "fast_style" and (r["batch"], r["size"]) == (4, 256),
           lambda r: r["speedup"], 1.0),
]


def row_label(row: dict) -> str:
    """Which row: its name (or kind and step), shape (or batch and size) and precision."""
    name = row.get("name") or f"{row['kind']} {row.get('step', '')}".strip()
    if "shape" in row:
        size = "x".join(map(str, row["shape"]))
    else:
        size = ", ".join(([f"batch {row['batch']}"] if "batch" in row else [])
                         + ([f"{row['size']} px"] if "size" in row else []))
    precision = row.get("dtype") or row.get("precision")
    return " ".join(part for part in (name, size, precision) if part)


def check(target: Target, rows: list[dict]) -> dict:
    """{"issue", "target", "rows", "worst", "worst_row", "met"}: met is None without rows (rows
    without the value, e.g. no known peak bandwidth, do not count). A ratio target of bound 1.0
    ("faster", "no slower") is met at >= 1.0."""
    covered = [row for row in rows if target.covers(row) and target.value(row) is not None]
    result = {"issue": target.issue, "target": target.text, "rows": len(covered)}
    if not covered:
        return {**result, "worst": None, "worst_row": None, "met": None}
    pick = min if target.at_least else max
    worst = pick(covered, key=target.value)
    value = target.value(worst)
    met = value >= target.bound if target.at_least else value < target.bound
    return {**result, "worst": value, "worst_row": row_label(worst), "met": met}


def show(value: float, unit: str) -> str:
    return {"x": f"{value:.2f}x", "%": f"{100 * value:.1f}%", "GB": f"{value:.1f} GB"}[unit]


def targets_table(rows: list[dict]) -> str:
    """Every target against the rows: a title line, then a Markdown table."""
    lines = ["Targets (the issues', set for an H100):", "| issue | target | worst measured | rows | met |",
             "|---|---|---|---|---|"]
    for target in TARGETS:
        r = check(target, rows)
        measured = "no rows" if r["met"] is None else f"{show(r['worst'], target.unit)} ({r['worst_row']})"
        verdict = {None: "", True: "met", False: "NOT MET"}[r["met"]]
        lines.append(f"| #{target.issue} | {target.text} | {measured} | {r['rows']} | {verdict} |")
    return "\n".join(lines)


def load_rows(paths: list[str]) -> list[dict]:
    """The rows of run.py JSON files, in order."""
    return [row for path in paths for row in json.loads(Path(path).read_text())["rows"]]


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(targets_table(load_rows(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
