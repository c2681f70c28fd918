"""pyfastviz: visualizing and understanding CNNs in PyTorch, made fast.

Techniques take a model (nn.Module) and a preprocessed (N, C, H, W) batch; see
pyfastviz.models for the default model, images and layer taps.
"""

from pyfastviz.adversarial import fgsm, fooling_images
from pyfastviz.classvis import class_visualization
from pyfastviz.deepdream import deepdream
from pyfastviz.guided import guided_backprop
from pyfastviz.inversion import invert_features
from pyfastviz.occlusion import occlusion
from pyfastviz.saliency import saliency
from pyfastviz.style import StyleTargets, style_transfer, texture_synthesis
from pyfastviz.sweep import sweep

__version__ = "0.1.0"
__all__ = [
    "StyleTargets", "class_visualization", "deepdream", "fgsm", "fooling_images", "guided_backprop",
    "invert_features", "occlusion", "saliency", "style_transfer", "sweep", "texture_synthesis",
]
