"""Context managers that leave the user's model exactly as found."""

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluation_mode(model: nn.Module):
    """Runs the body with model.eval(); restores every submodule's training flag, also on error."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def gradients_enabled():
    """Autograd on for the body, also inside the caller's torch.no_grad() or torch.inference_mode()."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable_for_autograd(tensor: torch.Tensor) -> torch.Tensor:
    """tensor, copied when made under torch.inference_mode (such tensors cannot enter autograd)."""
    return tensor.clone() if tensor.is_inference() else tensor
