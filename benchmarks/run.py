"""Benchmark table: pyfastviz against its pure-PyTorch references, same run, same device.

    python benchmarks/run.py [--device cpu|cuda|auto] [--quick] [--repeat N] [--sections A,B] [--json PATH]
    python -m benchmarks.run ...

Op rows (guided_relu forward/backward): median time of the reference (ops/reference.py)
and of the native kernel, speedup = reference / pyfastviz; the same against what the
classic hook method runs (autograd's fused ReLU backward + clamp; the plain ReLU forward);
the kernel's achieved GB/s (bytes it must move, see cases.OpCase.bytes_moved) and on CUDA
its fraction of the device's peak bandwidth; the bytes per element each method saves for
backward.
Gram rows (gram forward and forward+backward on VGG feature-map shapes, kernels/gram.py, in
exact fp32, tf32 and bf16): median time of the reference (torch.bmm) and of the Triton kernels,
speedup, both as TFLOP/s of the full 2*N*C^2*H*W products, and the kernels' GB/s of the bytes
they must move (cases.GramCase.bytes_moved) with its fraction of the device's peak bandwidth.
Instance-norm rows (forward and forward+backward with a (C,) affine, kernels/instance_norm.py):
median time of F.instance_norm and of the Triton kernels, speedup, the kernels' GB/s of the
bytes they must move (cases.InstanceNormCase.bytes_moved) and its fraction of the device's
peak bandwidth. Both are CUDA only: skipped on the CPU, where the ops run the reference, except
under TRITON_INTERPRET=1 (tests/test_benchmark_rows.py runs them there, tiny and untimed).
Technique rows (guided backprop on a model): the hook-based reference, pyfastviz and the
vanilla gradient; time per call, and memory: on CUDA torch.cuda.max_memory_allocated of the
call, on CPU the bytes the forward pass saves for backward (unique storages packed by
torch.autograd.graph.saved_tensors_hooks, model parameters excluded).
Inspect rows (kind "inspect"): extract_features against a plain no_grad loop with a pre-hook
on the last nn.Linear (images/s), nearest_neighbours (cosine, k=5) against scikit-learn's
brute-force NearestNeighbors (queries/s), pca(backend="torch") against pca(backend="sklearn");
median ms of each, speedup = reference / pyfastviz, and how far the two outputs agree
(from the warmup call). Medians of the technique repeat (default 3: sklearn's full SVD is slow).
Style rows (benchmarks/style.py): one Gatys iteration on VGG19 with pyfastviz's Gram ops against
the same iteration on the reference, and (full sizes, CUDA) the peak memory of a 2048 px style
transfer against its estimate. Gradient-ascent rows (benchmarks/ascent.py): steps/s of each technique on the default model
against a bare forward+backward of the model at the same shape. Fast-style rows
(benchmarks/fast_style.py): one training step of the transformer network against the same
network built from torch.nn modules. Sweep rows (benchmarks/sweep.py): images/s of an
occlusion and a gradient sweep over a folder of JPEGs and the share of time outside the model.
The header also gives x.clone() GB/s of the largest op size, a practical bandwidth ceiling.
Timing: warmup calls, then rounds that call every method once in turn (so a slow spell
on a shared machine hits all of them), median per method. CUDA: events around each call;
CPU: time.perf_counter.
--sections runs some of the tables only (SECTIONS, e.g. --sections gram,instance_norm).
Prints Markdown tables and writes the same rows, with device/torch/date/commit, as JSON; after a
CUDA run, also the issues' targets against the rows (benchmarks/targets.py). --report A.json
[B.json ...] runs nothing and prints the tables and targets of earlier runs (also of a run cut
short: the JSON is rewritten after every section).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cases  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20

# Peak DRAM bandwidth (bytes/s) by device name, for when the properties lack clock/bus width.
# Most specific names first.
PEAK_BANDWIDTH_BY_NAME = [
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM
    ("A100", 2.0e12),
]


# ---- machine facts --------------------------------------------------------------------------


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return choice


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def peak_bandwidth(device: str) -> float | None:
    """Peak DRAM bandwidth in bytes/s: 2 (DDR) * memory clock * bus width, else by name, else None."""
    if device != "cuda":
        return None
    props = torch.cuda.get_device_properties()
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8
    return next((bw for key, bw in PEAK_BANDWIDTH_BY_NAME if key in props.name), None)


def git_commit() -> tuple[str | None, bool]:
    """(short commit, working tree has changes). Without git or a .git folder (a copy of the tree,
    as on a lent GPU machine): the environment's BENCH_COMMIT, or None."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BENCH_COMMIT"), False


