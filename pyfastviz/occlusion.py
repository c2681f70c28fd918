"""Occlusion saliency (Zeiler & Fergus 2014): slide a patch over the image, re-run the model
for every patch position, and map how much the target's score drops.

The occluded copies are written chunk by chunk into one preallocated batch by the
occlusion_batch op, and the drops scattered into the map by occlusion_scatter; the map
equals Captum's Occlusion with the same window, stride, baseline and target.

Opt-in, the repeated chunk forward runs torch.compile'd and/or replays a CUDA graph: then
every forward has the same shape (the last chunk padded), so there is one compile and one
capture per (model, shape, dtype, layout).
"""

import numbers
import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz import ops
from pyfastviz._inputs import check_choice, check_images, check_logits, check_model, resolve_targets
from pyfastviz._state import evaluation_mode

SCORES = ("prob", "logit")
FAST_DTYPES = (torch.bfloat16, torch.float16)
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # modes with CUDA graphs: use cuda_graph=True

GRAPHS_PER_MODEL = 4  # CUDA graphs kept per model, the oldest dropped first: each holds its activations' memory

# Per model (weakly held, so a cache never keeps a model alive): its compiled forwards by
# (device type, autocast dtype, mode), and its CUDA graphs by shape, dtypes, layout, mode and weights.
_COMPILED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_BATCH_SIZES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()  # see _default_batch


def occlusion(model: nn.Module, images: torch.Tensor, target=None, *, window: int | Sequence[int] = 16,
              stride: int | Sequence[int] = 8, baseline=0.0, batch_size: int | None = None, score: str = "prob",
              dtype: torch.dtype | None = None, channels_last: bool = False, compile: bool | str = False,
              cuda_graph: bool = False, return_grid: bool = False, progress: bool = True, backend: str = "auto"):
    """Occlusion maps: the drop of the target's score when a window of the image is replaced.

    images: (N, C, H, W) preprocessed. target: None (predicted class), int, N ints, or (N, K)
    ints. window, stride: int or (rows, cols), at most the image's; all channels are occluded
    together. baseline: what fills the window, in the model's input space: a number, C values, a
    (C, H, W) image or (N, C, H, W) images (e.g. blurred copies). score: "prob" (softmax) or "logit".
    batch_size: most images per forward pass (default: chosen from free memory once per model and
    image size, dtype and layout, so repeated calls keep one chunk shape); more than batch_size
    images are taken batch_size at a time.
    Fast path: dtype=torch.bfloat16/float16 runs under autocast; channels_last=True; compile=True
    (or a torch.compile mode, one of COMPILE_MODES) runs the chunk forward torch.compile'd
    (dynamic=False); cuda_graph=True (CUDA images) captures it once in a CUDA graph and replays
    it per chunk. With compile or cuda_graph every chunk has the full batch size (the last is
    padded), so one compile and one capture (paid by the first call) serve every chunk; both are
    cached per model and shape: the next call with the same shapes reuses them (clear_cache()
    frees them). They change only how the forward runs: in fp32 the maps equal the eager ones
    within float rounding (tests: 1e-6 + 1e-5 relative compiled on the CPU; 1e-5 + 1e-4 relative
    on CUDA, where cuDNN may pick other kernels for the padded batch). In bf16 each drop is a
    difference of two bf16-rounded scores (tests: within 2**-6 of the largest score; on the
    pretrained default model at most 20% of the fp32 map's peak, correlation >= 0.98).
    Returns (N, H, W) maps, (N, K, H, W) for K targets; with return_grid also the drop per
    window position, (N, [K,] rows, cols); float32, or float64 for float64 images and model.
    The model runs in eval mode and is left as found.
    """
    check_model(model)
    check_images(images, model)
    check_choice(score, "score", SCORES)
    if dtype is not None and dtype not in FAST_DTYPES:
        raise ValueError(f"dtype must be None (the images' dtype) or one of {FAST_DTYPES}, got {dtype}")
    if dtype is not None and images.dtype != torch.float32:
        raise ValueError(f"dtype={dtype} runs a float32 model under autocast; the images are {images.dtype}: "
                         "leave dtype=None to run in their dtype")
    if not (isinstance(compile, bool) or (isinstance(compile, str) and compile in COMPILE_MODES)):
        raise ValueError(f"compile must be True, False or a torch.compile mode in {COMPILE_MODES} (for CUDA graphs "
                         f"use cuda_graph=True), got {compile!r}")
    if not isinstance(cuda_graph, bool):
        raise ValueError(f"cuda_graph must be True or False, got {cuda_graph!r}")
    if cuda_graph and not images.is_cuda:
        raise ValueError(f"cuda_graph=True needs CUDA images and model, got images on {images.device}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None (from free memory) or a positive int, got {batch_size!r}")
    size = tuple(images.shape[1:])
    window3, stride3 = occlusion_geometry(size, window, stride)
    fill = baseline_fill(baseline, images)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    with evaluation_mode(model), torch.no_grad():
        forward = _forward(model, images.device.type, dtype)
        scorer = _scorer(score)
        indices, multi = (None, False) if target is None else resolve_targets(target, images.shape[0])
        if batch_size is None and images.shape[0]:
            batch_size = _default_batch(model, forward, images, dtype, layout)
        mode = ("default" if compile is True else compile) or None  # None: eager
        fixed = _fixed_forward(model, images.device, dtype, mode, cuda_graph) if mode or cuda_graph else None
        drops = occlusion_drops(forward, scorer, images, fill, window3, stride3, indices, batch_size,
                                dtype, channels_last, progress, backend, fixed)
    n, k, count = drops.shape
    heat = ops.occlusion_scatter(drops.reshape(n * k, count), (1, *window3[1:]), stride3, (1, *size[1:]),
                                 backend=backend).view(n, k, *size[1:])
    grid = drops.view(n, k, *ops.reference.occlusion_counts(size, window3, stride3)[1:])
    heat, grid = (heat, grid) if multi else (heat[:, 0], grid[:, 0])
    return (heat, grid) if return_grid else heat


