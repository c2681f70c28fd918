"""Drop-in modules on pyfastviz's ops: InstanceNorm2d and ConditionalInstanceNorm2d.

Both run pyfastviz.ops.instance_norm (the Triton kernel on CUDA tensors, ATen's batch_norm
kernels elsewhere), with the ReLU that usually follows fused in when relu=True.
"""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import nn

from pyfastviz.ops import instance_norm


class InstanceNorm2d(nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d with the same arguments, defaults and state_dict keys.

    relu: also apply ReLU (fused). Input (N, C, H, W) or unbatched (C, H, W). With
    track_running_stats=True the running statistics are torch's business: that case runs
    torch's implementation (followed by ReLU when relu=True).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, relu: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.relu = relu

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 3:
            return self.forward(input[None])[0]
        if input.dim() != 4:
            raise ValueError(f"InstanceNorm2d expects (N, C, H, W) or (C, H, W) input, got shape {tuple(input.shape)}")
        if input.shape[1] != self.num_features:
            if self.affine:
                raise ValueError(f"InstanceNorm2d({self.num_features}) got input with {input.shape[1]} channels")
            warnings.warn(f"InstanceNorm2d({self.num_features}) got input with {input.shape[1]} channels; without "
                          "affine, num_features is not used (as in torch)", UserWarning, stacklevel=2)
        if input.shape[2] * input.shape[3] == 1 and (self.training or not self.track_running_stats):
            raise ValueError(f"InstanceNorm2d needs more than 1 spatial element to normalise (as torch), got input "
                             f"size {tuple(input.shape)}")
        if self.track_running_stats:
            output = super().forward(input)
            return torch.relu(output) if self.relu else output
        return instance_norm(input, self.weight, self.bias, eps=self.eps, relu=self.relu)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")


class ConditionalInstanceNorm2d(nn.Module):
    """Conditional instance norm (Dumoulin et al., 2017): one scale and shift per style.

    weight, bias: (num_styles, num_features), initialised to 1 and 0. forward(x, styles):
    x (N, C, H, W); styles an int (every image), a (N,) integer tensor of style indices, or a
    (N, num_styles) float tensor of blend weights (each image's scale and shift are that
    weighted sum of the styles' rows; rows usually sum to 1). One kernel launch per batch,
    whatever mix of styles it holds.
    """

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5, *, relu: bool = False,
                 device=None, dtype=None):
        super().__init__()
        if num_styles < 1:
            raise ValueError(f"num_styles must be >= 1, got {num_styles}")
        self.num_features, self.num_styles, self.eps, self.relu = num_features, num_styles, eps, relu
        self.weight = nn.Parameter(torch.ones(num_styles, num_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, styles) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"ConditionalInstanceNorm2d({self.num_features}) expects (N, {self.num_features}, H, W) "
                             f"input, got shape {tuple(x.shape)}")
        return self.forward_mixture(x, style_mixture(styles, x.shape[0], self.num_styles, self.weight))

    def forward_mixture(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """forward with blend weights mix (N, num_styles) that style_mixture already made: no
        checks, so no host syncs (a network checks its styles once, not in every layer). The
        (N, C) scale and shift are blended in the parameters' dtype, also under autocast."""
        with torch.autocast(self.weight.device.type, enabled=False):
            weight, bias = mix @ self.weight, mix @ self.bias
        return instance_norm(x, weight, bias, eps=self.eps, relu=self.relu)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}" + (", relu=True" if self.relu else "")


def style_mixture(styles, batch: int, num_styles: int, like: torch.Tensor) -> torch.Tensor:
    """(batch, num_styles) blend weights (like's dtype and device) from an int, (N,) indices or (N, S) weights."""
    if isinstance(styles, numbers.Integral) and not isinstance(styles, bool):  # Python and numpy ints
        styles = torch.full((batch,), int(styles), dtype=torch.long)
    if not isinstance(styles, torch.Tensor) or styles.dtype == torch.bool or styles.is_complex():
        kind = f"a {styles.dtype} tensor" if isinstance(styles, torch.Tensor) else type(styles).__name__
        raise TypeError(f"styles must be an int or an integer or real tensor, got {kind}")
    if not styles.is_floating_point():
        if styles.shape != (batch,):
            raise ValueError(f"style indices must have shape ({batch},), got {tuple(styles.shape)}")
        if styles.numel() and not 0 <= int(styles.min()) <= int(styles.max()) < num_styles:
            raise ValueError(f"style indices must be in [0, {num_styles}), got {styles.tolist()}")
        # one_hot where the indices are, then a non-blocking copy: CPU indices never sync with the GPU
        return nn.functional.one_hot(styles.long(), num_styles).to(like.device, like.dtype, non_blocking=True)
    if styles.shape != (batch, num_styles):
        raise ValueError(f"style weights must have shape ({batch}, {num_styles}), got {tuple(styles.shape)}")
    if not torch.isfinite(styles).all():
        raise ValueError("style weights must be finite")
    return styles.to(like.device, like.dtype)