# ---- measuring ------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_one(fn, device: str) -> float:
    """Milliseconds of one call of fn."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def sample_times(fns: dict, device: str, warmup: int, repeat: int) -> dict[str, list[float]]:
    """ms of each call per method; each round calls every method once, in turn."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(time_one(fn, device))
    return times


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in samples.items()}


def saved_bytes(fn, exclude=()) -> int:
    """Bytes of the distinct storages autograd saves for backward while fn runs.

    Storages in `exclude` (e.g. the model's parameters) are not counted; a storage saved by
    several nodes (a ReLU output that the next conv also saves) is counted once.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def copy_bandwidth(device: str, numel: int) -> float:
    """GB/s of x.clone() on numel fp32 elements (reads + writes): a practical ceiling to compare with."""
    x = torch.ones(numel, device=device)
    ms = statistics.median(sample_times({"clone": x.clone}, device, warmup=3, repeat=20)["clone"])
    return 2 * x.nbytes / (ms * 1e-3) / 1e9


def peak_allocated(fn, device: str) -> int:
    """torch.cuda.max_memory_allocated over one call of fn (weights and inputs included)."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated()


# ---- rows -----------------------------------------------------------------------------------


def op_row(case: cases.OpCase, device: str, repeat: int, peak_bw: float | None) -> dict:
    row = {"kind": "op", "name": case.name, "shape": list(case.shape), "dtype": str(case.dtype).removeprefix("torch.")}
    if not case.available(device):
        return {**row, "skipped": f"pyfastviz._C has no {device} kernel for guided_relu"}
    samples = sample_times(case.build(device), device, warmup=3, repeat=repeat)
    ms = medians(samples)
    gbps = case.bytes_moved() / (ms["pyfastviz"] * 1e-3) / 1e9
    row |= {
        "reference_ms": ms["reference"],
        "hooks_ms": ms["hooks"],
        "pyfastviz_ms": ms["pyfastviz"],
        "speedup": ms["reference"] / ms["pyfastviz"],
        "speedup_vs_hooks": ms["hooks"] / ms["pyfastviz"],
        "bytes_moved": case.bytes_moved(),
        "pyfastviz_GBps": gbps,
        "peak_bandwidth_fraction": gbps * 1e9 / peak_bw if peak_bw else None,
        "samples_ms": samples,
    }
    if case.direction == "forward":  # what each method keeps for the backward pass
        leaf = case.leaf(device)
        row["saved_bytes_per_element"] = {
            method: saved_bytes(lambda f=forward: f(leaf)) / case.numel
            for method, forward in case.saving_forwards().items()
        }
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def kernel_row(case: cases.GramCase | cases.InstanceNormCase, device: str, repeat: int,
               peak_bw: float | None) -> dict:
    """A Triton kernel's case against its reference: times, speedup, GB/s of the bytes the kernels
    must move and its fraction of peak bandwidth, and TFLOP/s where the case counts flops."""
    row = {"kind": "op", "name": case.name, "shape": list(case.shape), "dtype": case.dtype_label}
    if not case.available(device):
        return {**row, "skipped": f"no {device} kernel for {case.op} (Triton kernel, CUDA only)"}
    samples = sample_times(case.build(device), device, warmup=3, repeat=repeat)
    ms = medians(samples)
    gbps = case.bytes_moved() / (ms["pyfastviz"] * 1e-3) / 1e9
    row |= {
        "reference_ms": ms["reference"],
        "pyfastviz_ms": ms["pyfastviz"],
        "speedup": ms["reference"] / ms["pyfastviz"],
        "bytes_moved": case.bytes_moved(),
        "pyfastviz_GBps": gbps,
        "peak_bandwidth_fraction": gbps * 1e9 / peak_bw if peak_bw else None,
        "samples_ms": samples,
    }
    if hasattr(case, "flops"):
        row |= {
            "flops": case.flops(),
            "reference_TFLOPs": case.flops() / (ms["reference"] * 1e-3) / 1e12,
            "pyfastviz_TFLOPs": case.flops() / (ms["pyfastviz"] * 1e-3) / 1e12,
        }
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def technique_row(case: cases.TechniqueCase, device: str, repeat: int) -> dict:
    model = case.build_model(device)
    fns = case.build(device, model)
    samples = sample_times(fns, device, warmup=1, repeat=repeat)
    ms = medians(samples)
    if device == "cuda":
        metric = "cuda_max_allocated_MiB"
        memory = {name: peak_allocated(fn, device) / MiB for name, fn in fns.items()}
    else:
        metric = "saved_for_backward_MiB"
        weights = [*model.parameters(), *model.buffers()]
        memory = {name: saved_bytes(fn, exclude=weights) / MiB for name, fn in fns.items()}
    return {
        "kind": "technique", "name": case.name, "shape": list(case.shape), "dtype": "float32",
        "reference": "guided_backprop_hooks", "baseline": "saliency (vanilla gradient)",
        "reference_ms": ms["reference"],
        "pyfastviz_ms": ms["pyfastviz"],
        "speedup": ms["reference"] / ms["pyfastviz"],
        "vanilla_ms": ms["vanilla"],
        "memory_metric": metric,
        "memory": memory,
        "samples_ms": samples,
    }


