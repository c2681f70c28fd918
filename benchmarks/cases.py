"""The benchmark cases, defined once: benchmarks/run.py (the table) and
benchmarks/test_bench_guided.py (pytest-benchmark) both build their work from here.

A case knows its sizes and how to build the callables to time; it does no timing itself.
Each case gives a "reference" callable (pure PyTorch: pyfastviz/ops/reference.py, or the
classic hook-based guided backprop) and a "pyfastviz" callable, doing the same work.
"""

from __future__ import annotations

import copy
import importlib
import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pyfastviz import _native, ops
from pyfastviz.guided import guided_backprop, guided_backprop_hooks
from pyfastviz.ops import reference
from pyfastviz.saliency import saliency

# The module, not the function pyfastviz.ops exports under the same name.
_gram_module = importlib.import_module("pyfastviz.ops.gram")
_instance_norm_module = importlib.import_module("pyfastviz.ops.instance_norm")
MASK_BYTES_PER_ELEMENT = 1 / 8  # the native guided_relu keeps 1 bit per element


def triton_runs(device: str | torch.device, op_module) -> bool:
    """True where the op's Triton kernel runs: Triton imported, and a CUDA device, or the CPU
    under TRITON_INTERPRET=1 (how the tests run the benchmark rows' code without a GPU)."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return op_module.triton_available() and (torch.device(device).type == "cuda" or interpreted)


# ---- ops ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCase:
    """guided_relu forward or backward on one activation-shaped tensor, three ways.

    backward: "pyfastviz", the native kernel (grad * mask bit * [grad > 0]); "reference",
    reference.guided_relu_backward (the spec: ReLU's backward written in PyTorch ops, then
    clamp(min=0)); "hooks", what the classic hook method actually runs: autograd's fused
    ReLU backward (threshold_backward / hardtanh_backward) and the hook's clamp(min=0).
    forward: "pyfastviz", the native kernel (clamp + 1-bit mask); "reference", torch.relu /
    clamp plus the bool mask reference.guided_relu saves; "hooks", the plain activation.
    """

    direction: str  # "forward" | "backward"
    shape: tuple[int, ...]
    dtype: torch.dtype
    upper: float | None = None  # None: ReLU; 6.0: ReLU6

    @property
    def name(self) -> str:
        return f"guided_relu{'6' if self.upper == 6.0 else ''} {self.direction}"

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    def bytes_moved(self) -> int:
        """Bytes the native kernel must move, the basis of its GB/s.

        forward reads x, writes y and the mask bits; backward reads grad and the mask bits
        and writes dx. Either way 2 * itemsize + 1/8 bytes per element.
        """
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return round(self.numel * (2 * itemsize + MASK_BYTES_PER_ELEMENT))

    def available(self, device: str | torch.device) -> bool:
        """True when pyfastviz._C has a guided_relu kernel for device (else nothing to compare)."""
        return _native.has_kernel("guided_relu", torch.device(device).type)

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        """{"reference": fn, "hooks": fn, "pyfastviz": fn}, inputs allocated on device."""
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(self.shape, generator=gen, device=device, dtype=self.dtype) * 4
        upper = self.upper
        if self.direction == "forward":
            return {
                "reference": lambda: (_activation(x, upper), reference.relu_passes_gradient(x, upper)),
                "hooks": lambda: _activation(x, upper),
                "pyfastviz": lambda: torch.ops.pyfastviz.guided_relu(x, upper),
            }
        grad = torch.randn(self.shape, generator=gen, device=device, dtype=self.dtype)
        y, mask = torch.ops.pyfastviz.guided_relu(x, upper)
        return {
            "reference": lambda: reference.guided_relu_backward(grad, x, upper),
            "hooks": lambda: _hook_backward(grad, x, y, upper),
            "pyfastviz": lambda: torch.ops.pyfastviz.guided_relu_backward(grad, mask, False, 1),
        }

    def saving_forwards(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """The forward of each method on a leaf that requires grad, to measure what it saves.

        hooks: the plain activation the classic hook method runs (torch.relu saves its output,
        F.relu6 its input); reference: reference.guided_relu (bool mask); pyfastviz: the op.
        """
        upper = self.upper
        return {
            "hooks": lambda x: _activation(x, upper),
            "reference": lambda x: reference.guided_relu(x, upper),
            "pyfastviz": lambda x: ops.guided_relu(x, upper, backend="native"),
        }

    def leaf(self, device: str | torch.device) -> torch.Tensor:
        """A random input of the case's shape that requires grad (for saving_forwards)."""
        return torch.randn(self.shape, device=device, dtype=self.dtype).requires_grad_(True)


