"""Feature vectors in 2-D (PCA, t-SNE) and pictures of them: thumbnail maps, neighbour rows."""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from PIL import Image, ImageOps

from pyfastviz._inputs import check_choice
from pyfastviz.models import image_grid

from .features import _check_features

BACKENDS = ("torch", "sklearn")
EXACT_PCA_SIZE = 4096  # min(N, D) up to which the torch backend's PCA is an exact eigendecomposition


def pca(features: torch.Tensor, k: int = 2, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of features (N, D), centred.

    backend "torch": on the features' device, exact (an eigendecomposition of the D x D covariance
    or the N x N Gram matrix, float64) up to min(N, D) = EXACT_PCA_SIZE, beyond it torch.pca_lowrank
    (randomised, seeded: the same result every call; its ratios may run low where the spectrum
    is flat); "sklearn": scikit-learn's PCA.
    Each component's sign makes its largest loading positive. Returns (coords (N, k),
    explained_variance_ratio (k,)), float32 on the features' device.
    """
    features = _check_features(features, "features")
    check_choice(backend, "backend", BACKENDS)
    n, d = features.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 feature rows, got N={n}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(n, d):
        raise ValueError(f"k must be an int in [1, min(N, D) = {min(n, d)}], got {k!r}")
    x = features.detach().to(torch.promote_types(features.dtype, torch.float32))
    x = x - x.mean(0)
    if backend == "sklearn":
        from sklearn.decomposition import PCA

        fitted = PCA(n_components=k, svd_solver="full").fit(x.cpu().double().numpy())
        components = torch.from_numpy(fitted.components_).to(x)
        ratio = torch.from_numpy(fitted.explained_variance_ratio_).to(x)
    else:
        components, variances = (_exact_components if min(n, d) <= EXACT_PCA_SIZE else _randomised_components)(x, k)
        total = torch.linalg.vector_norm(x, dtype=torch.float64).square()  # the summed squares, no float64 copy
        ratio = variances / total.clamp_min(torch.finfo(torch.float64).tiny)
    signs = components.gather(1, components.abs().argmax(1, keepdim=True)).sign()
    components = components * torch.where(signs == 0, 1, signs)
    return (x @ components.T).float(), ratio.float()


def _exact_components(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top k principal directions (k, D) of centred x (N, D), in x's dtype, and their summed
    squares (k,), float64: eigenvectors of x^T x, or of x x^T mapped through x^T when N < D."""
    wide = x.double()
    n, d = wide.shape
    values, vectors = torch.linalg.eigh(wide.T @ wide if d <= n else wide @ wide.T)  # ascending
    values, vectors = values[-k:].flip(0).clamp_min(0), vectors[:, -k:].flip(1)
    if d > n:  # v = x^T u / |x^T u| for the Gram matrix's eigenvectors u
        vectors = torch.nn.functional.normalize(wide.T @ vectors, dim=0, eps=torch.finfo(torch.float64).tiny)
    return vectors.T.to(x.dtype), values


def _randomised_components(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As _exact_components, from torch.pca_lowrank (seeded, the global RNG untouched)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        _, s, v = torch.pca_lowrank(x, q=min(k + 10, *x.shape), center=False, niter=6)
    return v[:, :k].T, s[:k].double() ** 2


def tsne(features: torch.Tensor, k: int = 2, perplexity: float = 30.0, seed: int = 0) -> torch.Tensor:
    """scikit-learn's t-SNE of features (N, D) into (N, k) coordinates (CPU, float32), from a PCA
    initialisation (seed: its random_state). A perplexity >= N is clipped to N - 1 with a warning
    (tiny sets); identical rows only all land at the origin, with a warning."""
    from sklearn.manifold import TSNE

    features = _check_features(features, "features")
    n = features.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 feature rows, got N={n}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= features.shape[1]:
        raise ValueError(f"k must be an int in [1, D={features.shape[1]}] (its PCA start needs k feature "
                         f"dimensions), got {k!r}")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not perplexity > 0:
        raise ValueError(f"perplexity must be a number > 0, got {perplexity!r}")
    if torch.equal(features.amin(0), features.amax(0)):  # no spread for the PCA start (sklearn would crash)
        warnings.warn(f"t-SNE of {n} identical feature rows: every point is at the origin", RuntimeWarning,
                      stacklevel=2)
        return torch.zeros(n, k)
    if perplexity >= n:
        warnings.warn(f"perplexity={perplexity} needs more than N={n} points; using perplexity={n - 1}",
                      RuntimeWarning, stacklevel=2)
        perplexity = n - 1
    method = "barnes_hut" if k < 4 else "exact"
    coords = TSNE(n_components=k, perplexity=perplexity, random_state=seed, init="pca", method=method
                  ).fit_transform(features.detach().cpu().double().numpy())
    return torch.from_numpy(coords).float()


def embedding_image(images: Sequence[Image.Image], coords: torch.Tensor, size: int = 1024, thumb: int = 64,
                    background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A size x size canvas with a thumbnail (at most thumb x thumb) of each image placed at
    its 2-D coordinate, coords (N, 2), scaled to fill the canvas; later images on top."""
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be an (N, 2) tensor, got {getattr(coords, 'shape', type(coords).__name__)}")
    if len(images) != coords.shape[0] or len(images) == 0:
        raise ValueError(f"images ({len(images)}) and coords ({coords.shape[0]} rows) must match and be non-empty")
    if not torch.isfinite(coords).all():
        raise ValueError(f"coords has NaN or inf in {int((~torch.isfinite(coords)).any(1).sum())} row(s)")
    if not 0 < thumb <= size:
        raise ValueError(f"thumb must be in [1, size={size}], got {thumb!r}")
    c = coords.detach().double().cpu()
    low, span = c.min(0).values, (c.max(0).values - c.min(0).values).clamp_min(1e-12)
    corners = ((c - low) / span * (size - thumb)).round().long().tolist()
    canvas = Image.new("RGB", (size, size), background)
    for image, (x, y) in zip(images, corners):
        tile = image.convert("RGB")
        tile.thumbnail((thumb, thumb))
        canvas.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
    return canvas


def neighbours_figure(query: Image.Image, neighbours: Sequence[Image.Image], thumb: int = 128,
                      border: int = 4, colour: tuple[int, int, int] = (220, 40, 40)) -> Image.Image:
    """One row: the query (framed in `colour`) then its neighbours, nearest first, as thumbnails."""
    if len(neighbours) == 0:
        raise ValueError("neighbours must hold at least one image")
    tiles = [ImageOps.fit(image.convert("RGB"), (thumb, thumb)) for image in [query, *neighbours]]
    tiles[0] = ImageOps.expand(tiles[0], border=border, fill=colour)
    return image_grid(tiles, ncols=len(tiles), pad=border)
