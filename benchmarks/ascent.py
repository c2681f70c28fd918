"""Images by gradient ascent: optimisation steps per second of each technique, and the floor.

Each case runs STEPS steps of one technique on the pretrained default model (EfficientNet-Lite0)
at `size` px and batch `batch`; the floor is STEPS plain forward+backward passes of the model
to the input at the same shape (what any gradient-ascent step must do). Rows: steps/s of the
technique and of the floor, and floor / technique time (1.0 = no overhead beyond the model).
Medians of `repeat` timed calls after one warm-up call; one method at a time.

    python benchmarks/ascent.py [--device cpu|cuda|auto] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make pyfastviz importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyfastviz import class_visualization, deepdream, fooling_images, invert_features, style_transfer  # noqa: E402
from pyfastviz.models import load_model, preprocess_of  # noqa: E402

STEPS = 5
TECHNIQUES = ("classvis", "classvis-fourier", "fool", "invert", "deepdream", "style")
FLOOR = "floor"  # STEPS forward+backward passes of the model to its input


@dataclass(frozen=True)
class AscentCase:
    technique: str
    batch: int
    size: int

    def inputs(self, net, device: str) -> torch.Tensor:
        """(batch, 3, size, size) random pixels in net's input space."""
        gen = torch.Generator().manual_seed(0)
        pixels = torch.rand(self.batch, 3, self.size, self.size, generator=gen)
        return preprocess_of(net, self.size).normalize(pixels).to(device)

    def build(self, net, device: str):
        """STEPS steps of the technique, or of the floor (technique "floor")."""
        preprocess, x = preprocess_of(net, self.size), self.inputs(net, device)
        quiet = dict(progress=False, preprocess=preprocess)
        if self.technique == "classvis":
            return lambda: class_visualization(net, [1] * self.batch, size=self.size, steps=STEPS, seed=0, **quiet)
        if self.technique == "classvis-fourier":
            return lambda: class_visualization(net, [1] * self.batch, size=self.size, steps=STEPS, seed=0,
                                               parameterization="fourier", **quiet)
        if self.technique == "fool":  # a tiny budget: no image succeeds early, every call takes STEPS steps
            return lambda: fooling_images(net, x, 1, epsilon=1e-4, steps=STEPS, **quiet)
        if self.technique == "invert":
            return lambda: invert_features(net, x, "_blocks.2", steps=STEPS, seed=0, **quiet)
        if self.technique == "deepdream":
            return lambda: deepdream(net, x, "_blocks.8", octaves=1, steps_per_octave=STEPS, seed=0, **quiet)
        if self.technique == "style":
            return lambda: style_transfer(net, x, x[:1], steps=STEPS, optimizer="adam", **quiet)

        def floor():
            for _ in range(STEPS):
                leaf = x.detach().requires_grad_(True)
                torch.autograd.grad(net(leaf)[:, 1].sum(), leaf)

        return floor


def ascent_cases(quick: bool) -> list[AscentCase]:
    """The floor, then every technique, per shape. quick: batch 1 at 64 px. Full: batch 1 and 8 at 224 px."""
    shapes = [(1, 64)] if quick else [(1, 224), (8, 224)]
    return [AscentCase(t, batch, size) for batch, size in shapes for t in (FLOOR, *TECHNIQUES)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ascent_rows(device: str, quick: bool, repeat: int = 3) -> list[dict]:
    """One row per technique and shape: median seconds of STEPS steps, against the floor's."""
    net = load_model(device=device).net
    seconds = {}
    for case in ascent_cases(quick):
        fn = case.build(net, device)
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        seconds[case] = statistics.median(times)
    rows = []
    for case, technique_s in seconds.items():
        if case.technique == FLOOR:
            continue
        floor_s = seconds[AscentCase(FLOOR, case.batch, case.size)]
        rows.append({"kind": "ascent", "name": case.technique, "batch": case.batch, "size": case.size,
                     "steps": STEPS, "steps_per_s": STEPS / technique_s, "floor_steps_per_s": STEPS / floor_s,
                     "floor_fraction": floor_s / technique_s})
    return rows


def ascent_table(rows: list[dict]) -> str:
    header = ["technique", "batch", "px", "steps/s", "fwd+bwd floor steps/s", "floor / technique time"]
    body = [[r["name"], str(r["batch"]), str(r["size"]), f"{r['steps_per_s']:.2f}", f"{r['floor_steps_per_s']:.2f}",
             f"{r['floor_fraction']:.2f}"] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(ascent_table(ascent_rows(device, args.quick, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
