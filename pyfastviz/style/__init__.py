"""Texture synthesis (Gatys et al. 2015) and neural style transfer (Gatys et al. 2016).

Style is the Gram matrices of feature maps at several layers (pyfastviz.ops.gram, computed
once per style in a StyleTargets); the per-step style loss is pyfastviz.ops.gram_style_loss
(fused on the GPU, the reference on the CPU). Images are optimised as pixels folded into [0, 1]
(so they stay in range without clipping), fed to the model normalised.

    targets.py   layers, StyleTargets, luminance helpers, checks
    solver.py    L-BFGS / Adam on the image
    memory.py    peak-memory estimate and check
    transfer.py  texture_synthesis, style_transfer, image_input (PIL image -> model input)
"""

from pyfastviz.style.memory import check_memory, estimate_peak_memory
from pyfastviz.style.targets import (
    StyleLayers,
    StyleTargets,
    check_layers,
    default_layers,
    extract_features,
    rgb_to_yiq,
    to_luminance,
)
from pyfastviz.style.transfer import StyleResult, image_input, style_transfer, texture_synthesis, total_variation

__all__ = [
    "StyleLayers", "StyleResult", "StyleTargets", "check_layers", "check_memory", "default_layers",
    "estimate_peak_memory", "extract_features", "image_input", "rgb_to_yiq", "style_transfer", "texture_synthesis",
    "to_luminance", "total_variation",
]