def _activation(x: torch.Tensor, upper: float | None) -> torch.Tensor:
    return torch.relu(x) if upper is None else F.relu6(x) if upper == 6.0 else torch.clamp(x, 0.0, upper)


def _hook_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, upper: float | None) -> torch.Tensor:
    """Autograd's own backward of relu (from its saved output) / relu6 (from its saved input),
    then the hook's clamp(min=0) on the result."""
    if upper is None:
        relu_grad = torch.ops.aten.threshold_backward(grad, y, 0)
    else:
        relu_grad = torch.ops.aten.hardtanh_backward(grad, x, 0.0, upper)
    return relu_grad.clamp_(min=0)


def op_cases(quick: bool) -> list[OpCase]:
    """quick: 1M and 8M fp32 elements (CPU, CI smoke). Full: 32M and 64M, fp32 and bf16."""
    if quick:
        sizes, dtypes = (1, 8), (torch.float32,)
    else:
        sizes, dtypes = (32, 64), (torch.float32, torch.bfloat16)
    return [
        OpCase(direction, (n, 64, 128, 128), dtype)  # n * 2**20 elements, activation-shaped
        for dtype in dtypes
        for n in sizes
        for direction in ("backward", "forward")
    ]


# precision name -> (feature dtype, TF32 dot products on both sides)
GRAM_PRECISIONS = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False),
                   "fp16": (torch.float16, False)}


@contextmanager
def matmul_tf32(enabled: bool):
    """cuBLAS fp32 matmuls in TF32 (enabled) or IEEE fp32 inside, restored after (the reference's
    TF32 switch). The new fp32_precision API: reading the legacy allow_tf32 raises once it is used."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def _bmm_gram(features: torch.Tensor) -> torch.Tensor:
    """G = torch.bmm(F, F^T) / (C*H*W) in features' own dtype: reference.gram for fp32; for bf16
    cuBLAS's bf16 bmm (fp32 accumulation), not reference.gram's fp32 upcast and fp32 bmm."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return torch.bmm(f, f.mT) / (c * h * w)


