"""Captum-signature adapters: change only the import, keep the call.

    from pyfastviz.captum import Occlusion      # instead of captum.attr.Occlusion
    attributions = Occlusion(model).attribute(inputs, sliding_window_shapes=(3, 16, 16),
                                              strides=(3, 8, 8), target=281, perturbations_per_eval=64)
"""

import functools
import re
from collections.abc import Callable

import torch

from pyfastviz import ops
from pyfastviz._inputs import check_images, resolve_targets
from pyfastviz.occlusion import baseline_fill, occlusion_drops, score_dtype


def _as_captum_method(method: Callable) -> Callable:
    """A method that carries __wrapped__ as Captum's (logging-decorated) attribute methods do:
    captum.attr.NoiseTunnel calls attribute.__wrapped__(attribution, inputs, **kwargs)."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return method(*args, **kwargs)

    return wrapper


class Occlusion:
    """captum.attr.Occlusion on pyfastviz's occlusion ops, for one input tensor (N, C, H, W),
    with the attribute/method surface Captum's wrappers (NoiseTunnel) read."""

    def __init__(self, forward_func: Callable):
        self.forward_func = forward_func

    @property
    def multiplies_by_inputs(self) -> bool:
        return True  # as Captum's perturbation attributions say

    def has_convergence_delta(self) -> bool:
        return False

    @classmethod
    def get_name(cls) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__)

    @_as_captum_method
    def attribute(self, inputs: torch.Tensor, sliding_window_shapes, strides=None, baselines=None, target=None,
                  additional_forward_args=None, perturbations_per_eval: int = 1, show_progress: bool = False):
        """Captum's Occlusion.attribute: (N, C, H, W) float32 attributions (as Captum returns them,
        also for float64 inputs; fp16/bf16 outputs are accumulated in float32, where Captum
        accumulates in theirs), each element the mean drop of the target output over the
        windows covering it (a 1-tuple for a 1-tuple of inputs).
        As in Captum: the model is run as it is (no eval switch); the stride may not exceed the
        window where the window does not cover the whole dimension; a 1-tuple of windows, strides
        or baselines is that input's; tensor additional_forward_args (but 0-d ones) are repeated
        along dim 0 once per perturbation in a forward. Unlike Captum 0.9, which then returns a
        result of N * classes rows, target=None with several outputs per example raises. Window
        positions are numbered row-major (Captum varies the row fastest), so with
        perturbations_per_eval > 1 a forward holds other positions than Captum's: the same result
        for models whose outputs do not depend on the rest of the batch (eval mode), not for
        train-mode batch norm."""
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise TypeError("pyfastviz.captum.Occlusion supports one input tensor, got a tuple of several")
            return (self.attribute(inputs[0], sliding_window_shapes, strides, baselines, target, additional_forward_args,
                                   perturbations_per_eval, show_progress),)
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
            raise ValueError(f"inputs must be one (N, C, H, W) tensor (pyfastviz.captum.Occlusion takes image "
                             f"batches), got {tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else inputs!r}")
        check_images(inputs, name="inputs")
        size, n = tuple(inputs.shape[1:]), inputs.shape[0]
        window = _one_window(sliding_window_shapes)
        if isinstance(strides, tuple) and len(strides) == 1:  # as Captum: a 1-tuple holds the one input's
            strides = strides[0]
        strides = 1 if strides is None else strides
        stride = (strides,) * 3 if isinstance(strides, int) else tuple(strides)
        baselines = baselines[0] if isinstance(baselines, tuple) else baselines
        ops.occlusion.check_geometry(size, window, stride)
        if any(s > w and w < d for s, w, d in zip(stride, window, size)):
            raise ValueError(f"strides {stride} cannot be larger than sliding_window_shapes {window} where the window "
                             "does not cover the whole dimension (as in Captum)")
        if isinstance(perturbations_per_eval, bool) or not isinstance(perturbations_per_eval, int) \
                or perturbations_per_eval < 1:
            raise ValueError(f"perturbations_per_eval must be a positive int, got {perturbations_per_eval!r}")
        extra = () if additional_forward_args is None else (
            additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,))

        def forward(x):
            copies = x.shape[0] // n  # perturbations in this forward (1 in the first, unoccluded pass)
            outputs = self.forward_func(x, *(torch.cat([a] * copies) if isinstance(a, torch.Tensor) and a.dim() else a
                                             for a in extra))
            if not isinstance(outputs, torch.Tensor) or outputs.dim() == 0 or outputs.shape[0] != x.shape[0]:
                got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
                raise ValueError(f"forward_func must return one output per example, ({x.shape[0]}, ...) for "
                                 f"{x.shape[0]} examples, got {got} (aggregated outputs are not supported)")
            if outputs.dim() == 1 and target is not None:
                raise ValueError("forward_func returns one value per example (N,), so there is nothing to "
                                 f"target: pass target=None (as Captum requires), got target={target!r}")
            outputs = outputs[:, None] if outputs.dim() == 1 else outputs
            if target is None and outputs.dim() == 2 and outputs.shape[1] != 1:
                raise ValueError(f"target=None needs one output per example, but forward_func returns "
                                 f"{tuple(outputs.shape)}: pass target= (the class or output index)")
            return outputs

        with torch.no_grad():
            drops = occlusion_drops(forward, lambda out, idx: out.to(score_dtype(out.dtype)).gather(1, idx), inputs,
                                    _captum_baselines(baselines, inputs), window, stride, _captum_targets(target, n),
                                    perturbations_per_eval * n, progress=show_progress)
        return ops.occlusion_scatter(drops[:, 0], window, stride, size).float()