def inspect_row(case, device: str, repeat: int) -> dict:
    """One cases.FeatureCase / NeighbourCase / PCACase: the warmup call's outputs give the agreement."""
    fns = case.build(device)
    outputs = {name: fn() for name, fn in fns.items()}  # the warmup round
    synchronize(device)
    metric, value = case.agreement(outputs["reference"], outputs["pyfastviz"])
    del outputs
    samples = sample_times(fns, device, warmup=0, repeat=repeat)
    ms = medians(samples)
    row = {
        "kind": "inspect", "name": case.name, "shape": list(case.shape), "dtype": "float32",
        "reference": case.reference,
        "reference_ms": ms["reference"],
        "pyfastviz_ms": ms["pyfastviz"],
        "speedup": ms["reference"] / ms["pyfastviz"],
        "items": case.items,
        "unit": case.unit,
        "reference_per_s": case.items / (ms["reference"] * 1e-3),
        "pyfastviz_per_s": case.items / (ms["pyfastviz"] * 1e-3),
        "agreement": {"metric": metric, "value": value},
        "samples_ms": samples,
    }
    if isinstance(case, cases.NeighbourCase):
        row["queries"] = case.queries
    del fns
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


FAST_PATHS = ("pyfastviz fast", "pyfastviz compiled", "pyfastviz graphs", "pyfastviz compiled+graphs")


def occlusion_row(case: cases.OcclusionCase, device: str, repeat: int) -> dict:
    """ms and forwards/s per method; the kernels' share of pyfastviz fp32 (kernels in fp32 contiguous)
    and of the fastest fast path (kernels in its bf16 channels_last); speedups over the best Captum."""
    fns = case.build(device)
    samples = sample_times(fns, device, warmup=1, repeat=repeat)
    ms = medians(samples)
    captum = [name for name in ms if name.startswith("captum")]
    best_captum = min((ms[name] for name in captum), default=None)
    fastest = min((name for name in FAST_PATHS if name in ms), key=ms.get)
    return {
        "kind": "occlusion", "name": case.name, "shape": [1, 3, case.size, case.size], "dtype": "float32",
        "window": case.window, "stride": case.stride, "positions": case.positions, "batch_size": case.batch_size,
        "ms": ms,
        "forwards_per_s": {name: case.positions / (t / 1000) for name, t in ms.items() if not name.startswith("kernels")},
        "kernels_share": ms["kernels"] / ms["pyfastviz"],
        "fastest_fast_path": fastest,
        "kernels_fast_share": ms["kernels fast"] / ms[fastest],
        "speedup_vs_best_captum": {name: best_captum / t for name, t in ms.items() if name.startswith("pyfastviz")}
        if best_captum else None,
        "samples_ms": samples,
    }


# ---- output ---------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def fmt(value, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def shape_text(shape) -> str:
    return "x".join(map(str, shape))