@dataclass(frozen=True)
class GramCase:
    """gram forward, or forward+backward (the gradient of F), on one batch of feature maps, two
    ways: "reference" (torch.bmm(F, F^T) / (C*H*W) in the features' dtype, cuBLAS; _bmm_gram) and
    "pyfastviz" (ops.gram on the Triton kernels). precision: "fp32" (IEEE dot products on both
    sides), "tf32" (TF32 on both: matmul_tf32 for torch.bmm, allow_tf32 for the kernel), "bf16" or
    "fp16" (16-bit features and bmm, fp32 accumulation on both; the kernel's fp16 backward dots
    in TF32, for fp32's range)."""

    op: ClassVar[str] = "gram"
    direction: str  # "forward" | "forward+backward"
    shape: tuple[int, int, int, int]  # (N, C, H, W)
    precision: str  # a GRAM_PRECISIONS key

    @property
    def name(self) -> str:
        return f"{self.op} {self.direction}"

    @property
    def dtype(self) -> torch.dtype:
        return GRAM_PRECISIONS[self.precision][0]

    def flops(self) -> int:
        """2 N C^2 H W per product: F @ F^T (forward; the kernel does about half of it, one
        triangle), and (dG + dG^T) @ F for the backward."""
        n, c, h, w = self.shape
        return 2 * n * c * c * h * w * (1 if self.direction == "forward" else 2)

    def bytes_moved(self) -> int:
        """Bytes the kernels must move at least: forward reads F and writes G; forward+backward
        also reads dG and F and writes dF."""
        n, c, h, w = self.shape
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        features, gram = n * c * h * w * itemsize, n * c * c * itemsize
        return features + gram if self.direction == "forward" else 3 * features + 2 * gram

    @property
    def dtype_label(self) -> str:
        return self.precision

    def available(self, device: str | torch.device) -> bool:
        return triton_runs(device, _gram_module)

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        """{"reference": fn, "pyfastviz": fn}, inputs allocated on device."""
        tf32 = GRAM_PRECISIONS[self.precision][1]
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(self.shape, generator=gen, device=device, dtype=self.dtype)

        def reference_gram(features):
            with matmul_tf32(tf32):
                return _bmm_gram(features)

        def pyfastviz_gram(features):
            return ops.gram(features, allow_tf32=tf32, backend="triton")

        if self.direction == "forward":
            return {"reference": lambda: reference_gram(x), "pyfastviz": lambda: pyfastviz_gram(x)}
        n, c = self.shape[:2]
        grad = torch.randn((n, c, c), generator=gen, device=device, dtype=self.dtype)
        leaf = x.detach().requires_grad_(True)

        def forward_backward(fn):
            with matmul_tf32(tf32):  # the reference's backward matmul runs under the same switch
                return torch.autograd.grad(fn(leaf), leaf, grad)

        return {"reference": lambda: forward_backward(reference_gram),
                "pyfastviz": lambda: forward_backward(pyfastviz_gram)}


def gram_cases(quick: bool) -> list[GramCase]:
    """The feature maps of style transfer on VGG (relu1_1 .. relu5_1). quick: a 128 px image's
    relu1_1 and relu3_1, batch 1, fp32. Full: a 512 px image's five, batch 4, fp32, tf32 and bf16
    (the issue's), and fp16 forward+backward at relu1_1 and relu2_1 (its TF32 backward's cost)."""
    if quick:
        shapes, precisions = [(1, 64, 128, 128), (1, 256, 32, 32)], ("fp32",)
    else:
        shapes = [(4, 64, 512, 512), (4, 128, 256, 256), (4, 256, 128, 128), (4, 512, 64, 64), (4, 512, 32, 32)]
        precisions = ("fp32", "tf32", "bf16")
    issue_rows = [GramCase(direction, shape, precision) for precision in precisions for shape in shapes
                  for direction in ("forward", "forward+backward")]
    fp16_rows = [] if quick else [GramCase("forward+backward", shape, "fp16") for shape in shapes[:2]]
    return issue_rows + fp16_rows


