"""Guided backprop (Springenberg et al. 2015) for a class or any intermediate unit.

Every ReLU-family activation the forward pass calls (nn.ReLU/ReLU6 modules, in-place or
not, and F.relu, torch.relu, x.relu_(), F.relu6, F.hardtanh(x, 0, t), and clamps with floor 0:
torch.clamp(x, 0[, t]), x.clamp(min=0), x.clamp_min_(0), ...) runs as the
guided_relu op (in-place calls as guided_relu_, still in place), caught with a
TorchFunctionMode; the model itself is not modified.
Guided backprop is defined for ReLU-family units only: SiLU, GELU, Hardswish, ELU and
the like, and sigmoid, hardsigmoid and tanh gates, pass their ordinary gradient, with a
warning (or an error when strict=True).
torch.compile'd models are guided too (their code is traced under the mode); TorchScript
models run outside Python, bypass it, and are refused.
"""

import warnings
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import CheckpointError

from pyfastviz import ops
from pyfastviz.ops._checks import check_backend
from pyfastviz.saliency import gradient_maps


@dataclass(frozen=True)
class _ReluCall:
    """How to read (input, upper bound, in-place) from one ReLU-family function's arguments;
    a clamp (bounds: its floor and ceiling arguments' names and defaults) is one only when its
    floor is the number 0 and its ceiling none or a number > 0."""

    params: tuple[str, ...]
    upper: float | None = None
    inplace: bool | None = None  # None: read it from the `inplace` argument
    bounds: tuple[str, str, float | None, float | None] | None = None

    def bind(self, args, kwargs):
        values = dict(zip(self.params, args), **kwargs)
        upper = self.upper
        if self.bounds is not None:
            floor, ceiling, floor_default, ceiling_default = self.bounds
            low, upper = values.get(floor, floor_default), values.get(ceiling, ceiling_default)
            if not (_is_number(low) and low == 0 and (upper is None or _is_number(upper) and upper > 0)):
                return None
        inplace = self.inplace if self.inplace is not None else bool(values.get("inplace", False))
        return values[self.params[0]], upper, inplace


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_HARDTANH = ("min_val", "max_val", -1.0, 1.0)
_CLAMP = ("min", "max", None, None)


_RELU_FAMILY = {
    F.relu: _ReluCall(("input", "inplace")),
    F.relu_: _ReluCall(("input",), inplace=True),
    torch.relu: _ReluCall(("input",), inplace=False),
    torch.relu_: _ReluCall(("input",), inplace=True),
    torch.Tensor.relu: _ReluCall(("self",), inplace=False),
    torch.Tensor.relu_: _ReluCall(("self",), inplace=True),
    F.relu6: _ReluCall(("input", "inplace"), upper=6.0),
    F.hardtanh: _ReluCall(("input", "min_val", "max_val", "inplace"), bounds=_HARDTANH),
    F.hardtanh_: _ReluCall(("input", "min_val", "max_val"), inplace=True, bounds=_HARDTANH),
    **{clamp: _ReluCall(("input", "min", "max"), inplace=False, bounds=_CLAMP)
       for clamp in (torch.clamp, torch.clip, torch.clamp_min)},
    **{clamp: _ReluCall(("input", "min", "max"), inplace=True, bounds=_CLAMP)
       for clamp in (torch.clamp_, torch.clip_, torch.clamp_min_)},
    **{clamp: _ReluCall(("self", "min", "max"), inplace=False, bounds=_CLAMP)
       for clamp in (torch.Tensor.clamp, torch.Tensor.clip, torch.Tensor.clamp_min)},
    **{clamp: _ReluCall(("self", "min", "max"), inplace=True, bounds=_CLAMP)
       for clamp in (torch.Tensor.clamp_, torch.Tensor.clip_, torch.Tensor.clamp_min_)},
}

_UNGUIDED = {F.silu, F.gelu, F.hardswish, F.mish, F.elu, F.selu, F.celu, F.leaky_relu, F.softplus,
             F.prelu, F.rrelu, F.hardtanh, F.hardsigmoid,  # and the gates of squeeze-and-excitation blocks:
             torch.sigmoid, torch.special.expit, torch.Tensor.sigmoid, torch.Tensor.sigmoid_, torch.tanh,
             torch.Tensor.tanh, torch.Tensor.tanh_}


