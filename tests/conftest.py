"""Shared fixtures."""

import pytest

from pyfastviz.models import load_model


@pytest.fixture(scope="session")
def default_model():
    """The embedded ImageNet EfficientNet-Lite0 (CPU, eval), loaded once per test session."""
    return load_model()