@dataclass(frozen=True)
class InstanceNormCase:
    """instance_norm with a (C,) affine, forward or forward+backward, two ways: "reference"
    (F.instance_norm, what a PyTorch user runs) and "pyfastviz" (the Triton kernels,
    pyfastviz::instance_norm and its backward). forward+backward takes the gradients of x,
    weight and bias."""

    op: ClassVar[str] = "instance_norm"
    direction: str  # "forward" | "forward+backward"
    shape: tuple[int, int, int, int]  # (N, C, H, W)
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return f"{self.op} {self.direction}"

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    def bytes_moved(self) -> int:
        """Bytes the kernels must move at least: forward reads x and writes y; forward+backward
        also reads x and dy and writes dx (5 tensors of x's size)."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return self.numel * itemsize * (2 if self.direction == "forward" else 5)

    @property
    def dtype_label(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def available(self, device: str | torch.device) -> bool:
        return triton_runs(device, _instance_norm_module)

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        """{"reference": fn, "pyfastviz": fn}, inputs allocated on device."""
        gen = torch.Generator(device=device).manual_seed(0)
        c = self.shape[1]
        x = torch.randn(self.shape, generator=gen, device=device, dtype=self.dtype)
        weight = (1 + 0.1 * torch.randn(c, generator=gen, device=device)).to(self.dtype)
        bias = (0.1 * torch.randn(c, generator=gen, device=device)).to(self.dtype)

        def reference(a, w, b):
            return F.instance_norm(a, weight=w, bias=b, eps=1e-5)

        def pyfastviz(a, w, b):
            return torch.ops.pyfastviz.instance_norm(a, w, b, 1e-5, False)[0]

        if self.direction == "forward":
            return {"reference": lambda: reference(x, weight, bias), "pyfastviz": lambda: pyfastviz(x, weight, bias)}
        grad = torch.randn(self.shape, generator=gen, device=device, dtype=self.dtype)
        leaves = [t.detach().requires_grad_(True) for t in (x, weight, bias)]
        return {name: lambda fn=fn: torch.autograd.grad(fn(*leaves), leaves, grad)
                for name, fn in (("reference", reference), ("pyfastviz", pyfastviz))}


def instance_norm_cases(quick: bool) -> list[InstanceNormCase]:
    """Style-network activations. quick: two small fp32 shapes. Full: 8M, 4M, 2M and 8M
    elements (256^2 .. 64^2 planes) and 32M (for the bandwidth at >= 32M elements), fp32 and bf16."""
    if quick:
        shapes, dtypes = [(2, 32, 64, 64), (2, 64, 32, 32)], (torch.float32,)
    else:
        shapes = [(4, 32, 256, 256), (4, 64, 128, 128), (4, 128, 64, 64), (16, 128, 64, 64), (8, 64, 256, 256)]
        dtypes = (torch.float32, torch.bfloat16)
    return [InstanceNormCase(direction, shape, dtype) for dtype in dtypes for shape in shapes
            for direction in ("forward", "forward+backward")]

# ---- techniques -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TechniqueCase:
    """Guided backprop on a whole model: pyfastviz (TorchFunctionMode routing ReLU/ReLU6 to the
    guided_relu op) against the classic hook method (reference) and the vanilla gradient
    (saliency, the floor: one forward and one backward, nothing guided)."""

    model: str  # "vgg16" (random weights: fine for speed) | "efficientnet_lite0" (pretrained default)
    batch: int
    size: int

    @property
    def name(self) -> str:
        return f"guided_backprop {self.model}"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, self.size, self.size)

    def build_model(self, device: str | torch.device) -> nn.Module:
        if self.model == "vgg16":
            import torchvision

            torch.manual_seed(0)
            return torchvision.models.vgg16(weights=None).requires_grad_(False).eval().to(device)
        from pyfastviz.models import load_model

        return load_model(self.model, device=device).net

    def build(self, device: str | torch.device, model: nn.Module | None = None) -> dict[str, Callable[[], object]]:
        """{"reference": hooks, "pyfastviz": guided_backprop, "vanilla": saliency}, one call each."""
        model = model if model is not None else self.build_model(device)
        gen = torch.Generator(device=device).manual_seed(0)
        images = torch.randn(self.shape, generator=gen, device=device)
        target = [(7 * i) % 1000 for i in range(self.batch)]  # fixed classes: no argmax dependence
        return {
            "reference": lambda: guided_backprop_hooks(model, images, target),
            "pyfastviz": lambda: _quiet(guided_backprop, model, images, target),
            "vanilla": lambda: saliency(model, images, target, reduce="none", progress=False),
        }


def _quiet(fn, *args):
    with warnings.catch_warnings():  # "left X unguided" warnings would repeat every call
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args)


def technique_cases(quick: bool) -> list[TechniqueCase]:
    """quick: VGG16 batch 2 at 112 px, EfficientNet-Lite0 batch 2 at 224 px.
    Full: VGG16 batch 16 at 224 px, EfficientNet-Lite0 batch 8 at 224 px."""
    if quick:
        return [TechniqueCase("vgg16", 2, 112), TechniqueCase("efficientnet_lite0", 2, 224)]
    return [TechniqueCase("vgg16", 16, 224), TechniqueCase("efficientnet_lite0", 8, 224)]


# ---- occlusion ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcclusionCase:
    """Occlusion of one image by every method: Captum (perturbations_per_eval 1 and 128, when
    installed), a plain batched PyTorch loop that builds each chunk with a mask ("plain loop", fp32),
    the issue's bars: forwards alone over prebuilt occluded batches in bf16 channels_last ("plain
    loop bf16"; on CUDA also torch.compile'd, "plain loop compiled"), pyfastviz fp32, the pyfastviz
    fast path (bf16 autocast + channels_last), the fast path with the chunk forward torch.compile'd
    ("compiled"), and on CUDA only, the fast path replaying a CUDA graph of the eager ("graphs") or
    compiled ("compiled+graphs") chunk forward. Compilation and capture are cached per model, so
    the warmup call pays for them. "kernels" and "kernels fast" time pyfastviz's build and scatter
    ops alone, in fp32 contiguous and in the fast path's bf16 channels_last, for the share of the
    end-to-end time they take."""

    model: str  # a torchvision builder name; random weights are fine for timing
    size: int
    window: int
    stride: int
    batch_size: int = 128  # occluded images per forward, for every batched method

    @property
    def name(self) -> str:
        return f"occlusion {self.model}"

    @property
    def positions(self) -> int:
        return ((self.size - self.window + self.stride - 1) // self.stride + 1) ** 2

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        from pyfastviz import ops
        from pyfastviz.occlusion import occlusion

        torch.manual_seed(0)
        model = getattr(torchvision.models, self.model)(weights=None).eval().to(device)
        x = torch.randn(1, 3, self.size, self.size, device=device)
        target = 1
        size, window, stride = (3, self.size, self.size), (3, self.window, self.window), (1, self.stride, self.stride)
        fast = dict(dtype=torch.bfloat16, memory_format=torch.channels_last)  # tensors' and models' .to()
        fast_path = dict(dtype=torch.bfloat16, channels_last=True)  # occlusion()'s

        def pyfastviz(**options):
            return occlusion(model, x, target, window=self.window, stride=self.stride, score="logit",
                             batch_size=self.batch_size, progress=False, **options)

        def kernels(dtype=torch.float32, memory_format=torch.contiguous_format):
            image = x.to(dtype).contiguous(memory_format=memory_format)
            fill = torch.zeros_like(image)
            chunk = torch.empty((self.batch_size, *size), device=device, dtype=dtype, memory_format=memory_format)
            for first in range(0, self.positions, self.batch_size):
                count = min(self.batch_size, self.positions - first)
                ops.occlusion_batch(image, fill, window, stride, first, chunk[:count])
            return ops.occlusion_scatter(torch.zeros(1, self.positions, device=device), window, stride, size)

        bf16_model = copy.deepcopy(model).to(**fast)
        batches = [batch.to(**fast) for batch in _occluded_batches(x, self.window, self.stride, self.batch_size)]
        methods = {
            "plain loop": lambda: _plain_occlusion(model, x, target, self.window, self.stride, self.batch_size),
            "plain loop bf16": lambda: _forwards(bf16_model, batches, target),
            "pyfastviz": pyfastviz,
            "pyfastviz fast": lambda: pyfastviz(**fast_path),
            "pyfastviz compiled": lambda: pyfastviz(**fast_path, compile=True),
            "kernels": kernels,
            "kernels fast": lambda: kernels(**fast),
        }
        if torch.device(device).type == "cuda":
            compiled = torch.compile(bf16_model)
            methods["plain loop compiled"] = lambda: _forwards(compiled, batches, target)
            methods["pyfastviz graphs"] = lambda: pyfastviz(**fast_path, cuda_graph=True)
            methods["pyfastviz compiled+graphs"] = lambda: pyfastviz(**fast_path, compile=True, cuda_graph=True)
        try:
            from captum.attr import Occlusion
        except ImportError:
            return methods
        for ppe in (1, 128):
            methods[f"captum ppe={ppe}"] = lambda ppe=ppe: Occlusion(model).attribute(
                x, sliding_window_shapes=window, strides=stride, target=target, perturbations_per_eval=ppe)
        return methods


def _window_starts(size, window, stride) -> range:
    """Rows (or columns) where a window starts, the last one cropped at the edge (as Captum)."""
    return range(0, size - window + stride, stride)


def _occluded_batches(x, window, stride, batch_size):
    """What one writes by hand: x (1, C, S, S) times masks zeroing a window, batch_size positions a chunk."""
    size = x.shape[-1]
    starts = _window_starts(size, window, stride)
    boxes = [(top, left) for top in starts for left in starts]
    for first in range(0, len(boxes), batch_size):
        masks = torch.ones(len(boxes[first:first + batch_size]), 1, size, size, device=x.device)
        for i, (top, left) in enumerate(boxes[first:first + batch_size]):
            masks[i, :, top:top + window, left:left + window] = 0
        yield x * masks


@torch.no_grad()
def _plain_occlusion(model, x, target, window, stride, batch_size):
    """The plain loop: each chunk built with masks, one forward per chunk, then the per-position
    drops averaged back onto the pixels with a transposed convolution of ones."""
    size = x.shape[-1]
    base = model(x)[:, target]
    drops = torch.cat([base - model(batch)[:, target] for batch in _occluded_batches(x, window, stride, batch_size)])
    side = len(_window_starts(size, window, stride))
    grid = drops.view(1, 1, side, side)
    kernel = torch.ones(1, 1, window, window, device=x.device)
    total = torch.nn.functional.conv_transpose2d(grid, kernel, stride=stride)[..., :size, :size]
    covering = torch.nn.functional.conv_transpose2d(torch.ones_like(grid), kernel, stride=stride)[..., :size, :size]
    return total / covering


@torch.no_grad()
def _forwards(model, batches, target):
    """The issue's bar: the forwards alone over prebuilt occluded batches, the target's logits."""
    return torch.cat([model(batch)[:, target] for batch in batches])


def occlusion_cases(quick: bool) -> list[OcclusionCase]:
    """Full: ResNet50 and VGG16 at 224 px, window 16, stride 8 (729 positions). quick: ResNet18
    at 96 px, window 16, stride 8 (121 positions), for a 2-core CPU."""
    if quick:
        return [OcclusionCase("resnet18", 96, 16, 8)]
    return [OcclusionCase("resnet50", 224, 16, 8), OcclusionCase("vgg16", 224, 16, 8)]


# ---- inspection -----------------------------------------------------------------------------
# Each inspect case builds {"reference": fn, "pyfastviz": fn} doing the same work, and knows
# how many items (images, queries, rows) one call handles, for a throughput column, and how
# to compare the two outputs (agreement), so a fast but wrong result shows in the table.


@dataclass(frozen=True)
class FeatureCase:
    """Penultimate features of random images through the default model: extract_features
    (pyfastviz) against a plain torch.no_grad() loop over the same batches with a forward
    pre-hook on the last nn.Linear (reference)."""

    images: int
    size: int = 224
    batch_size: int = 32
    model: str = "efficientnet_lite0"

    name = "extract_features"
    reference = "no_grad loop + pre-hook"
    unit = "images/s"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.images, 3, self.size, self.size)

    @property
    def items(self) -> int:
        return self.images

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        from pyfastviz.inspect import extract_features
        from pyfastviz.models import load_model

        model = load_model(self.model, device=device).net
        gen = torch.Generator(device=device).manual_seed(0)
        images = torch.randn(self.shape, generator=gen, device=device)
        return {
            "reference": lambda: _plain_features(model, images, self.batch_size),
            "pyfastviz": lambda: extract_features(model, images, batch_size=self.batch_size, device=device,
                                                  progress=False),
        }

    @staticmethod
    def agreement(reference_out: torch.Tensor, pyfastviz_out: torch.Tensor) -> tuple[str, float]:
        return "max abs diff", float((reference_out - pyfastviz_out).abs().max())


@torch.no_grad()
def _plain_features(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """What one writes by hand: a pre-hook on the last nn.Linear collects its input per batch."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    out = []
    handle = linear.register_forward_pre_hook(lambda module, args: out.append(args[0].flatten(1)))
    try:
        for batch in images.split(batch_size):
            model(batch)
    finally:
        handle.remove()
    return torch.cat(out)