def occlusion_drops(forward: Callable, scorer: Callable, images: torch.Tensor, fill: torch.Tensor, window, stride,
                    indices: torch.Tensor | None, batch_size: int | None, dtype=None, channels_last=False, progress=False,
                    backend="auto", fixed: Callable | None = None) -> torch.Tensor:
    """The engine: score drop (N, K, P) of each of K targets per image at each window position.

    forward: (B, C, H, W) -> outputs; scorer(outputs, indices (B, K)) -> (B, K) scores.
    indices: (N, K) classes, or None for each image's predicted class (from the same first pass).
    batch_size: most rows per forward (None only for N = 0): the images go G = min(N, batch_size)
    at a time, a first pass of G rows, then chunks of batch_size // G positions of G images each.
    fixed: None, or fixed(shape, dtype, layout) -> (buffer, run) for a forward that must always
    see one shape: the chunks are written into buffer (B, C, H, W) and run() returns the outputs
    for all of it, the last chunk (and a smaller last group) padded. The first passes run forward.
    """
    n, total = images.shape[0], ops.occlusion.positions(images.shape[1:], window, stride)
    drops = torch.empty((n, 1 if indices is None else indices.shape[1], total),
                        dtype=score_dtype(dtype or images.dtype), device=images.device)
    if n == 0:
        return drops
    layout = torch.channels_last if channels_last else torch.contiguous_format
    work_dtype = dtype or images.dtype
    group = min(n, batch_size)
    per_chunk = min(total, batch_size // group)
    shape = (per_chunk * group, *images.shape[1:])
    if fixed is None:
        chunk = torch.empty(shape, dtype=work_dtype, device=images.device, memory_format=layout)
    else:
        chunk, run = fixed(shape, work_dtype, layout)
    groups = range(0, n, group)
    with tqdm(total=total * len(groups), desc="occlusion", unit="pos", disable=not progress, leave=False) as bar:
        for begin in groups:
            x = images[begin:begin + group].to(work_dtype).contiguous(memory_format=layout)
            x_fill = fill[begin:begin + group].to(work_dtype).contiguous(memory_format=layout)
            m = x.shape[0]
            given = None if indices is None else indices[begin:begin + m].to(x.device)
            outputs = check_logits(forward(x), given, takes_layer=False)
            chosen = outputs.argmax(1, keepdim=True) if given is None else given
            initial = scorer(outputs, chosen)
            for first in range(0, total, per_chunk):
                count = min(per_chunk, total - first)
                batch = chunk[: count * m]
                ops.occlusion_batch(x, x_fill, window, stride, first, batch, backend=backend)
                # fixed: the spare rows hold earlier chunks' images; their scores go unused
                outputs = forward(batch) if fixed is None else run()[: count * m]
                scores = scorer(outputs, chosen.repeat(count, 1)).view(count, m, -1)
                drops[begin:begin + m, :, first:first + count] = (initial[None] - scores).permute(1, 2, 0)
                bar.update(count)
    return drops


def _forward(model: nn.Module, device_type: str, dtype) -> Callable:
    """model(x) under autocast to dtype (None: none). Holds the model weakly, so a cached compiled
    forward never keeps it alive; autocast's weight cache is off, as CUDA graph capture requires
    (each call casts anew anyway)."""
    ref = weakref.ref(model)

    def forward(x):
        with torch.autocast(device_type, dtype=dtype, cache_enabled=False) if dtype is not None else nullcontext():
            return ref()(x)
    return forward


def _fixed_forward(model: nn.Module, device: torch.device, dtype, mode: str | None, cuda_graph: bool) -> Callable:
    """The engine's `fixed` for a torch.compile'd forward (mode, None: eager) and/or a CUDA graph
    of it, from the caches or made and cached now."""
    if mode is None:
        forward = _forward(model, device.type, dtype)
    else:
        compiled = _COMPILED.setdefault(model, {})
        key = (device.type, dtype, mode)
        if key not in compiled:
            compiled[key] = torch.compile(_forward(model, device.type, dtype), mode=mode, dynamic=False)
        forward = compiled[key]

    def fixed(shape, work_dtype, layout):
        if not cuda_graph:
            buffer = torch.empty(shape, dtype=work_dtype, device=device, memory_format=layout)
            return buffer, lambda: forward(buffer)
        # a graph reads the weights where they were at capture: their addresses are part of the key
        key = (device, shape, work_dtype, layout, dtype, mode,
               tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers())))
        graphs = _GRAPHS.setdefault(model, {})
        if key not in graphs:
            while len(graphs) >= GRAPHS_PER_MODEL:
                del graphs[next(iter(graphs))]  # free the oldest capture's memory before making a new one
            graphs[key] = _ChunkGraph(forward, shape, work_dtype, layout, device)
        return graphs[key].input, graphs[key].run
    return fixed