def header(meta: dict) -> str:
    """The two lines above the tables: device, bandwidths, software, load, commit, date, sizes."""
    peak = f"peak {meta['peak_bandwidth_GBps']:.0f} GB/s, " if meta["peak_bandwidth_GBps"] else ""
    load = f", load average {meta['loadavg_before']:.2f} before the run" if meta["loadavg_before"] is not None else ""
    dirty = " (dirty)" if meta["dirty"] else ""
    copy = f"x.clone() of {meta['copy_MiB']:.0f} MiB: {meta['copy_GBps']:.1f} GB/s"
    return (f"\ndevice: {meta['device_name']} ({peak}{copy})\n"
            f"torch {meta['torch']}{load}, commit {meta['commit']}{dirty}, {meta['date']}, "
            f"{'quick' if meta['quick'] else 'full'} sizes, medians of {meta['repeat']['op']} (ops) / "
            f"{meta['repeat']['technique']} (techniques) / {meta['repeat'].get('inspect', '')} (inspect)\n")


def op_table(rows: list[dict]) -> str:
    header = ["op", "shape", "dtype", "reference ms", "pyfastviz ms", "speedup", "hook method ms", "vs hook method",
              "pyfastviz GB/s", "% of peak BW", "saved B/elem: hooks / ref / pyfastviz"]
    body = []
    for r in rows:
        if "skipped" in r:
            body.append(skipped_row(r, blanks=7))
            continue
        saved = r.get("saved_bytes_per_element")
        body.append([
            r["name"], shape_text(r["shape"]), r["dtype"], fmt(r["reference_ms"], ".3f"), fmt(r["pyfastviz_ms"], ".3f"),
            fmt(r["speedup"]) + "x", fmt(r["hooks_ms"], ".3f"), fmt(r["speedup_vs_hooks"]) + "x",
            fmt(r["pyfastviz_GBps"], ".1f"),
            fmt(r["peak_bandwidth_fraction"] and 100 * r["peak_bandwidth_fraction"], ".0f"),
            " / ".join(format(saved[k], "g") for k in ("hooks", "reference", "pyfastviz")) if saved else "",
        ])
    return markdown(header, body)


def skipped_row(r: dict, blanks: int) -> list[str]:
    """A table row of a case that did not run: its name, shape, dtype and the reason."""
    return [r["name"], shape_text(r["shape"]), r["dtype"], "skipped: " + r["skipped"], *[""] * blanks]


def kernel_table(rows: list[dict], reference: str) -> str:
    """kernel_row rows; TFLOP/s columns when the rows count flops. reference: its column label."""
    flops = any("flops" in r for r in rows)
    header = ["op", "shape", "precision", f"{reference} ms", "pyfastviz ms", "speedup",
              *([f"{reference} TFLOP/s", "pyfastviz TFLOP/s"] if flops else []), "pyfastviz GB/s", "% of peak BW"]
    body = []
    for r in rows:
        if "skipped" in r:
            body.append(skipped_row(r, blanks=len(header) - 4))
            continue
        body.append([
            r["name"], shape_text(r["shape"]), r["dtype"], fmt(r["reference_ms"], ".3f"), fmt(r["pyfastviz_ms"], ".3f"),
            fmt(r["speedup"]) + "x",
            *([fmt(r["reference_TFLOPs"], ".1f"), fmt(r["pyfastviz_TFLOPs"], ".1f")] if flops else []),
            fmt(r["pyfastviz_GBps"], ".1f"),
            fmt(r["peak_bandwidth_fraction"] and 100 * r["peak_bandwidth_fraction"], ".0f"),
        ])
    return markdown(header, body)


def technique_table(rows: list[dict]) -> str:
    unit = "peak MiB (cuda max allocated)" if rows and rows[0]["memory_metric"].startswith("cuda") else "saved MiB"
    header = ["technique", "input shape", "dtype", "hooks (reference) ms", "pyfastviz ms", "speedup",
              "vanilla gradient ms", f"{unit}: hooks / pyfastviz / vanilla"]
    body = [[
        r["name"], shape_text(r["shape"]), r["dtype"], fmt(r["reference_ms"], ".1f"), fmt(r["pyfastviz_ms"], ".1f"),
        fmt(r["speedup"]) + "x", fmt(r["vanilla_ms"], ".1f"),
        " / ".join(fmt(r["memory"][k], ".1f") for k in ("reference", "pyfastviz", "vanilla")),
    ] for r in rows]
    return markdown(header, body)