@dataclass(frozen=True)
class NeighbourCase:
    """Exact cosine k-NN of `queries` random vectors among `n` (dim `dim`): nearest_neighbours
    (pyfastviz, blocked matmul + top-k on the device) against scikit-learn's
    NearestNeighbors(metric="cosine", algorithm="brute") fit + kneighbors (reference, CPU,
    float32 numpy). The fit is timed too: pyfastviz normalises the features on every call."""

    n: int
    queries: int
    dim: int = 1280
    k: int = 5

    name = "nearest_neighbours cosine k=5"
    reference = "sklearn NearestNeighbors brute"
    unit = "queries/s"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.dim)

    @property
    def items(self) -> int:
        return self.queries

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        from sklearn.neighbors import NearestNeighbors

        from pyfastviz.inspect import nearest_neighbours

        gen = torch.Generator(device=device).manual_seed(0)
        features = torch.randn((self.n, self.dim), generator=gen, device=device)
        queries = torch.randn((self.queries, self.dim), generator=gen, device=device)
        features_np, queries_np = features.cpu().numpy(), queries.cpu().numpy()

        def reference():
            knn = NearestNeighbors(n_neighbors=self.k, metric="cosine", algorithm="brute").fit(features_np)
            return knn.kneighbors(queries_np)

        return {"reference": reference, "pyfastviz": lambda: nearest_neighbours(features, queries, k=self.k)}

    @staticmethod
    def agreement(reference_out, pyfastviz_out) -> tuple[str, float]:
        """Fraction of queries whose k neighbours (as a set) are the same."""
        ref = torch.from_numpy(reference_out[1]).sort(1).values
        ours = pyfastviz_out[1].cpu().sort(1).values
        return "same neighbours", float((ref == ours).all(1).float().mean())


