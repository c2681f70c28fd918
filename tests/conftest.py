"""Shared fixtures."""

import pytest

from pyfastviz.models import load_model


@pytest.fixture(scope="session")
def default_model():
    """The embedded ImageNet EfficientNet-Lite0 (CPU, eval), loaded once per test session."""
    return load_model()


@pytest.fixture(scope="session")
def cat_quadrant_canvases(default_model):
    """The cat of skimage's chelsea in each quadrant of a 224 px canvas of grass, brick and gravel.

    Returns a list of (quadrant index 0..3 in reading order, (1, 3, 224, 224) batch).
    """
    from PIL import Image

    from pyfastviz.models import sample_image

    size = default_model.preprocess.size
    half = size // 2

    def tile(name):
        image = sample_image(name)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side)).resize((half, half), Image.LANCZOS)

    canvases = []
    for quadrant in range(4):
        tiles = [tile(name) for name in ("grass", "brick", "gravel")]
        tiles.insert(quadrant, tile("chelsea"))
        canvas = Image.new("RGB", (size, size))
        for index, image in enumerate(tiles):
            canvas.paste(image, ((index % 2) * half, (index // 2) * half))
        canvases.append((quadrant, default_model.preprocess(canvas)[None]))
    return canvases


@pytest.fixture
def cat(tmp_path):
    """skimage's chelsea saved as tmp_path / "cat.jpg" (a photo file for the CLI)."""
    from pyfastviz.models import sample_image

    path = tmp_path / "cat.jpg"
    sample_image("chelsea").save(path)
    return path
