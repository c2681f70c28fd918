"""A tiny seeded CNN, its preprocessing and an image folder with bad files, for sweep tests;
run as a script (also under torchrun) it sweeps a folder with them:

    python tests/sweep/tiny_sweep.py DATA OUT [--method M] [--delay S] [--shard-size K] [--target T]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from pyfastviz.models.zoo import Preprocess
from pyfastviz.sweep import sweep

SIZE = 32
PREPROCESS = Preprocess(SIZE)
CLASSES = [f"class{i}" for i in range(5)]


class TinyNet(nn.Module):
    """conv-ReLU-conv-ReLU-pool-linear, 5 classes; `delay` seconds of sleep per forward pass
    (a stand-in for a big model, so a kill can land mid-sweep)."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, len(CLASSES))
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.head(self.features(x))


def make_folder(root: Path, count: int, seed: int = 0) -> list[str]:
    """`count` random images (JPEG/PNG, varied sizes) in nested folders, plus a truncated JPEG,
    an empty file and a text file named .png. Returns the bad files' relative paths."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"part{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(SIZE, 2 * SIZE, size=2)
        image = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        image.save(folder / f"img{i:03d}.{'jpg' if i % 2 else 'png'}")
    jpeg = (root / "part1" / "img001.jpg").read_bytes()
    (root / "part1" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "part2" / "empty.jpg").write_bytes(b"")
    (root / "part0" / "text.png").write_text("not an image")
    return ["part0/text.png", "part1/truncated.jpg", "part2/empty.jpg"]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--method", default="occlusion")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--target", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    options = {"window": 8, "stride": 4} if args.method == "occlusion" else {}
    target = Path(args.target) if args.target and Path(args.target).is_file() else args.target
    summary = sweep(args.data, args.out, method=args.method, model=TinyNet(args.delay), preprocess=PREPROCESS,
                    classes=CLASSES, target=target, shard_size=args.shard_size, batch_size=3, workers=1,
                    progress=False, **options)
    print(summary)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
