"""Fast neural style (Johnson et al. 2016) with instance norm (Ulyanov et al. 2016) and
multi-style conditional instance norm (Dumoulin et al. 2017).

    result = train_style(style_image)                  # TrainResult(network, history)
    pictures = stylize(result.network, [photo, ...])   # PIL images in, PIL images out
    save_style_network(result.network, "style.safetensors"); load_style_network(path)

Modules: network (TransformerNet, pytorch/examples-compatible), images (content sampling,
style images), loss (PerceptualLoss), train (train_style, checkpoints), stylize, saving,
files (safe atomic tensor files).
"""

from .images import SAMPLE_PHOTOS, ContentSampler
from .loss import PerceptualLoss
from .network import TransformerNet
from .saving import load_style_network, save_style_network
from .stylize import stylize
from .train import TrainResult, train_style

__all__ = ["TransformerNet", "train_style", "TrainResult", "stylize", "save_style_network", "load_style_network",
           "PerceptualLoss", "ContentSampler", "SAMPLE_PHOTOS"]
