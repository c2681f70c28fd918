"""Images in and out: load files and sample photos as RGB PIL images, turn tensors and
maps back into PIL images, grids and overlays, and save PNGs atomically."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision.transforms.functional import gaussian_blur

from pyfastviz._files import write_atomic

SAMPLE_IMAGES = (
    "chelsea", "coffee", "astronaut", "rocket",  # skimage.data photos
    "grass", "brick", "gravel",  # skimage.data grayscale textures
    "china", "flower",  # sklearn.datasets.load_sample_image
)

_WHITE = (255, 255, 255)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = _WHITE) -> Image.Image:
    """Any PIL mode -> RGB: transparency composited on `background`; 16/32-bit and float grayscale
    rescaled to 8 bits (see _to_8bit_scale)."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        a = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(_to_8bit_scale(a, image.mode) + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "La":  # premultiplied: PIL converts it to nothing but LA
        image = image.convert("LA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, tuple(background) + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit_scale(a: np.ndarray, mode: str) -> np.ndarray:
    """Grayscale values of a PIL "I*" or "F" image -> floats on the 0-255 scale, by the range the
    values fit: 16-bit modes from [0, 65535]; floats within [0, 1] from it; 32-bit integers or
    floats within [0, 255] as they are (8-bit data in a wide type), integers within [0, 65535]
    from it; anything else from its own [min, max]."""
    low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and 255 < high <= 65535 and low >= 0):
        return a * (255.0 / 65535.0)
    if mode == "F" and 0 <= low and high <= 1:
        return a * 255.0
    if 0 <= low and high <= 255:
        return a
    return (a - low) * (255.0 / (high - low))  # high > low: the values fall outside every range above


def to_unit_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (any mode) -> float tensor (3, H, W) of its RGB pixels in [0, 1]."""
    return torch.from_numpy(np.asarray(to_rgb(image), dtype=np.float32) / 255.0).permute(2, 0, 1)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read any image file PIL can open (any mode, any size; EXIF rotation applied) as RGB.
    path: str, bytes or os.PathLike."""
    path = Path(os.fsdecode(path))
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable image ({err})") from err


def sample_image(name: str) -> Image.Image:
    """A real photo that ships with scikit-image or scikit-learn, as RGB; see SAMPLE_IMAGES."""
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; known: {', '.join(SAMPLE_IMAGES)}")
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
    return Image.fromarray(array).convert("RGB")


def load_batch(paths_or_images: Sequence[str | os.PathLike | Image.Image], preprocess) -> torch.Tensor:
    """Files and/or PIL images -> model input (N, 3, S, S) via `preprocess` (a zoo.Preprocess)."""
    if isinstance(paths_or_images, (str, os.PathLike, Image.Image)):
        raise TypeError(f"load_batch takes a list of files or PIL images, got one {type(paths_or_images).__name__}; "
                        "wrap it in a list")
    images = [item if isinstance(item, Image.Image) else load_image(item) for item in paths_or_images]
    return preprocess.batch(images)


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) float tensor with values in [0, 1] (clamped) -> RGB PIL image."""
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"to_pil expects a (3, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"to_pil expects a float tensor in [0, 1], got {x.dtype} (0-255 pixels: divide by 255)")
    _check_finite(x, "image")
    array = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def tensor_to_pils(x: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) tensor in [0, 1] -> N RGB PIL images."""
    if x.dim() != 4:
        raise ValueError(f"tensor_to_pils expects an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
    return [to_pil(image) for image in x]


def image_grid(
    images: Sequence[Image.Image],
    ncols: int | None = None,
    pad: int = 2,
    background: tuple[int, int, int] = _WHITE,
) -> Image.Image:
    """Tile images row by row (default ncols: ceil(sqrt(N))) in cells the size of the
    largest one, each centred, with `pad` pixels between and around cells."""
    images = None if isinstance(images, torch.Tensor) else list(images)  # any iterable of PIL images
    if images is None or not all(isinstance(image, Image.Image) for image in images):
        raise TypeError("image_grid takes PIL images (tensors: tensor_to_pils(x) first)")
    if not images:
        raise ValueError("image_grid needs at least one image")
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"image_grid needs ncols >= 1 (or None), got {ncols!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"image_grid needs pad, an int >= 0, got {pad!r}")
    if not (isinstance(background, (tuple, list)) and len(background) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in background)):
        raise ValueError(f"image_grid needs background, an (R, G, B) of ints in 0..255, got {background!r}")
    ncols = min(ncols or math.ceil(math.sqrt(len(images))), len(images))
    nrows = math.ceil(len(images) / ncols)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    grid = Image.new("RGB", (ncols * (cell_w + pad) + pad, nrows * (cell_h + pad) + pad), background)
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        x = pad + col * (cell_w + pad) + (cell_w - image.width) // 2
        y = pad + row * (cell_h + pad) + (cell_h - image.height) // 2
        grid.paste(to_rgb(image, background), (x, y))
    return grid


