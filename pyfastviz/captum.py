"""Captum-signature adapters: change only the import, keep the call.

    from pyfastviz.captum import Occlusion      # instead of captum.attr.Occlusion
    attributions = Occlusion(model).attribute(inputs, sliding_window_shapes=(3, 16, 16),
                                              strides=(3, 8, 8), target=281, perturbations_per_eval=64)
"""

from collections.abc import Callable

import torch

from pyfastviz import ops
from pyfastviz._inputs import check_images, resolve_targets
from pyfastviz.occlusion import _baseline, occlusion_drops


class Occlusion:
    """captum.attr.Occlusion on pyfastviz's occlusion ops, for one input tensor (N, C, H, W)."""

    def __init__(self, forward_func: Callable):
        self.forward_func = forward_func

    def attribute(self, inputs: torch.Tensor, sliding_window_shapes, strides=None, baselines=None, target=None,
                  additional_forward_args=None, perturbations_per_eval: int = 1, show_progress: bool = False):
        """Captum's Occlusion.attribute: (N, C, H, W) float attributions, each element the mean
        drop of the target output over the windows covering it. Like Captum, the model is run
        as it is (no eval switch) and the stride may not exceed the window."""
        if isinstance(inputs, tuple):
            if len(inputs) != 1:
                raise TypeError("pyfastviz.captum.Occlusion supports one input tensor, got a tuple of several")
            return (self.attribute(inputs[0], sliding_window_shapes[0] if _nested(sliding_window_shapes)
                                   else sliding_window_shapes, strides, baselines, target, additional_forward_args,
                                   perturbations_per_eval, show_progress),)
        check_images(inputs)
        size = tuple(inputs.shape[1:])
        window = tuple(sliding_window_shapes)
        stride = (strides,) * 3 if strides is None or isinstance(strides, int) else tuple(strides)
        stride = tuple(1 if s is None else s for s in stride)
        ops.occlusion.check_geometry(size, window, stride)
        if any(s > w and w < d for s, w, d in zip(stride, window, size)):
            raise ValueError(f"strides {stride} cannot be larger than sliding_window_shapes {window} where the window "
                             "does not cover the whole dimension (as in Captum)")
        if not isinstance(perturbations_per_eval, int) or perturbations_per_eval < 1:
            raise ValueError(f"perturbations_per_eval must be a positive int, got {perturbations_per_eval!r}")
        extra = () if additional_forward_args is None else (
            additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,))

        def forward(x):
            outputs = self.forward_func(x, *extra)
            return outputs[:, None] if outputs.dim() == 1 else outputs

        with torch.no_grad():
            indices, _ = resolve_targets(0 if target is None else target, inputs.shape[0])
            drops = occlusion_drops(forward, lambda out, idx: out.float().gather(1, idx), inputs,
                                    _baseline(0.0 if baselines is None else baselines, inputs), window, stride,
                                    indices, perturbations_per_eval * inputs.shape[0], progress=show_progress)
        return ops.occlusion_scatter(drops[:, 0], window, stride, size)


def _nested(shapes) -> bool:
    return len(shapes) > 0 and isinstance(shapes[0], (tuple, list))
