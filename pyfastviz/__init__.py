"""pyfastviz: visualizing and understanding CNNs in PyTorch, made fast.

Techniques take a model (nn.Module) and a preprocessed (N, C, H, W) batch; see
pyfastviz.models for the default model, images and layer taps.
"""

from pyfastviz.guided import guided_backprop
from pyfastviz.occlusion import occlusion
from pyfastviz.saliency import saliency

__version__ = "0.1.0"
__all__ = ["guided_backprop", "occlusion", "saliency"]
