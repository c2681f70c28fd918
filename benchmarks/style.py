"""Style transfer (Gatys et al.): one optimisation iteration with pyfastviz's Gram ops against
the same iteration on the pure-PyTorch reference, and the peak memory of a large output.

    python benchmarks/style.py [--device cpu|cuda|auto] [--quick] [--repeat N] [--large]

"iteration" rows: one Gatys iteration on VGG19 (random weights: fine for speed), batch 1: a
forward pass through the style and content taps, content + style + TV loss, the backward pass
to the image and an Adam step. "pyfastviz": StyleTargets(backend="auto") (the Triton fused
style loss on CUDA); "reference": StyleTargets(backend="reference") (reference.gram_style_loss,
F @ F^T in PyTorch). Everything else is the same code. 512 px on CUDA; --quick or the CPU: 64 px.
Median ms over rounds that run both in turn; speedup = reference / pyfastviz.
"large" row (CUDA, --large): style_transfer at 2048 px on VGG19, 2 L-BFGS steps, with its peak
allocated memory (torch.cuda.max_memory_allocated) against estimate_peak_memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import markdown, medians, sample_times, synchronize  # noqa: E402
from pyfastviz.models import Preprocess  # noqa: E402
from pyfastviz.style import (StyleTargets, default_layers, estimate_peak_memory, extract_features,  # noqa: E402
                             style_transfer, total_variation)

LARGE_SIDE = 2048
WEIGHTS = {"content": 1.0, "style": 10.0, "tv": 1e-3}  # style_transfer's defaults


def vgg19(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).requires_grad_(False).eval().to(device)


def images(size: int, device: str, count: int = 2) -> list[torch.Tensor]:
    """`count` random (1, 3, size, size) images in the model's normalised input space."""
    gen = torch.Generator().manual_seed(0)
    return [Preprocess(size).normalize(torch.rand(1, 3, size, size, generator=gen)).to(device) for _ in range(count)]


def iteration_fn(model, targets: StyleTargets, content: torch.Tensor, content_layer: str):
    """A no-argument callable running one Gatys iteration (see the module doc) on its own image."""
    with torch.no_grad():
        content_features = extract_features(model, content, [content_layer])[content_layer]
    layers = [*targets.layers, content_layer]
    layer_weights = dict.fromkeys(targets.layers, 1 / len(targets.layers))
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=0.01)

    def iteration():
        features = extract_features(model, image, layers)
        loss = (WEIGHTS["content"] * (features[content_layer] - content_features).pow(2).mean()
                + WEIGHTS["style"] * targets.loss(features, layer_weights).sum()
                + WEIGHTS["tv"] * total_variation(image).sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return iteration


def iteration_rows(device: str, quick: bool, repeat: int = 5, model=None) -> list[dict]:
    """One row: median ms of a Gatys iteration, reference vs pyfastviz."""
    size = 64 if quick or device != "cuda" else 512
    model = model if model is not None else vgg19(device)
    layers = default_layers(model)
    content, style = images(size, device)
    steps = {backend_name: iteration_fn(model, StyleTargets(model, style, backend=backend), content, layers.content)
             for backend_name, backend in (("reference", "reference"), ("pyfastviz", "auto"))}
    ms = medians(sample_times(steps, device, warmup=2, repeat=repeat))
    return [{"kind": "style", "name": "gatys iteration", "model": "vgg19", "size": size, "device": device,
             "reference_ms": ms["reference"], "pyfastviz_ms": ms["pyfastviz"],
             "speedup": ms["reference"] / ms["pyfastviz"]}]


def large_row(device: str, model=None, side: int = LARGE_SIDE, steps: int = 2) -> dict:
    """style_transfer at side x side px on VGG19 (CUDA): seconds per L-BFGS step and peak memory
    against the estimate made before the run."""
    model = model if model is not None else vgg19(device)
    content, style = images(side, device)
    estimate = estimate_peak_memory(model, side)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    style_transfer(model, content, style, steps=steps, progress=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"kind": "style", "name": "style_transfer large", "model": "vgg19", "size": side, "device": device,
            "steps": steps, "s_per_step": seconds / steps, "peak_GiB": torch.cuda.max_memory_allocated() / 2**30,
            "estimate_GiB": estimate / 2**30}


def style_table(rows: list[dict]) -> str:
    """Markdown table of iteration_rows (and large_row)."""
    head = ["style transfer", "model", "px", "device", "reference ms", "pyfastviz ms", "speedup", "peak / estimate"]
    body = []
    for r in rows:
        if r["name"] == "gatys iteration":
            body.append([r["name"], r["model"], str(r["size"]), r["device"], f"{r['reference_ms']:.1f}",
                         f"{r['pyfastviz_ms']:.1f}", f"{r['speedup']:.2f}x", ""])
        else:
            body.append([f"{r['name']} ({r['steps']} L-BFGS steps)", r["model"], str(r["size"]), r["device"], "",
                         f"{1000 * r['s_per_step']:.0f} per step", "",
                         f"{r['peak_GiB']:.1f} GiB / {r['estimate_GiB']:.1f} GiB"])
    return markdown(head, body)


def style_rows(device: str, quick: bool, repeat: int = 5, large: bool = False) -> list[dict]:
    """iteration_rows, then large_row when large and on CUDA (one VGG19 for both)."""
    model = vgg19(device)
    rows = iteration_rows(device, quick, repeat, model)
    if large and device == "cuda":
        rows.append(large_row(device, model))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--large", action="store_true", help=f"also the {LARGE_SIDE} px run (CUDA)")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(style_table(style_rows(device, args.quick, args.repeat, args.large)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
