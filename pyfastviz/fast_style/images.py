"""Training images: the content sampler (random crops and flips, a function of (seed, step)) and
style images, as float RGB tensors in pytorch/examples' [0, 255] pixel convention."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from pyfastviz._fingerprints import lines_sha256, tensors_sha256
from pyfastviz.data import ImageFolder
from pyfastviz.models import load_image, sample_image
from pyfastviz.models.images import to_rgb

# The colour photos among pyfastviz.models.SAMPLE_IMAGES: the default content images.
SAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower")
MIN_CROP = 0.5  # crops cover between half and all of an image's shorter side
PIXEL_TOLERANCE = 1e-3  # how far outside [0, 1] a style tensor's pixels may stray (then clamped)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (any mode, made RGB as pyfastviz.models.images.to_rgb does) -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def resize_shorter(image: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 3, H, W) float -> the same with the shorter side resized to `side` (bilinear, antialiased)."""
    scale = side / min(image.shape[2:])
    size = [max(side, round(s * scale)) for s in image.shape[2:]]
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def style_tensor(image, size: int, name: str = "style_images") -> torch.Tensor:
    """A style image (PIL image, path, or (3, H, W) / (1, 3, H, W) tensor in [0, 1]) -> (1, 3, h, w)
    float in [0, 1], shorter side resized to `size`."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        x = pil_to_tensor(image)[None].float() / 255
    elif isinstance(image, torch.Tensor):
        x = unit_pixels(image, name)
    else:
        raise TypeError(f"{name} must hold PIL images, paths or (3, H, W) tensors, got {type(image).__name__}")
    return resize_shorter(x, size).clamp(0, 1)


def unit_pixels(image: torch.Tensor, name: str) -> torch.Tensor:
    """A float (3, H, W) or (1, 3, H, W) tensor of pixels in [0, 1] -> (1, 3, H, W) float32 on
    the CPU. Values beyond [0, 1] by more than PIXEL_TOLERANCE (e.g. [0, 255] pixels) raise a
    ValueError naming `name`; smaller excursions (rounding) are clamped."""
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point() or not x.numel():
        raise ValueError(f"{name}: a tensor must be a float (3, H, W) or (1, 3, H, W) image in [0, 1], "
                         f"got {x.dtype} of shape {tuple(image.shape)}")
    check_pixel_range(x, name)
    return x.detach().float().cpu().clamp(0, 1)


def check_pixel_range(x: torch.Tensor, name: str) -> None:
    """A ValueError naming `name` when x holds NaN/inf, or values beyond [0, 1] by more than
    PIXEL_TOLERANCE (e.g. [0, 255] pixels)."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: the tensor contains NaN or infinite values")
    low, high = torch.stack(torch.aminmax(x)).tolist()  # one pass, one sync
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        hint = " (divide [0, 255] pixels by 255)" if high > 1 + PIXEL_TOLERANCE else ""
        raise ValueError(f"{name}: a tensor must hold pixels in [0, 1], got values in [{low:.4g}, {high:.4g}]{hint}")


class ContentSampler:
    """Batches of square content crops, a function of (seed, step) only (so runs resume exactly).

    images: None (the bundled SAMPLE_PHOTOS), a folder path or pyfastviz.data.ImageFolder (files
    read when drawn), or a non-empty list of PIL images and/or paths (each path opened once here:
    a missing or unreadable one is a ValueError naming it). Each crop: a random image,
    a random square of MIN_CROP..1 of its shorter side, resized to size x size, flipped
    left-right with probability 1/2. progress: a bar while a folder's or list's files are checked.
    """

    def __init__(self, images, size: int, seed: int, progress: bool = False):
        if images is None:
            images = [sample_image(name) for name in SAMPLE_PHOTOS]
        elif isinstance(images, (str, os.PathLike)):
            if not Path(images).is_dir():
                raise ValueError(f"content_images={str(images)!r} is not a folder")
            images = ImageFolder(images, progress=progress)
        checked = isinstance(images, ImageFolder)  # its files were opened when it was built
        if checked:
            if not images.paths:
                raise ValueError(f"content_images={str(images.root)!r} holds no readable image files")
            images = list(images.paths)
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("content_images must be None, a folder, or a non-empty list of PIL images or paths, "
                             f"got {images if isinstance(images, (list, tuple)) else type(images).__name__!r}")
        for item in images:
            if not isinstance(item, (Image.Image, str, os.PathLike)):
                raise TypeError(f"content_images must hold PIL images or paths, got {type(item).__name__}")
        self.sources = [pil_to_tensor(item) if isinstance(item, Image.Image) else Path(item) for item in images]
        if not checked:
            paths = [source for source in self.sources if isinstance(source, Path)]
            for path in tqdm(paths, desc="checking images", disable=not (progress and paths), leave=False):
                _check_readable(path)
        self.size, self.seed = size, seed

    def __len__(self) -> int:
        return len(self.sources)

    def fingerprint(self) -> str:
        """sha256 hex of the content images: each file's name and size, each given image's pixels
        (a resumed run must draw from the same images)."""
        return lines_sha256(f"{source.name}\t{source.stat().st_size}" if isinstance(source, Path)
                            else tensors_sha256([("", source)]) for source in self.sources)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """(batch_size, 3, size, size) float32 pixels in [0, 255] for training step `step`."""
        rng = np.random.default_rng((self.seed, step))  # SeedSequence: well-mixed, no (seed, step) overlaps
        crops = []
        for _ in range(batch_size):
            source = self.sources[int(rng.integers(len(self.sources)))]
            image = source if isinstance(source, torch.Tensor) else pil_to_tensor(load_image(source))
            height, width = image.shape[1:]
            side = max(1, round(min(height, width) * rng.uniform(MIN_CROP, 1)))
            top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
            crop = image[None, :, top:top + side, left:left + side].float()
            crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                 align_corners=False)
            if rng.random() < 0.5:
                crop = crop.flip(3)
            crops.append(crop.clamp(0, 255))
        return torch.cat(crops)


def _check_readable(path: Path) -> None:
    """A ValueError naming content_images and path unless path opens as an image."""
    try:
        load_image(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"content_images: {err}") from None