def _one_window(sliding_window_shapes) -> tuple[int, ...]:
    """The one input's window: (C, h, w), or a 1-tuple holding it; several windows are refused."""
    if isinstance(sliding_window_shapes[0], int):
        return tuple(sliding_window_shapes)
    if len(sliding_window_shapes) != 1:
        raise ValueError(f"sliding_window_shapes has {len(sliding_window_shapes)} windows but there is one input "
                         f"tensor (as in Captum: one window per input), got {sliding_window_shapes!r}")
    return tuple(sliding_window_shapes[0])


def _captum_targets(target, n: int) -> torch.Tensor:
    """Captum's target as (n, 1) indices: None (the one output), an int, a one-element tensor or a
    1-tuple (every example), or n ints (list or 1-D tensor) or n 1-tuples. A tuple indexes the output's
    dimensions after the batch, so longer tuples (outputs of more dimensions) are refused."""
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        target = target.reshape(())
    if isinstance(target, tuple):
        target = _output_index(target)
    elif isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        target = [_output_index(t) for t in target]
    indices, per_example_lists = resolve_targets(0 if target is None else target, n)
    if per_example_lists:
        raise ValueError("target must be an int or one int per example (as in Captum); tuple targets for outputs "
                         f"of more than 2 dimensions are not supported, got shape {tuple(indices.shape)}")
    return indices


def _output_index(target: tuple):
    """A Captum tuple target (one index per output dimension after the batch) -> its class index."""
    if len(target) != 1:
        raise ValueError(f"a tuple target indexes the output's dimensions after the batch (as in Captum); the "
                         f"adapter takes (N, classes) outputs, so it needs 1 index, got {target!r} (for one class "
                         "per example pass a list)")
    return target[0]


def _captum_baselines(baselines, inputs: torch.Tensor) -> torch.Tensor:
    """Captum's baselines broadcast against inputs as torch broadcasts (a 1-D tensor runs along W)."""
    fill = torch.as_tensor(0.0 if baselines is None else baselines, dtype=inputs.dtype, device=inputs.device)
    try:
        return baseline_fill(torch.broadcast_to(fill, inputs.shape), inputs)
    except RuntimeError:
        raise ValueError(f"baselines of shape {tuple(fill.shape)} do not broadcast to inputs {tuple(inputs.shape)}"
                         ) from None
