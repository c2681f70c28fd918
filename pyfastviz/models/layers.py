"""Layers by their `model.named_modules()` name, and a context manager that records their outputs."""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_map_only

from pyfastviz._state import evaluation_mode


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` in `model.named_modules()` ("" is the model itself)."""
    if not isinstance(name, str):
        raise TypeError(f"layer must be a module name (str, see layer_names(model)), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    # a wrapped model (torch.compile's _orig_mod., DataParallel's module.) names the same layer with a prefix
    nested = [n for n in modules if n.endswith(f".{name}")]
    close = nested[:5] or difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.6)
    hint = f"; close names: {', '.join(map(repr, close))}" if close else "; see layer_names(model)"
    raise ValueError(f"layer={name!r} is not a module of {type(model).__name__}{hint}")


@contextmanager
def run_eagerly(model: nn.Module) -> Iterator[None]:
    """Within it, a model with torch.compile'd parts (torch.compile(model), module.compile())
    runs them eagerly, so that forward hooks added after it was compiled fire (once it has
    run, compiled code no longer checks for new hooks) and its backward can be batched
    (vmap has no rule for a compiled backward's out= ops); other models are left alone."""
    if any(hasattr(m, "_orig_mod") or getattr(m, "_compiled_call_impl", None) is not None for m in model.modules()):
        with torch.compiler.set_stance("force_eager"):
            yield
    else:
        yield


def layer_names(model: nn.Module, kind: type | tuple[type, ...] | None = None) -> list[str]:
    """Names of `model`'s submodules (the model itself excluded), in order, only those that
    are instances of `kind` when given."""
    return [n for n, m in model.named_modules() if n and (kind is None or isinstance(m, kind))]


def layer_shapes(model: nn.Module, images: torch.Tensor) -> list[tuple[str, str, list]]:
    """For each named submodule, in order: (name, its class name, the shape of its output at
    each call of one forward of images, in eval mode and without gradients); a module that did
    not run has []. The model is left as found."""
    names = layer_names(model)
    with evaluation_mode(model), torch.no_grad(), ActivationTap(model, names) as tap:
        model(images)
    modules = dict(model.named_modules())
    return [(name, type(modules[name]).__name__,
             [tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__ for out in tap.calls(name)])
            for name in names]


class ActivationTap:
    """Records the outputs of named layers during forward passes inside a `with` block.

    A module can run several times per forward (EfficientNet-Lite reuses one ReLU6 per block),
    so every call's output is kept, in order. Hooks are removed on exit, also on an exception;
    the recordings stay readable after the block and are cleared when it is entered again.

        with ActivationTap(model, ["layer1", "layer2"]) as tap:
            model(x)
        tap["layer1"]  # (N, C, H, W) output of the single call

    With `detach=False` the outputs keep their autograd graph (for objectives on layers).
    Tensor outputs (also inside tuples, lists and dicts) are recorded as copies, so an in-place
    op after the layer (torchvision's Conv2d -> ReLU(inplace=True)) does not change them. A
    torch.compile'd model runs eagerly inside the block (run_eagerly). `tap.channels_first(name, N)`
    reads an output as (N, C, ...) feature maps, refusing those whose axis 1 is not the channels.
    """

    def __init__(self, model: nn.Module, names: str | Sequence[str], detach: bool = True):
        names = [names] if isinstance(names, str) or not isinstance(names, Iterable) else list(dict.fromkeys(names))
        self._model = model
        self._modules = {name: find_layer(model, name) for name in names}
        self._detach = detach
        self._outputs: dict[str, list] = {name: [] for name in names}
        self._channels_last: dict[str, list[bool]] = {name: [] for name in names}  # per call, see channels_first
        self._marked: dict[int, weakref.ref] = {}  # this forward's channels-last tensors, by id
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._eager = ExitStack()

    def _hook(self, name: str):
        def copy(tensor: torch.Tensor) -> torch.Tensor:  # a later in-place op (ReLU(inplace=True)) may overwrite it
            return tensor.detach().clone() if self._detach else tensor.clone()

        def record(module, inputs, output):  # tensors inside tuples, lists and dicts (LSTM, attention) too
            self._outputs[name].append(tree_map_only(torch.Tensor, copy, output))
            self._channels_last[name].append(self._computes_channels_last(module, inputs, output))

        return record

    def _computes_channels_last(self, module: nn.Module, inputs, output) -> bool:
        """Whether a module call gave a tensor with channels last: an nn.Linear or nn.LayerNorm over
        the last axis of a >= 3-D tensor, or the same-shaped result of a module (an activation,
        dropout, a block) applied to such a tensor."""
        if not isinstance(output, torch.Tensor) or output.dim() < 3:
            return False
        if isinstance(module, nn.Linear):
            return True
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:  # subclasses (timm's
            width = module.normalized_shape[0]  # LayerNorm2d) may permute: read the output's axes
            return type(module) is nn.LayerNorm or output.shape[-1] == width != output.shape[1]
        source = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if source is None or source.shape != output.shape:
            return False
        marked = self._marked.get(id(source))
        return marked is not None and marked() is source

    def _mark_channels_last(self, module, inputs, output) -> None:
        if self._computes_channels_last(module, inputs, output):  # forgotten when the tensor is freed
            key = id(output)
            self._marked[key] = weakref.ref(output, lambda _: self._marked.pop(key, None))

    def __enter__(self) -> ActivationTap:
        if self._handles:
            raise RuntimeError("this ActivationTap is already active; it cannot be nested in itself")
        self.clear()
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
            modules = list(self._model.modules())
            if any(isinstance(m, nn.LayerNorm) for m in modules) or sum(isinstance(m, nn.Linear) for m in modules) > 1:
                for module in modules:  # after the taps: a tapped call is judged on its own
                    self._handles.append(module.register_forward_hook(self._mark_channels_last))
            self._eager.enter_context(run_eagerly(self._model))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._eager.close()

    def clear(self) -> None:
        """Forget every recorded output."""
        for outputs in (*self._outputs.values(), *self._channels_last.values()):
            outputs.clear()
        self._marked.clear()

    def calls(self, name: str) -> list[torch.Tensor]:
        """All outputs `name` produced, one per call, in call order."""
        if name not in self._outputs:
            raise KeyError(f"layer {name!r} is not tapped; tapped: {', '.join(map(repr, self._outputs))}")
        return list(self._outputs[name])

    def __getitem__(self, name: str) -> torch.Tensor:
        """The output of `name`'s single call."""
        outputs = self.calls(name)
        if not outputs:
            raise ValueError(f"layer {name!r} did not run: no output recorded (a container such as nn.ModuleList is "
                             "never called itself: pick one of its submodules; with a tap, run the model inside the "
                             "`with`)")
        if len(outputs) > 1:
            raise ValueError(
                f"layer {name!r} fired {len(outputs)} times in one forward (the module is reused), so its output "
                "is ambiguous: pick a module that runs once, e.g. the block holding it (layer_shapes(model, images) "
                f"or `pyfastviz layers` lists every call); with a tap, read all of them: tap.calls({name!r})"
            )
        return outputs[0]

    def channels_first(self, name: str, batch: int) -> torch.Tensor:
        """The output of `name`'s single call, checked to be what units and feature maps are read
        from: one tensor (N, C, *spatial) whose first axis is the `batch` of N images and whose axis
        1 holds the channels. A ValueError naming the layer refuses other outputs (lists, tuples),
        a first axis that is not the batch (a transformer's patches folded into it), and channels
        last: an nn.Linear or nn.LayerNorm over the last axis ((N, H, W, C) inside ConvNeXt blocks,
        (N, tokens, C)), or an activation, dropout or block applied to such a tensor."""
        output = self[name]
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer={name!r} outputs a {type(output).__name__}, not one tensor: pick a layer whose "
                             "output is a tensor (e.g. one of its submodules)")
        shape = tuple(output.shape)
        if output.dim() < 2 or shape[0] != batch:
            raise ValueError(f"layer={name!r} outputs shape {shape}, whose first axis is not the batch of {batch} "
                             "image(s) (patches or tokens folded into it, as in a vision transformer's blocks): pick "
                             "a layer whose output is (N, C, ...)")
        if self._channels_last[name][0]:
            raise ValueError(f"layer={name!r} outputs {shape} with channels last ((N, H, W, C) or (N, tokens, C): an "
                             "nn.Linear or nn.LayerNorm over the last axis, or a module applied to its output), and "
                             "channels are read from axis 1: pick the enclosing block or a convolution")
        return output


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of `layer`'s first call on `x`, with its autograd graph; the forward pass
    stops there (the rest of the network is not run). The hook is removed, also on error."""
    module = find_layer(model, layer)
    captured = []

    def hook(mod, inputs, output):
        captured.append(output)
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        with run_eagerly(model):
            model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer={layer!r} did not run in the model's forward pass")
    output = captured[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"layer={layer!r} must output a tensor, got {type(output).__name__}")
    return output


def check_layer_once(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """Runs the whole model once (no grad, eval mode is the caller's job) and returns `layer`'s
    detached output; clear errors when the layer is unknown, does not run, or is reused."""
    with torch.no_grad(), ActivationTap(model, layer) as tap:
        model(images)
    output = tap[layer]
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        raise TypeError(f"layer={layer!r} must output a floating-point tensor, got {type(output).__name__}")
    return output
