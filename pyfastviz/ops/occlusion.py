"""occlusion_batch / occlusion_scatter: the two halves of occlusion saliency around the model.

occlusion_batch writes a chunk of occluded copies of the images straight into a
preallocated batch (one launch per chunk); occlusion_scatter turns each window position's
score drop into a heat map, averaging where windows overlap, as Captum's Occlusion does.
Windows and strides are (channels, rows, cols). Kernels: csrc/; spec: reference.py. The
kernels have no backward: inputs that need gradients go through the (differentiable) reference.
"""

import torch

from pyfastviz import _native
from pyfastviz.ops import reference
from pyfastviz.ops._checks import check_backend, check_float_tensor

BATCH_OP, SCATTER_OP = "occlusion_batch", "occlusion_scatter"


def check_geometry(size, window, stride) -> None:
    """size, window, stride: 3 positive ints each (channels, rows, cols); window within size. Any stride is
    a valid geometry here (past the window it leaves pixels uncovered); occlusion() and the Captum
    adapter add their own rules on it."""
    for name, values in (("size", size), ("window", window), ("stride", stride)):
        if not isinstance(values, (tuple, list, torch.Size)) or len(values) != 3 \
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            raise ValueError(f"{name} must be 3 positive ints (channels, rows, cols), got {values!r}")
    if any(w > s for w, s in zip(window, size)):
        raise ValueError(f"window {tuple(window)} is larger than the image {tuple(size)} (channels, rows, cols)")


def positions(size, window, stride) -> int:
    """Number of window positions."""
    counts = reference.occlusion_counts(size, window, stride)
    return counts[0] * counts[1] * counts[2]


def occlusion_batch(images: torch.Tensor, baseline: torch.Tensor, window, stride, first: int, out: torch.Tensor,
                    *, backend: str = "auto") -> None:
    """Fills out (rows, C, H, W) with occluded copies: row r is image r % N of images (N, C, H, W)
    with window position first + r // N replaced by baseline (N, C, H, W). out: images' dtype and
    device, contiguous or channels_last; images and baseline are made contiguous in out's layout."""
    layout = _check_tensors(images, baseline, out)
    check_geometry(images.shape[1:], window, stride)
    n, rows, total = images.shape[0], out.shape[0], positions(images.shape[1:], window, stride)
    count = rows // n if n else 0
    if count > total:
        raise ValueError(f"out holds {count} copies per image, but there are only {total} window positions")
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= total - count:
        raise ValueError(f"first must be an int in 0..{total - count} (out holds {count} of the {total} window "
                         f"positions), got {first!r}")
    if rows == 0:
        return
    images, baseline = images.contiguous(memory_format=layout), baseline.contiguous(memory_format=layout)
    native = _native.use_native(BATCH_OP, check_backend(backend), out, images, baseline)
    if native and not _needs_grad(images, baseline):
        torch.ops.pyfastviz.occlusion_batch(images, baseline, list(window), list(stride), first, out)
    else:
        out.copy_(reference.occlusion_batch(images, baseline, window, stride, first, count))


def _share_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b are views of one allocated storage (False where storage cannot be read:
    meta and fake tensors, functorch's wrappers)."""
    try:
        pointer = a.untyped_storage().data_ptr()
        return pointer != 0 and pointer == b.untyped_storage().data_ptr()
    except (NotImplementedError, RuntimeError):
        return False


def _check_tensors(images: torch.Tensor, baseline: torch.Tensor, out: torch.Tensor) -> torch.memory_format:
    """images (N, C, H, W), baseline alike, out (a multiple of N rows, C, H, W) of images' dtype and
    device. Returns out's layout."""
    for name, tensor in (("images", images), ("baseline", baseline), ("out", out)):
        check_float_tensor(tensor, name)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    if baseline.shape != images.shape:
        raise ValueError(f"baseline must have the images' shape {tuple(images.shape)}, got {tuple(baseline.shape)}")
    n = images.shape[0]
    whole_copies = out.dim() == 4 and (out.shape[0] % n == 0 if n else out.shape[0] == 0)
    if not whole_copies or out.shape[1:] != images.shape[1:]:
        raise ValueError(f"out must be (rows, {', '.join(map(str, images.shape[1:]))}) with rows a multiple of "
                         f"N = {n}, got {tuple(out.shape)}")
    for name, tensor in (("baseline", baseline), ("out", out)):
        if tensor.dtype != images.dtype:
            raise TypeError(f"{name} must have the images' dtype {images.dtype}, got {tensor.dtype}")
        if tensor.device != images.device:
            raise ValueError(f"{name} must be on the images' device {images.device}, got {tensor.device}")
    if out.requires_grad:
        raise ValueError("out must not require grad: it is a buffer written in place, which autograd would not "
                         "see (pass torch.empty(...))")
    for name, tensor in (("images", images), ("baseline", baseline)):
        if _share_storage(out, tensor):
            raise ValueError(f"out shares memory with {name}: it would be read while being written; pass a "
                             "separate buffer")
    if out.is_contiguous():
        return torch.contiguous_format
    if out.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    raise ValueError("out must be contiguous or channels_last (it is written in place)")


def occlusion_scatter(drops: torch.Tensor, window, stride, size, *, backend: str = "auto") -> torch.Tensor:
    """Score drops (R, P) -> heat maps (R, C, H, W) for images of `size` (C, H, W)."""
    check_float_tensor(drops, "drops")
    check_geometry(size, window, stride)
    if drops.dim() != 2 or drops.shape[1] != positions(size, window, stride):
        raise ValueError(f"drops must be (rows, {positions(size, window, stride)}), got {tuple(drops.shape)}")
    if _native.use_native(SCATTER_OP, check_backend(backend), drops) and not _needs_grad(drops):
        return torch.ops.pyfastviz.occlusion_scatter(drops, list(window), list(stride), list(size))
    return reference.occlusion_scatter(drops, window, stride, size)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _register() -> None:
    @torch.library.register_fake("pyfastviz::occlusion_batch")
    def _(images, baseline, window, stride, first, out):
        return None

    @torch.library.register_fake("pyfastviz::occlusion_scatter")
    def _(drops, window, stride, size):
        return drops.new_empty((drops.shape[0], *size))

    def no_backward(ctx, grad):
        raise NotImplementedError("pyfastviz::occlusion_scatter has no backward; pyfastviz.ops.occlusion_scatter "
                                  "differentiates through its reference when drops requires grad")

    torch.library.register_autograd("pyfastviz::occlusion_scatter", no_backward)


if _native.native_available():
    _register()
