"""Looking inside the model: filters, activations, feature-space neighbours, 2-D embeddings
(PCA, t-SNE) and the image patches that excite a channel most."""

from .activations import activation_grid, activations, channel_statistics, strongest_channels
from .embedding import embedding_image, neighbours_figure, pca, tsne
from .features import extract_features
from .filters import filter_grid, filters_image, first_layer_filters
from .neighbours import nearest_neighbours
from .patches import Patch, receptive_field_boxes, top_patches

__all__ = [
    "first_layer_filters", "filters_image", "filter_grid",
    "activations", "activation_grid", "channel_statistics", "strongest_channels",
    "extract_features", "nearest_neighbours", "pca", "tsne", "embedding_image", "neighbours_figure",
    "top_patches", "receptive_field_boxes", "Patch",
]