class _ChunkGraph:
    """forward captured in a CUDA graph on a static input buffer (B, C, H, W): write a chunk into
    .input, then run() replays the graph and returns the static outputs (overwritten by the next run)."""

    def __init__(self, forward: Callable, shape, dtype, layout, device: torch.device):
        self.input = torch.zeros(shape, dtype=dtype, device=device, memory_format=layout)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # off the graph: cuDNN autotuning, lazy initialisation, compilation
                    forward(self.input)
            torch.cuda.current_stream().wait_stream(side)
            try:
                with torch.cuda.graph(self.graph):
                    self.output = forward(self.input)
            except RuntimeError as error:
                raise RuntimeError(f"cuda_graph=True: the model's forward cannot be captured in a CUDA graph (it "
                                   f"synchronises with the CPU or is not static); use cuda_graph=False: {error}"
                                   ) from error

    def run(self) -> torch.Tensor:
        self.graph.replay()
        return self.output


def clear_cache() -> None:
    """Drops the cached compiled forwards, CUDA graphs and default batch sizes of every model (and
    the GPU memory the graphs hold). Caches never keep a model alive; this frees them while the
    model lives on."""
    _COMPILED.clear()
    _GRAPHS.clear()
    _BATCH_SIZES.clear()


def _scorer(score: str) -> Callable:
    def scorer(outputs, indices):
        if score == "prob" and outputs.shape[1] == 1:
            raise ValueError("score='prob' needs a model with several classes (the softmax of one logit is "
                             "always 1): use score='logit'")
        outputs = outputs.to(score_dtype(outputs.dtype))
        return (outputs.softmax(1) if score == "prob" else outputs).gather(1, indices)
    return scorer


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scores and drops are float32, or float64 for a float64 model."""
    return torch.promote_types(dtype, torch.float32)


def occlusion_geometry(size, window, stride) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """occlusion()'s window and stride (int or (rows, cols)) for images of size (C, H, W) as the
    ops' (channels, rows, cols) triples; a ValueError for any that does not fit the image."""
    window3 = (size[0], *_pair(window, "window"))
    stride3 = (1, *_pair(stride, "stride"))
    ops.occlusion.check_geometry(size, window3, stride3)
    if any(s > d for s, d in zip(stride3[1:], size[1:])):
        raise ValueError(f"stride {stride3[1:]} is larger than the image {tuple(size[1:])} (rows, cols)")
    return window3, stride3


def _pair(value, name: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, Sequence) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or (rows, cols) of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def baseline_fill(baseline, images: torch.Tensor) -> torch.Tensor:
    """The fill as (N, C, H, W), from a number, C values, a (C, H, W) or an (N, C, H, W) tensor."""
    if isinstance(baseline, torch.Tensor) and baseline.device != images.device:
        raise ValueError(f"baseline is on {baseline.device} but the images are on {images.device}")
    try:
        fill = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"baseline must be a number, {images.shape[1]} channel values or a tensor, "
                        f"got {type(baseline).__name__} {baseline!r}") from None
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


def _default_batch(model: nn.Module, forward: Callable, images: torch.Tensor, dtype, layout) -> int:
    """batch_size=None's images per forward: _fitting_batch's, measured once per model and (device,
    image size, dtypes, layout), so repeated calls keep one chunk shape (a CUDA graph or compile is
    keyed on it) however free memory changes, e.g. once a CUDA graph holds some."""
    key = (images.device, tuple(images.shape[1:]), images.dtype, dtype, layout)
    sizes = _BATCH_SIZES.setdefault(model, {})
    if key not in sizes:
        probe = images[:1].to(dtype or images.dtype).expand(8, -1, -1, -1).contiguous(memory_format=layout)
        sizes[key] = _fitting_batch(forward, probe)
    return sizes[key]


def _fitting_batch(forward: Callable, probe: torch.Tensor) -> int:
    """64 on the CPU; on a GPU what half its free memory holds, from the peak memory of a forward
    of probe (8 copies of one image)."""
    if not probe.is_cuda:
        return 64
    torch.cuda.synchronize(probe.device)
    before = torch.cuda.memory_allocated(probe.device)
    torch.cuda.reset_peak_memory_stats(probe.device)
    forward(probe)
    per_image = max(1, (torch.cuda.max_memory_allocated(probe.device) - before) // probe.shape[0])
    free, _ = torch.cuda.mem_get_info(probe.device)
    return int(max(8, min(4096, free // 2 // per_image)))
