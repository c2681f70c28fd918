"""Model zoo (offline), layer lookup and activation taps, and image I/O."""

from .images import (
    SAMPLE_IMAGES,
    gradient_to_pil,
    heatmap_overlay,
    image_grid,
    load_batch,
    load_image,
    map_to_pil,
    normalize_map,
    saliency_overlay,
    saliency_to_pil,
    sample_image,
    save_png,
    tensor_to_pils,
    to_pil,
)
from .layers import ActivationTap, check_layer_once, find_layer, layer_names, layer_output, layer_shapes
from .zoo import LoadedModel, Preprocess, available_models, load_model, preprocess_of

__all__ = [
    "load_model", "available_models", "LoadedModel", "Preprocess", "preprocess_of",
    "find_layer", "ActivationTap", "layer_names", "layer_output", "layer_shapes", "check_layer_once",
    "load_image", "sample_image", "SAMPLE_IMAGES", "load_batch", "to_pil", "tensor_to_pils",
    "image_grid", "normalize_map", "map_to_pil", "gradient_to_pil", "heatmap_overlay", "saliency_to_pil",
    "saliency_overlay", "save_png",
]
