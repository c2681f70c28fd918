"""Compile every Triton kernel launch the GPU path makes for Hopper (sm_90), without a GPU.

The interpreter (TRITON_INTERPRET=1) runs the kernels' Python, not their compiled code, and
uses smaller tiles: it cannot see a kernel that fails to compile, needs more shared memory
than an SM has, or spills registers. This script runs the launchers in kernels/ on CPU
tensors with the GPU's settings, records each launch instead of running it, and compiles
each distinct specialisation (dtypes, 16-byte alignment, constexprs, warps, stages) for
sm_90 with the installed Triton, as Triton's own launcher would on an H100.

Run without TRITON_INTERPRET: python tests/kernels/sm90_build.py [--quick] [--json FILE]
Prints one line per compiled kernel: registers, spilled bytes, shared memory; exits 1 when a
kernel spills registers or needs more shared memory than SM90_SHARED_BYTES. The full run
(about 340 kernels, 4 minutes on 2 cores) is for changes to kernels/; --quick (CI) covers
every branch in fp32 and one shape in fp16 and bf16.
Uses Triton 3.8's launcher internals (the pinned version).
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

TARGET = GPUTarget("cuda", 90, 32)
SM90_SHARED_BYTES = 232448  # the most shared memory one block can use on an H100/H200 (227 KiB)
SM_COUNT = 132  # H100 SXM; the launchers size their split-K grids by it


@dataclass(frozen=True)
class Launch:
    kernel: JITFunction
    args: tuple
    kwargs: dict


@dataclass
class Build:
    kernel: str
    specialisation: str
    registers: int
    spilled_bytes: int
    shared_bytes: int


@contextlib.contextmanager
def recorded_launches():
    """Within the block, `kernel[grid](...)` appends a Launch to the yielded list and runs nothing."""
    launches = []

    def record(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(self, args, kwargs))

    original = JITFunction.run
    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def randn(*shape, dtype=torch.float32, channels_last=False):
    x = torch.randn(shape).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def run_gram_launchers(full: bool):
    """The branches of kernels/gram.py: dtypes, tf32, layouts, tile sides, split-K or not.
    Not full: each layout and tile side in one dtype only."""
    from pyfastviz.kernels import gram

    shapes = ((64, 96, "contiguous"), (64, 65, "strided"), (3, 33, "channels_last"), (256, 32, "channels_last"))
    for dtype in DTYPES:
        for tf32 in ((False, True) if dtype == torch.float32 else (False,)):
            for C, side, layout in shapes if full or (dtype, tf32) == (torch.float32, False) else shapes[:1]:
                f = randn(2, C, side, side + (layout == "strided"), dtype=dtype,
                          channels_last=layout == "channels_last")
                if layout == "strided":
                    f = f[..., :side]  # h and w strides do not merge
                target = randn(2, C, C)
                for split in (1, None):
                    gram.gram_forward(f, 0.5, tf32, split=split)
                    gram.style_loss_forward(f, target, 0.5, tf32, split=split)
                gram.gram_backward(randn(2, C, C, dtype=dtype), f, 0.5, tf32)
                gram.style_loss_backward(torch.ones(2), f, target, 0.5, tf32)


def run_instance_norm_launchers(full: bool):
    """The branches of kernels/instance_norm.py: dtypes, affine kinds, ReLU, plane sizes (fused
    tile, several rows per tile, split), layouts. Not full: each plane size, layout and affine
    kind in fp32 only."""
    from pyfastviz.kernels import instance_norm as norm

    shapes = ((64, 64, False), (3, 1, False), (32, 7, True), (32, 128, False), (8, 256, True))
    for dtype in DTYPES:
        every_case = full or dtype == torch.float32
        for C, side, channels_last in shapes if every_case else shapes[:1]:
            x = randn(2, C, side, side, dtype=dtype, channels_last=channels_last)
            dy = randn(2, C, side, side, dtype=dtype, channels_last=channels_last)
            affine = ((randn(C), randn(C), True), (None, None, False), (randn(2, C), None, False))
            for weight, bias, relu in affine if every_case else affine[:1]:
                for split in (None, 3):
                    _, mean, rstd = norm.instance_norm_forward(x, weight, bias, 1e-5, relu, split=split)
                    norm.instance_norm_backward(dy, x, weight, bias, mean, rstd, relu, split=split)


def specialisation(launch: Launch):
    """(signature, constexprs, attrs, options) as Triton's launcher derives them for TARGET."""
    backend = make_backend(TARGET)
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, spec, options)
    return signature, constexprs, attrs, options


CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def resource_usage_by_kernel(binary: str) -> dict[str, tuple[int, int]]:
    """{kernel (mangled name): (registers per thread, local-memory bytes per thread)} of every
    kernel in a cubin, or in the fatbin of a shared library such as pyfastviz._C."""
    report = subprocess.run([CUOBJDUMP, "--dump-resource-usage", binary], capture_output=True, text=True,
                            check=True).stdout
    usage, kernel = {}, None
    for line in report.splitlines():
        if line.strip().startswith("Function "):
            kernel = line.strip().removeprefix("Function ").rstrip(":")
        elif "REG:" in line and kernel:
            fields = dict(item.split(":", 1) for item in line.split() if ":" in item and not item.startswith("CONSTANT"))
            usage[kernel] = int(fields["REG"]), int(fields["LOCAL"])
    return usage


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, local-memory bytes per thread) of the cubin's one kernel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        (usage,) = resource_usage_by_kernel(f.name).values()
    return usage


def compile_all(launches: list[Launch]) -> list[Build]:
    """Compile each distinct specialisation once."""
    builds, seen = [], set()
    for launch in launches:
        signature, constexprs, attrs, options = specialisation(launch)
        key = (launch.kernel.fn.__name__, repr(signature), repr(constexprs), repr(attrs), repr(options))
        if key in seen:
            continue
        seen.add(key)
        compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=TARGET,
                                  options=options.__dict__)
        registers, spilled = resource_usage(compiled.asm["cubin"])
        described = ", ".join(f"{launch.kernel.arg_names[index]}={value}" for (index,), value in constexprs.items())
        builds.append(Build(launch.kernel.fn.__name__, f"{described}; warps={options.num_warps} "
                            f"stages={options.num_stages}", registers, spilled, compiled.metadata.shared))
    return builds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 16-bit dtypes on one shape each (CI)")
    parser.add_argument("--json", help="also write the builds to this file")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("run without TRITON_INTERPRET=1: the launchers must pick their GPU tiles")
    from pyfastviz.kernels import gram, instance_norm

    gram.num_sms = instance_norm.num_sms = lambda device: SM_COUNT
    with recorded_launches() as launches:
        run_gram_launchers(full=not args.quick)
        run_instance_norm_launchers(full=not args.quick)
    builds = compile_all(launches)
    for b in builds:
        print(f"{b.kernel:28} regs {b.registers:3}  spilled {b.spilled_bytes:4} B  shared {b.shared_bytes:6} B"
              f"  {b.specialisation}")
    print(f"{len(builds)} kernels compiled for sm_90 from {len(launches)} launches")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(b) for b in builds], f, indent=1)
    over = [b for b in builds if b.spilled_bytes or b.shared_bytes > SM90_SHARED_BYTES]
    for b in over:
        print(f"OVER THE SM's LIMITS: {b}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
