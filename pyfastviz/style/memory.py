"""Peak-memory estimate of optimising an image through a model, and the check made before a run."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from pyfastviz._inputs import check_choice, check_model, input_dtype
from pyfastviz._state import evaluation_mode
from pyfastviz.models.layers import run_eagerly
from pyfastviz.style.solver import LBFGS_HISTORY, OPTIMIZERS

PROBE_SIDE = 64  # the largest probe input side: larger ones only cost time


def estimate_peak_memory(model: nn.Module, size: int | tuple[int, int], *, batch: int = 1,
                         optimizer: str = "lbfgs", probe_size: int | tuple[int, int] | None = None) -> int:
    """Estimated peak bytes of optimising a (batch, 3, H, W) image through `model`.

    Every leaf module's output is measured in one no-grad forward of a zero (1, 3, *probe_size)
    image in the model's dtype (default probe: (min(H, 64), min(W, 64)), so a model that takes
    one input size works at it) and scaled by the pixel count: kept for backward plus as much
    again for gradients, plus the parameters and the optimiser's image-sized state
    (2 * LBFGS_HISTORY + 5 images for L-BFGS, 5 for Adam, in the solver's float32 or float64).
    Grows linearly in H * W.
    """
    height, width = check_size(size)
    _check_run(model, batch, optimizer)
    probe = probe_shape(height, width) if probe_size is None else check_size(probe_size)
    fixed, per_pixel = _memory_model(model, batch, optimizer, probe)
    return int(fixed + per_pixel * height * width)


def check_memory(model: nn.Module, size: int | tuple[int, int], *, batch: int = 1, optimizer: str = "lbfgs",
                 device: torch.device | str | None = None, available: int | None = None) -> None:
    """Raises MemoryError, naming the largest (H, W) of the same aspect that fits, when the
    estimated peak (parameters included) exceeds `available` bytes. Default: what a CUDA
    `device`, the model's, can still hold plus the parameters already on it (see
    _device_memory); nothing is checked on other devices. A model that fails on the probe
    input (see estimate_peak_memory) gets a RuntimeWarning and no check."""
    height, width = check_size(size)
    _check_run(model, batch, optimizer)
    if available is None:
        device = torch.device(device) if device is not None else None
        if device is None or device.type != "cuda":
            return
        available = _device_memory(device) + _parameter_bytes(model)  # the estimate counts them too
    probe = probe_shape(height, width)
    try:
        fixed, per_pixel = _memory_model(model, batch, optimizer, probe)
    except Exception as error:  # the model's own forward, e.g. one sized for another input
        warnings.warn(f"memory check skipped: the model failed on a {probe[0]}x{probe[1]} probe image ({error})",
                      RuntimeWarning, stacklevel=2)
        return
    needed = int(fixed + per_pixel * height * width)
    if needed <= available:
        return
    scale = math.sqrt(max(available - fixed, 0) / (per_pixel * height * width))
    fits = (math.floor(height * scale), math.floor(width * scale))
    hint = (f"the largest size that fits is about {fits[0]}x{fits[1]}" if min(fits) >= 1
            else "no size fits")
    raise MemoryError(f"a {batch}x3x{height}x{width} image needs about {needed / 2**20:,.0f} MiB but "
                      f"{available / 2**20:,.0f} MiB is available: {hint}; pass smaller images")


def probe_shape(height: int, width: int) -> tuple[int, int]:
    """(H, W) of the probe input for an (height, width) image: each side at most PROBE_SIDE."""
    return min(height, PROBE_SIDE), min(width, PROBE_SIDE)


def _device_memory(device: torch.device) -> int:
    """Bytes that the CUDA `device` can still hold: its free memory plus what torch's caching
    allocator holds unused. What is allocated already (the model's parameters, say) is not in it."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def _parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters (the fixed part of the estimate)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _check_run(model, batch, optimizer) -> None:
    check_model(model)
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")


def _memory_model(model, batch, optimizer, probe: tuple[int, int]) -> tuple[float, float]:
    """(fixed bytes, bytes per output pixel) of the peak estimate, from a forward at probe (H, W)."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = input_dtype(model)
    outputs = []

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with evaluation_mode(model), torch.no_grad(), run_eagerly(model):
            model(torch.zeros(1, 3, *probe, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    image_copies = 2 * LBFGS_HISTORY + 5 if optimizer == "lbfgs" else 5  # + the solver's cached evaluation
    pixel_bytes = 3 * torch.promote_types(dtype, torch.float32).itemsize  # the solver's master copy (solver.py)
    fixed = _parameter_bytes(model)
    per_pixel = batch * (2 * sum(outputs) / (probe[0] * probe[1]) + image_copies * pixel_bytes)
    return float(fixed), per_pixel


def check_size(size) -> tuple[int, int]:
    """size (an int side, or (height, width)) as (height, width) ints >= 1; a ValueError naming the value given."""
    given = size
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be an int or (height, width) of ints >= 1, got {given!r}")
    return int(size[0]), int(size[1])