def _check_finite(x: torch.Tensor, name: str) -> None:
    """A ValueError when x holds NaN or inf: one such value would blank a whole picture."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"the {name} has {bad} NaN or inf value(s) of {x.numel()}; clean it first "
                         "(e.g. torch.nan_to_num)")


def normalize_map(m: torch.Tensor) -> torch.Tensor:
    """(H, W) finite map (a tensor or numpy array) -> float (H, W) min-max scaled to [0, 1]; a
    constant map gives zeros."""
    m = _as_map(m)
    _check_finite(m, "map")
    m = m.detach().float()
    low, high = m.min(), m.max()
    if high <= low:
        return torch.zeros_like(m)
    return (m - low) / (high - low)


# Fallback colormaps when matplotlib is missing: evenly spaced anchors, linearly interpolated.
_FALLBACK_CMAPS = {
    "inferno": [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)],
    "jet": [(0, 0, 128), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (128, 0, 0)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}


def _colorize(m01: np.ndarray, cmap: str) -> np.ndarray:
    """(H, W) float array in [0, 1] -> (H, W, 3) uint8 colours from colormap `cmap`."""
    try:
        import matplotlib
    except ImportError:
        if cmap not in _FALLBACK_CMAPS:
            raise ValueError(
                f"colormap {cmap!r} needs matplotlib; without it use one of {sorted(_FALLBACK_CMAPS)}"
            ) from None
        anchors = np.asarray(_FALLBACK_CMAPS[cmap], dtype=np.float64)
        stops = np.linspace(0, 1, len(anchors))
        rgb = np.stack([np.interp(m01, stops, anchors[:, c]) for c in range(3)], axis=-1)
        return (rgb + 0.5).astype(np.uint8)
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}") from None
    return (colormap(m01)[..., :3] * 255 + 0.5).astype(np.uint8)


def map_to_pil(m: torch.Tensor, cmap: str = "inferno") -> Image.Image:
    """(H, W) map -> RGB PIL image, min-max normalised then coloured with `cmap`."""
    return Image.fromarray(_colorize(normalize_map(m).cpu().numpy(), cmap))


def gradient_to_pil(g: torch.Tensor, percentile: float = 99.0) -> Image.Image:
    """(3, H, W) gradient -> RGB PIL image: 0 maps to grey 0.5, the `percentile` of |g|
    maps to 0.5 away from grey, beyond that is clamped."""
    if g.dim() != 3 or g.shape[0] != 3:
        raise ValueError(f"gradient_to_pil expects a (3, H, W) tensor, got shape {tuple(g.shape)}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    _check_finite(g, "gradient")
    g = g.detach().float()
    magnitude = g.abs().flatten()
    k = max(1, math.ceil(percentile / 100 * magnitude.numel()))
    scale = magnitude.kthvalue(k).values
    if scale <= 0:
        return to_pil(torch.full_like(g, 0.5))
    return to_pil(0.5 + 0.5 * g / scale)


def heatmap_overlay(image: Image.Image, heat: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend the coloured (h, w) heat map, bilinearly resized to the image size, over the image:
    (1 - alpha) * image + alpha * colours. Returns an RGB image of the image's size. A map of
    another aspect ratio than the image (a centre crop's map over the whole photo) is warned
    about: overlay it on the crop the model saw, to_pil(preprocess.denormalize(x))."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = normalize_map(heat)
    if abs(heat.shape[1] * image.height - heat.shape[0] * image.width) > 0.02 * heat.shape[0] * image.width:
        warnings.warn(f"the {heat.shape[0]}x{heat.shape[1]} map is stretched over a {image.height}x{image.width} "
                      "image of another aspect ratio: overlay it on the crop the model saw, "
                      "to_pil(preprocess.denormalize(x))", RuntimeWarning, stacklevel=2)
    resized = F.interpolate(heat[None, None], size=(image.height, image.width), mode="bilinear", align_corners=False)
    colours = Image.fromarray(_colorize(resized[0, 0].clamp(0, 1).cpu().numpy(), cmap))
    return Image.blend(to_rgb(image), colours, alpha)


def _as_map(m) -> torch.Tensor:
    """m as a non-empty (H, W) tensor (numpy arrays too); a clear error otherwise."""
    if isinstance(m, np.ndarray):
        m = torch.from_numpy(m)
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"a map must be an (H, W) tensor or numpy array, got {type(m).__name__}")
    if m.dim() != 2 or m.numel() == 0:
        raise ValueError(f"expected a non-empty (H, W) map, got shape {tuple(m.shape)}")
    return m


def _clip(m: torch.Tensor, percentile: float) -> torch.Tensor:
    """The map capped at its `percentile`: else a few extreme pixels take the whole colour range."""
    m = _as_map(m)
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}")
    _check_finite(m, "map")
    m = m.detach().float()
    return m.clamp(max=torch.quantile(m.flatten(), percentile / 100))


def saliency_to_pil(m: torch.Tensor, percentile: float = 99.0) -> Image.Image:
    """(H, W) saliency map -> grey image, white from its `percentile` up."""
    return map_to_pil(_clip(m, percentile), cmap="gray")


def saliency_overlay(photo: Image.Image, m: torch.Tensor, percentile: float = 99.0, sigma: float = 3.0) -> Image.Image:
    """The saliency map, capped at its `percentile` and Gaussian-blurred (`sigma` pixels; 0: not
    blurred), over the photo."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < math.inf:
        raise ValueError(f"sigma must be a finite number >= 0 (pixels; 0: no blur), got {sigma!r}")
    capped = _clip(m, percentile)
    kernel = min(2 * round(3 * sigma) + 1, 2 * min(m.shape[-2:]) - 1)  # reflect padding: narrower than the map
    if kernel == 1:  # sigma 0 (or too small to blur)
        return heatmap_overlay(photo, capped)
    return heatmap_overlay(photo, gaussian_blur(capped[None], kernel_size=kernel, sigma=sigma)[0])


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write `image` as PNG at `path`, creating parent folders, atomically (see
    pyfastviz._files.write_atomic: a failed write leaves nothing behind)."""
    return write_atomic(path, lambda file: image.save(file, format="PNG"))