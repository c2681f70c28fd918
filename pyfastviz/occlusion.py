"""Occlusion saliency (Zeiler & Fergus 2014): slide a patch over the image, re-run the model
for every patch position, and map how much the target's score drops.

The occluded copies are written chunk by chunk into one preallocated batch by the
occlusion_batch op, and the drops scattered into the map by occlusion_scatter; the map
equals Captum's Occlusion with the same window, stride, baseline and target.
"""

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz import ops
from pyfastviz._inputs import check_choice, check_images, check_model, resolve_targets
from pyfastviz._state import evaluation_mode

SCORES = ("prob", "logit")
FAST_DTYPES = (torch.bfloat16, torch.float16)


def occlusion(model: nn.Module, images: torch.Tensor, target=None, *, window: int | Sequence[int] = 16,
              stride: int | Sequence[int] = 8, baseline=0.0, batch_size: int | None = None, score: str = "prob",
              dtype: torch.dtype | None = None, channels_last: bool = False, return_grid: bool = False,
              progress: bool = True, backend: str = "auto"):
    """Occlusion maps: the drop of the target's score when a window of the image is replaced.

    images: (N, C, H, W) preprocessed. target: None (predicted class), int, N ints, or (N, K)
    ints. window, stride: int or (rows, cols); all channels are occluded together. baseline:
    what fills the window, in the model's input space: a number, C values, a (C, H, W) image
    or (N, C, H, W) images (e.g. blurred copies). score: "prob" (softmax) or "logit".
    batch_size: occluded images per forward pass (default: chosen from free memory).
    Fast path: dtype=torch.bfloat16/float16 runs under autocast; channels_last=True.
    Returns (N, H, W) maps, (N, K, H, W) for K targets; with return_grid also the drop per
    window position, (N, [K,] rows, cols). The model runs in eval mode and is left as found.
    """
    check_model(model)
    check_images(images, model)
    check_choice(score, "score", SCORES)
    if dtype is not None and dtype not in FAST_DTYPES:
        raise ValueError(f"dtype must be None (the images' dtype) or one of {FAST_DTYPES}, got {dtype}")
    size = tuple(images.shape[1:])
    window3 = (size[0], *_pair(window, "window"))
    stride3 = (1, *_pair(stride, "stride"))
    ops.occlusion.check_geometry(size, window3, stride3)
    fill = _baseline(baseline, images)
    with evaluation_mode(model), torch.no_grad():
        forward = _forward(model, images.device.type, dtype)
        scorer = _scorer(score)
        indices, multi = (None, False) if target is None else resolve_targets(target, images.shape[0])
        drops = occlusion_drops(forward, scorer, images, fill, window3, stride3, indices, batch_size,
                                dtype, channels_last, progress, backend)
    n, k, count = drops.shape
    heat = ops.occlusion_scatter(drops.reshape(n * k, count), (1, *window3[1:]), stride3, (1, *size[1:]),
                                 backend=backend).view(n, k, *size[1:])
    grid = drops.view(n, k, *ops.reference.occlusion_counts(size, window3, stride3)[1:])
    heat, grid = (heat, grid) if multi else (heat[:, 0], grid[:, 0])
    return (heat, grid) if return_grid else heat


def occlusion_drops(forward: Callable, scorer: Callable, images: torch.Tensor, fill: torch.Tensor, window, stride,
                    indices: torch.Tensor | None, batch_size: int | None, dtype=None, channels_last=False, progress=False,
                    backend="auto") -> torch.Tensor:
    """The engine: score drop (N, K, P) of each of K targets per image at each window position.

    forward: (B, C, H, W) -> outputs; scorer(outputs, indices (B, K)) -> (B, K) scores.
    indices: (N, K) classes, or None for each image's predicted class (from the same first pass).
    """
    n = images.shape[0]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    work_dtype = dtype or images.dtype
    x = images.to(work_dtype).contiguous(memory_format=layout)
    fill = fill.to(work_dtype).contiguous(memory_format=layout)
    total = ops.occlusion.positions(images.shape[1:], window, stride)
    per_chunk = max(1, min(total, (batch_size or _default_batch(forward, x)) // n))
    chunk = torch.empty((per_chunk * n, *x.shape[1:]), dtype=work_dtype, device=x.device, memory_format=layout)
    outputs = forward(x)
    indices = outputs.argmax(1, keepdim=True) if indices is None else indices.to(x.device)
    _check_targets(outputs, indices)
    initial = scorer(outputs, indices)
    drops = torch.empty((n, indices.shape[1], total), dtype=torch.float32, device=x.device)
    with tqdm(total=total, desc="occlusion", unit="pos", disable=not progress, leave=False) as bar:
        for first in range(0, total, per_chunk):
            count = min(per_chunk, total - first)
            batch = chunk[: count * n]
            ops.occlusion_batch(x, fill, window, stride, first, batch, backend=backend)
            scores = scorer(forward(batch), indices.repeat(count, 1)).view(count, n, -1)
            drops[:, :, first:first + count] = (initial[None] - scores).permute(1, 2, 0)
            bar.update(count)
    return drops


def _forward(model: nn.Module, device_type: str, dtype) -> Callable:
    def forward(x):
        with torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext():
            return model(x)
    return forward


def _scorer(score: str) -> Callable:
    def scorer(outputs, indices):
        outputs = outputs.float()
        return (outputs.softmax(1) if score == "prob" else outputs).gather(1, indices)
    return scorer


def _check_targets(outputs: torch.Tensor, indices: torch.Tensor) -> None:
    if outputs.dim() != 2:
        raise ValueError(f"target= needs a model that returns (N, classes) outputs, got shape {tuple(outputs.shape)}")
    if indices.max() >= outputs.shape[1]:
        raise ValueError(f"target {indices.max().item()} is out of range: the model has {outputs.shape[1]} classes")


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or (rows, cols) of positive ints, got {value!r}")
    return pair


def _baseline(baseline, images: torch.Tensor) -> torch.Tensor:
    """The fill as (N, C, H, W), from a number, C values, a (C, H, W) or an (N, C, H, W) tensor."""
    fill = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    if fill.dim() == 1:
        fill = fill[:, None, None]
    try:
        fill = fill.expand_as(images)
    except RuntimeError:
        raise ValueError(f"baseline must be a number, {images.shape[1]} channel values, a (C, H, W) or an "
                         f"(N, C, H, W) tensor matching images {tuple(images.shape)}, got shape {tuple(fill.shape)}") from None
    if not torch.isfinite(fill).all():
        raise ValueError("baseline contains NaN or infinite values")
    return fill


def _default_batch(forward: Callable, x: torch.Tensor) -> int:
    """Occluded images per forward pass: 64 on the CPU; on a GPU what half its free memory holds,
    from the peak memory of a probe forward of 8 images."""
    if not x.is_cuda:
        return 64
    probe = x[:1].repeat(8, 1, 1, 1)
    torch.cuda.synchronize(x.device)
    before = torch.cuda.memory_allocated(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    forward(probe)
    per_image = max(1, (torch.cuda.max_memory_allocated(x.device) - before) // 8)
    free, _ = torch.cuda.mem_get_info(x.device)
    return int(max(8, min(4096, free // 2 // per_image)))