class GuidedReLUMode(TorchFunctionMode):
    """While active, ReLU-family calls run ops.guided_relu; counts what it guided and what not."""

    def __init__(self, backend: str = "auto", strict: bool = False):
        super().__init__()
        self.backend, self.strict = check_backend(backend), strict
        self.guided = 0
        self.unguided = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = _RELU_FAMILY[func].bind(args, kwargs) if func in _RELU_FAMILY else None
        if call is not None and isinstance(call[0], torch.Tensor) and call[0].is_floating_point():
            x, upper, inplace = call
            self.guided += 1
            guided_relu = ops.guided_relu_ if inplace else ops.guided_relu
            return guided_relu(x, upper, backend=self.backend)
        if func in _UNGUIDED:
            self._unguided(func.__name__)
        return func(*args, **kwargs)

    def _unguided(self, name: str) -> None:
        if self.strict:
            raise ValueError(f"guided backprop (strict=True): the model calls {name}, which is not a "
                             "ReLU-family activation, so its gradient cannot be guided")
        self.unguided[name] += 1

    def report(self) -> None:
        """Raises when nothing was guided; warns about activations left unguided."""
        if self.guided == 0:
            found = f" (it uses {', '.join(self.unguided)})" if self.unguided else ""
            raise ValueError(f"guided backprop found no ReLU/ReLU6 activation in the model{found}; "
                             "it equals the vanilla gradient there: use pyfastviz.saliency")
        if self.unguided:
            names = ", ".join(f"{name} x{count}" for name, count in self.unguided.items())
            warnings.warn(f"guided backprop guided {self.guided} ReLU-family calls but left {names} unguided "
                          "(not ReLU-family); their gradients pass unchanged", RuntimeWarning, stacklevel=3)


def guided_backprop(model: nn.Module, images: torch.Tensor, target=None, *, layer: str | None = None,
                    channel: int | Sequence[int] | None = None, neuron: tuple[int, int, int] | None = None,
                    reduce: str = "none", strict: bool = False, backend: str = "auto") -> torch.Tensor:
    """Guided-backprop images of a class (target) or of a unit (layer= with channel= or neuron=).

    images: (N, C, H, W) preprocessed. target: None (predicted class), int, N ints, or
    (N, K) ints. Returns (N, C, H, W) (reduce="none"), or (N, H, W) with reduce="abs_max";
    a K axis after N for K targets/channels. backend: "auto" | "native" | "reference" for
    the guided_relu op. strict=True raises on a non-ReLU activation instead of warning.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("guided backprop cannot reach the activations of a TorchScript model (it runs "
                        "outside Python): pass the eager nn.Module, or torch.compile it instead")
    mode = GuidedReLUMode(backend, strict)
    try:
        with mode:
            maps = gradient_maps(model, images, target, layer=layer, channel=channel, neuron=neuron, reduce=reduce)
    except CheckpointError as error:  # the backward's recomputation runs outside the mode
        raise ValueError("guided backprop cannot go through activation checkpointing (torch.utils.checkpoint; "
                         "timm: model.set_grad_checkpointing()): the forward it recomputes during the backward "
                         "is not guided; turn checkpointing off for the call") from error
    if images.shape[0]:
        mode.report()
    return maps


def guided_backprop_hooks(model: nn.Module, images: torch.Tensor, target=None, **kwargs) -> torch.Tensor:
    """Reference implementation: the classic module hooks, two passes over each gradient.

    Full backward hooks on nn.ReLU/nn.ReLU6 modules clamp the gradient each passes back to
    >= 0 (after the activation's own backward). Covers activation modules only, not
    F.relu calls; in-place modules run out of place during the call. Same arguments as
    guided_backprop (except backend/strict).
    """
    with _clamping_backward_hooks(model):
        return gradient_maps(model, images, target, **{"layer": None, "channel": None, "neuron": None,
                                                       "reduce": "none", **kwargs})


@contextmanager
def _clamping_backward_hooks(model: nn.Module):
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    flags = [(m.inplace, m._is_full_backward_hook) for m in activations]  # the hooks set the second
    handles = []
    try:
        for module in activations:
            module.inplace = False
            handles.append(module.register_full_backward_hook(lambda m, grad_in, grad_out: (grad_in[0].clamp(min=0),)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, (inplace, full_hook) in zip(activations, flags):
            module.inplace, module._is_full_backward_hook = inplace, full_hook
