"""Fast-style fixtures."""

import pytest
import torch

from tests.fast_style.tiny import TinyLossNet


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyLossNet()