@dataclass(frozen=True)
class PCACase:
    """pca(features (n, dim), k) with backend="torch" (pyfastviz: an eigendecomposition of the
    dim x dim covariance on the device) against backend="sklearn" (reference: scikit-learn PCA,
    full SVD, CPU float64)."""

    n: int
    k: int
    dim: int = 1280

    reference = "pca(backend='sklearn')"
    unit = "rows/s"

    @property
    def name(self) -> str:
        return f"pca k={self.k}"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.dim)

    @property
    def items(self) -> int:
        return self.n

    def build(self, device: str | torch.device) -> dict[str, Callable[[], object]]:
        from pyfastviz.inspect import pca

        gen = torch.Generator(device=device).manual_seed(0)
        # features with a decaying spectrum (like real embeddings), so the top k are well separated
        scale = torch.logspace(0, -2, self.dim, device=device)
        features = torch.randn((self.n, self.dim), generator=gen, device=device) * scale + 3
        return {
            "reference": lambda: pca(features, self.k, backend="sklearn"),
            "pyfastviz": lambda: pca(features, self.k, backend="torch"),
        }

    @staticmethod
    def agreement(reference_out, pyfastviz_out) -> tuple[str, float]:
        """Largest difference of the explained-variance ratios."""
        return "max abs ratio diff", float((reference_out[1].cpu() - pyfastviz_out[1].cpu()).abs().max())


def inspect_cases(quick: bool) -> list[FeatureCase | NeighbourCase | PCACase]:
    """quick (2-core CPU, CI smoke): 32 images; k-NN of 256 queries among 2k and 10k vectors;
    PCA of 2k rows. Full: 512 images; 1000 queries among 10k and 100k; PCA of 100k rows.
    Vectors have EfficientNet-Lite0's feature width, 1280."""
    images, n_vectors, queries, pca_rows = (32, (2_000, 10_000), 256, 2_000) if quick else \
        (512, (10_000, 100_000), 1000, 100_000)
    return [
        FeatureCase(images),
        *[NeighbourCase(n, queries) for n in n_vectors],
        *[PCACase(pca_rows, k) for k in (2, 50)],
    ]
