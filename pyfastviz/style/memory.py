"""Peak-memory estimate of optimising an image through a model, and the check made before a run."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyfastviz._inputs import check_choice, check_model
from pyfastviz._state import evaluation_mode
from pyfastviz.style.solver import LBFGS_HISTORY, OPTIMIZERS


def estimate_peak_memory(model: nn.Module, size: int | tuple[int, int], *, batch: int = 1,
                         optimizer: str = "lbfgs", probe_size: int = 64) -> int:
    """Estimated peak bytes of optimising a (batch, 3, H, W) image through `model`.

    Every leaf module's output is measured in one no-grad forward at probe_size and scaled by
    the pixel count: kept for backward plus as much again for gradients, plus the parameters and
    the optimiser's image-sized state (2 * LBFGS_HISTORY + 5 images for L-BFGS, 5 for Adam).
    Grows linearly in H * W.
    """
    fixed, per_pixel = _memory_model(model, batch, optimizer, probe_size)
    height, width = check_size(size)
    return int(fixed + per_pixel * height * width)


def check_memory(model: nn.Module, size: int | tuple[int, int], *, batch: int = 1, optimizer: str = "lbfgs",
                 device: torch.device | str | None = None, available: int | None = None) -> None:
    """Raises MemoryError, naming the largest (H, W) of the same aspect that fits, when the
    estimated peak (parameters included) exceeds `available` bytes. Default: what a CUDA
    `device`, the model's, can still hold plus the parameters already on it (see
    _device_memory); nothing is checked on other devices."""
    check_model(model)
    if available is None:
        device = torch.device(device) if device is not None else None
        if device is None or device.type != "cuda":
            return
        available = _device_memory(device) + _parameter_bytes(model)  # the estimate counts them too
    height, width = check_size(size)
    fixed, per_pixel = _memory_model(model, batch, optimizer, 64)
    needed = int(fixed + per_pixel * height * width)
    if needed <= available:
        return
    scale = math.sqrt(max(available - fixed, 0) / (per_pixel * height * width))
    fits = (math.floor(height * scale), math.floor(width * scale))
    hint = (f"the largest size that fits is about {fits[0]}x{fits[1]}" if min(fits) >= 1
            else "no size fits")
    raise MemoryError(f"a {batch}x3x{height}x{width} image needs about {needed / 2**20:,.0f} MiB but "
                      f"{available / 2**20:,.0f} MiB is available: {hint}; pass smaller images")


def _device_memory(device: torch.device) -> int:
    """Bytes that the CUDA `device` can still hold: its free memory plus what torch's caching
    allocator holds unused. What is allocated already (the model's parameters, say) is not in it."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def _parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters (the fixed part of the estimate)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _memory_model(model, batch, optimizer, probe_size) -> tuple[float, float]:
    """(fixed bytes, bytes per output pixel) of the peak estimate."""
    check_model(model)
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    outputs = []

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with evaluation_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, probe_size, probe_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    image_copies = 2 * LBFGS_HISTORY + 5 if optimizer == "lbfgs" else 5  # + the solver's cached evaluation
    fixed = _parameter_bytes(model)
    per_pixel = batch * (2 * sum(outputs) / probe_size**2 + image_copies * 3 * 4)
    return float(fixed), per_pixel


def check_size(size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be an int or (height, width) of ints >= 1, got {size!r}")
    return int(size[0]), int(size[1])
