"""Johnson et al.'s image transformation network, as pytorch/examples' fast_neural_style
`transformer_net.py` builds it (same module names, so the same state_dict keys), on
pyfastviz.nn instance norms with the following ReLU fused in.

Pixel convention (pytorch/examples'): RGB in [0, 255] in, RGB roughly in [0, 255] out
(unclamped), so their checkpoints work unchanged.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from pyfastviz._inputs import check_index
from pyfastviz.nn import ConditionalInstanceNorm2d, InstanceNorm2d, style_mixture

MULTIPLE = 4  # two stride-2 convolutions down, two x2 upsamplings up
MIN_SIDE = 8  # the residual blocks' reflection padding needs 2 x 2 maps at 1/4 resolution


class ConvLayer(nn.Module):
    """ReflectionPad2d(kernel_size // 2) then Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(ConvLayer):
    """Nearest-neighbour upsampling by `upsample`, then a ConvLayer (no checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int = 2):
        super().__init__(in_channels, out_channels, kernel_size, stride)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=self.upsample, mode="nearest"))


def _norm(channels: int, num_styles: int | None, relu: bool) -> nn.Module:
    if num_styles is None:
        return InstanceNorm2d(channels, affine=True, relu=relu)
    return ConditionalInstanceNorm2d(channels, num_styles, relu=relu)


def _apply(norm: nn.Module, x: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
    """norm(x); a conditional norm takes the network's (N, S) blend weights, checked once per forward."""
    return norm.forward_mixture(x, mix) if isinstance(norm, ConditionalInstanceNorm2d) else norm(x)


class ResidualBlock(nn.Module):
    """x + in2(conv2(relu(in1(conv1(x))))), 3x3 convolutions."""

    def __init__(self, channels: int, num_styles: int | None = None):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = _norm(channels, num_styles, relu=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = _norm(channels, num_styles, relu=False)

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """mix: (N, S) blend weights from pyfastviz.nn.style_mixture (multi-style blocks)."""
        out = _apply(self.in1, self.conv1(x), mix)
        return _apply(self.in2, self.conv2(out), mix) + x


class TransformerNet(nn.Module):
    """The fast-style network. num_styles=None: one style, instance norms (pytorch/examples'
    keys and shapes); num_styles=S: conditional instance norms with (S, C) weight and bias.

    forward(x, styles=None): x (N, 3, H, W) RGB in [0, 255] -> (N, 3, H, W), any H, W >= 1: the
    input is padded (edge replicated, right and bottom) to a multiple of 4 (at least 8) and the
    output cropped back. styles (multi-style only): an int, (N,) style indices or (N, S) blend
    weights (see pyfastviz.nn.ConditionalInstanceNorm2d).
    """

    def __init__(self, num_styles: int | None = None):
        super().__init__()
        if num_styles is not None and (not isinstance(num_styles, int) or isinstance(num_styles, bool)
                                       or num_styles < 1):
            raise ValueError(f"num_styles must be None or an int >= 1, got {num_styles!r}")
        self.num_styles = num_styles
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = _norm(32, num_styles, relu=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = _norm(64, num_styles, relu=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = _norm(128, num_styles, relu=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(128, num_styles) for _ in range(5))
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = _norm(64, num_styles, relu=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = _norm(32, num_styles, relu=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)

    def forward(self, x: torch.Tensor, styles=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        if self.num_styles is None and styles is not None:
            raise ValueError("styles must be None for a single-style network")
        if self.num_styles is not None and styles is None:
            raise ValueError(f"styles is required for a {self.num_styles}-style network: an int, (N,) indices "
                             f"or (N, {self.num_styles}) blend weights")
        if isinstance(styles, numbers.Integral):  # numpy ints too; bools are refused
            styles = check_index(styles, "styles")
        mix = None if self.num_styles is None else style_mixture(styles, x.shape[0], self.num_styles, self.in1.weight)
        height, width = x.shape[2:]
        pad_h, pad_w = (max(MIN_SIDE, -(-side // MULTIPLE) * MULTIPLE) - side for side in (height, width))
        y = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        y = _apply(self.in1, self.conv1(y), mix)
        y = _apply(self.in2, self.conv2(y), mix)
        y = _apply(self.in3, self.conv3(y), mix)
        for block in (self.res1, self.res2, self.res3, self.res4, self.res5):
            y = block(y, mix)
        y = _apply(self.in4, self.deconv1(y), mix)
        y = _apply(self.in5, self.deconv2(y), mix)
        return self.deconv3(y)[:, :, :height, :width]
