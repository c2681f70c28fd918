"""Decoding in DataLoader worker processes, so it overlaps the model; a bad file becomes an
error record, never an exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pyfastviz.models import load_image


class SweepImages(Dataset):
    """Item i: (i, preprocess(image i) -> tensor (C, H, W), None), or (i, None, reason) for a file
    that is missing, empty, truncated or not an image, on which preprocess fails or gives no
    floating-point tensor, NaN or inf, or another size than `size` (None: any)."""

    def __init__(self, base: Path, paths: list[str], preprocess: Callable, size: tuple[int, ...] | None = None):
        self.base, self.paths, self.preprocess, self.size = base, paths, preprocess, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.base / self.paths[i]
        try:
            if path.stat().st_size == 0:
                raise ValueError("empty file (0 bytes)")
            image = load_image(path)
        except (OSError, ValueError) as err:
            return i, None, str(err)
        try:
            x = self.preprocess(image)
        except Exception as err:  # noqa: BLE001 - the user's preprocess failing on one image skips that image
            return i, None, f"preprocess failed on it: {type(err).__name__}: {err}"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return i, None, (f"preprocess returned {type(x).__name__}"
                             f"{' of ' + str(x.dtype) if isinstance(x, torch.Tensor) else ''}, not a floating-point "
                             "(C, H, W) tensor")
        if not torch.isfinite(x).all():
            return i, None, "preprocess gave it NaN or inf values"
        if self.size is not None and tuple(x.shape) != self.size:
            return i, None, (f"preprocess gave it size {tuple(x.shape)}, not {self.size} as for the first image: "
                             "it must return one size (e.g. add a CenterCrop)")
        return i, x, None


def collate(items) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """-> (positions of the readable images, their batch (B, C, H, W) or None, [(position, reason)])."""
    good = [(i, x) for i, x, reason in items if reason is None]
    batch = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], batch, [(i, reason) for i, _, reason in items if reason is not None]


def batch_loader(dataset: SweepImages, batches: list[list[int]], workers: int, pin_memory: bool) -> DataLoader:
    """Batches of the given positions, in the given order, decoded by `workers` processes (0: inline)."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None)