def occlusion_table(rows: list[dict]) -> str:
    """One row per case, each method's ms (forwards/s); the CUDA-only columns stay empty on the CPU.
    Then the kernels' share of pyfastviz fp32 and (in bf16 channels_last) of the fastest fast path,
    and the speedup of pyfastviz / fast / the fastest compiled or graphed variant over the best Captum."""
    compiled = ["pyfastviz compiled", "pyfastviz graphs", "pyfastviz compiled+graphs"]
    methods = ["captum ppe=1", "captum ppe=128", "plain loop", "plain loop bf16", "plain loop compiled", "pyfastviz",
               "pyfastviz fast", *compiled]
    header = ["occlusion", "input", "window/stride (positions)", *[f"{m} ms (fwd/s)" for m in methods],
              "kernels % of pyfastviz", "kernels bf16 % of fastest fast path",
              "pyfastviz / fast / best compiled vs best Captum"]
    body = []
    for r in rows:
        speedups = r["speedup_vs_best_captum"]
        best_compiled = speedups and max(speedups[m] for m in compiled if m in speedups)
        times = [f"{r['ms'][m]:.1f} ({r['forwards_per_s'][m]:.0f}/s)" if m in r["ms"] else "" for m in methods]
        body.append([r["name"], shape_text(r["shape"]), f"{r['window']}/{r['stride']} ({r['positions']})", *times,
                     fmt(100 * r["kernels_share"], ".1f"),
                     f"{100 * r['kernels_fast_share']:.1f} ({r['fastest_fast_path'].removeprefix('pyfastviz ')})",
                     "" if not speedups else
                     f"{speedups['pyfastviz']:.2f}x / {speedups['pyfastviz fast']:.2f}x / {best_compiled:.2f}x"])
    return markdown(header, body)


def inspect_table(rows: list[dict]) -> str:
    header = ["inspect", "shape", "reference", "reference ms", "pyfastviz ms", "speedup", "reference /s",
              "pyfastviz /s", "agreement"]
    body = [[
        r["name"] + (f" ({r['queries']} queries)" if "queries" in r else ""), shape_text(r["shape"]), r["reference"],
        fmt(r["reference_ms"], ".1f"), fmt(r["pyfastviz_ms"], ".1f"), fmt(r["speedup"]) + "x",
        f"{r['reference_per_s']:,.0f} {r['unit']}", f"{r['pyfastviz_per_s']:,.0f} {r['unit']}",
        f"{r['agreement']['metric']} {r['agreement']['value']:.3g}",
    ] for r in rows]
    return markdown(header, body)


def describe(case) -> str:
    """A case's name, shape (or image size) and precision, for the progress lines on stderr."""
    size = shape_text(case.shape) if hasattr(case, "shape") else f"{case.size} px"
    precision = getattr(case, "precision", None) or getattr(case, "dtype", None)
    return " ".join(str(part) for part in (case.name, size, precision) if part is not None)


def over_cases(case_list, make_row):
    """A section that makes one row per case, each announced on stderr."""
    def run():
        rows = []
        for case in case_list:
            print(f"  {describe(case)} ...", file=sys.stderr, flush=True)
            rows.append(make_row(case))
        return rows
    return run


def section_tables() -> dict:
    """{section name: rows -> Markdown table}."""
    # These modules import this one (timing helpers), so they are imported here, not at the top.
    from benchmarks import ascent, fast_style, style, sweep

    return {
        "ops": op_table,
        "gram": lambda rows: kernel_table(rows, "torch.bmm"),
        "instance_norm": lambda rows: kernel_table(rows, "F.instance_norm"),
        "techniques": technique_table,
        "occlusion": occlusion_table,
        "inspect": inspect_table,
        "style": style.style_table,
        "ascent": ascent.ascent_table,
        "fast_style": fast_style.training_step_table,
        "sweep": sweep.sweep_table,
    }


