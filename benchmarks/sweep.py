"""Sweep throughput: images/s of an occlusion and a gradient sweep over a folder of JPEG photos,
and the share of the shard loop spent outside the model (reading, decoding, waiting, writing).

    python benchmarks/sweep.py [--device cpu|cuda|auto] [--images N] [--window PX --stride PX] [--json PATH]

Images: skimage/sklearn sample photos, randomly cropped and resized to 320-480 px, saved as
JPEG (decoded and preprocessed in DataLoader workers while the model computes). "model" is
the time in the per-batch compute step (forward pass for the prediction, the method's
forward/backward passes, map statistics, and the copy of the maps to the CPU); "outside" is
1 - model / loop time, loop time running from the first batch requested to the last shard
written. A warm-up sweep of a few images runs first (not timed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make pyfastviz importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyfastviz.models import SAMPLE_IMAGES, load_model, sample_image  # noqa: E402
from pyfastviz.sweep import sweep  # noqa: E402


def make_photos(folder: Path, count: int, seed: int = 0) -> None:
    """`count` JPEGs: random crops of the sample photos, resized to 320-480 px on the long side."""
    rng = np.random.default_rng(seed)
    photos = [sample_image(name) for name in SAMPLE_IMAGES]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = int(photo.width * rng.uniform(0.6, 1)), int(photo.height * rng.uniform(0.6, 1))
        left, top = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        side = int(rng.integers(320, 481))
        crop = photo.crop((left, top, left + w, top + h))
        crop.resize((side, max(1, round(side * h / w)))).save(folder / f"{i:05d}.jpg", quality=90)


def sweep_rows(device: str, n_images: int, methods=("occlusion", "gradient"), *, model="efficientnet_lite0",
               window: int = 32, stride: int = 32, batch_size: int = 16, shard_size: int = 64,
               workers: int | None = None, warmup: bool = True, progress: bool = False) -> list[dict]:
    """One row per method: images, images/s of the shard loop, model and outside fractions."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(model, device=device) if isinstance(model, str) else model
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_photos(tmp / "photos", n_images)
        if warmup:
            make_photos(tmp / "warmup", min(n_images, batch_size), seed=1)
        for method in methods:
            options = {"window": window, "stride": stride} if method == "occlusion" else {}
            common = dict(method=method, model=loaded, batch_size=batch_size, shard_size=shard_size, workers=workers,
                          **options)
            if warmup:
                sweep(tmp / "warmup", tmp / f"warmup-{method}", progress=False, **common)
            summary = sweep(tmp / "photos", tmp / f"out-{method}", progress=progress, **common)
            model_share = summary.compute_seconds / summary.loop_seconds
            rows.append({"method": method + (f" {window}/{stride}" if options else ""), "device": device,
                         "model": loaded.name, "images": summary.images, "batch": batch_size,
                         "workers": "auto" if workers is None else workers, "loop_s": round(summary.loop_seconds, 3),
                         "images_per_s": summary.images / summary.loop_seconds, "model_fraction": model_share,
                         "outside_fraction": 1 - model_share})
    return rows


def sweep_table(rows: list[dict]) -> str:
    """Markdown table of sweep_rows."""
    lines = ["| method | device | model | images | batch | workers | loop s | images/s | outside model |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['device']} | {r['model']} | {r['images']} | {r['batch']} | {r['workers']} | "
              f"{r['loop_s']:.1f} | {r['images_per_s']:.1f} | {100 * r['outside_fraction']:.1f}% |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--methods", nargs="+", default=["occlusion", "gradient"])
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, help="decoding processes (default: sweep's)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = sweep_rows(args.device, args.images, args.methods, window=args.window, stride=args.stride,
                      batch_size=args.batch_size, workers=args.workers, progress=True)
    print(sweep_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