def sections(device: str, quick: bool, repeat: int | None, peak_bw: float | None) -> dict:
    """{name: () -> rows}, in the order they run and print."""
    from benchmarks import ascent, fast_style, style, sweep  # here, not at the top: see section_tables

    op_repeat, technique_repeat, inspect_repeat = repeat or 20, repeat or 5, repeat or 3
    return {
        "ops": over_cases(cases.op_cases(quick), lambda c: op_row(c, device, op_repeat, peak_bw)),
        "gram": over_cases(cases.gram_cases(quick), lambda c: kernel_row(c, device, op_repeat, peak_bw)),
        "instance_norm": over_cases(cases.instance_norm_cases(quick), lambda c: kernel_row(c, device, op_repeat, peak_bw)),
        "techniques": over_cases(cases.technique_cases(quick), lambda c: technique_row(c, device, technique_repeat)),
        "occlusion": over_cases(cases.occlusion_cases(quick), lambda c: occlusion_row(c, device, technique_repeat)),
        "inspect": over_cases(cases.inspect_cases(quick), lambda c: inspect_row(c, device, inspect_repeat)),
        "style": lambda: style.style_rows(device, quick, repeat=technique_repeat, large=not quick),
        "ascent": lambda: ascent.ascent_rows(device, quick, repeat=repeat or 3),
        "fast_style": lambda: fast_style.training_step_rows(device, repeat=technique_repeat, full=not quick),
        "sweep": lambda: [{"kind": "sweep", **row}
                          for row in sweep.sweep_rows(device, 8 if quick else 300, window=32, stride=32)],
    }


SECTIONS = ("ops", "gram", "instance_norm", "techniques", "occlusion", "inspect", "style", "ascent", "fast_style",
            "sweep")


def parse_sections(text: str) -> list[str]:
    """"all" or a comma-separated list of SECTIONS names, in SECTIONS order."""
    names = SECTIONS if text == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {unknown or [text]}: choose from {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in names]


def render(rows: list[dict]) -> str:
    """The Markdown tables of the rows, one per section in the order the sections ran."""
    tables = section_tables()
    order = list(dict.fromkeys(row["section"] for row in rows))
    out = []
    for name in order:
        section_rows = [row for row in rows if row["section"] == name]
        errors = [row["error"] for row in section_rows if row.get("kind") == "error"]
        out.append(f"{name}: FAILED {errors[0]}" if errors else tables[name](section_rows))
    return "\n\n".join(out)


def report(paths: list[str]) -> int:
    """Print the header, tables and targets of JSON files written by earlier runs."""
    from benchmarks.targets import targets_table

    rows = []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        if any("section" not in row for row in saved["rows"]):
            raise SystemExit(f"{path}: rows without their section (written by an older run.py): run it again")
        print(header(saved["meta"]))
        print(render(saved["rows"]))
        rows += saved["rows"]
    print("\n" + targets_table(rows))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke, small CPUs)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed rounds per case (default: 20 for ops, 5 for techniques, 3 for inspect)")
    parser.add_argument("--sections", type=parse_sections, default="all",
                        help=f"comma-separated, from {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--json", default="bench-results.json", help="where to write the rows")
    parser.add_argument("--report", nargs="+", metavar="JSON",
                        help="run nothing: print the tables and the targets of these earlier runs' JSON")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.report:
        return report(args.report)

    device = resolve_device(args.device)
    peak_bw = peak_bandwidth(device)
    commit, dirty = git_commit()
    meta = {
        "device": device,
        "device_name": device_name(device),
        "peak_bandwidth_GBps": peak_bw / 1e9 if peak_bw else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty,
        "loadavg_before": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # others' work skews CPU times
        "quick": args.quick,
        "repeat": {"op": args.repeat or 20, "technique": args.repeat or 5, "inspect": args.repeat or 3},
        "sections": args.sections,
    }

    started = time.perf_counter()
    copy_numel = max(case.numel for case in cases.op_cases(args.quick))  # fp32 copy of the largest op size
    meta["copy_MiB"], meta["copy_GBps"] = copy_numel * 4 / MiB, copy_bandwidth(device, copy_numel)
    runners = sections(device, args.quick, args.repeat, peak_bw)
    rows, failed = [], []
    for name in args.sections:
        print(f"{name}:", file=sys.stderr, flush=True)
        try:
            section_rows = runners[name]()
        except Exception as error:  # one broken section must not cost the others (a GPU lease is short)
            traceback.print_exc()
            failed.append(name)
            section_rows = [{"kind": "error", "error": repr(error)}]
        rows += [{"section": name, **row} for row in section_rows]
        meta["seconds"] = round(time.perf_counter() - started, 1)
        write_json(args.json, meta, rows)  # after every section, so a run cut short keeps what it measured

    print(header(meta))
    print(render(rows))
    if device == "cuda":
        from benchmarks.targets import targets_table

        print("\n" + targets_table(rows))
    print(f"\nwrote {args.json} ({meta['seconds']} s)" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    """The rows and meta as JSON, written to a temporary file and renamed (never half-written)."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
