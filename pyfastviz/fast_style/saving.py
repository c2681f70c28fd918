"""Saving and loading trained style networks: pyfastviz's format (see files.py) or
pytorch/examples' plain state_dict (torch.save(net.state_dict())), whose older files also hold
instance norms' running statistics (in*.running_mean/var; num_batches_tracked from newer torch),
dropped here as their stylize code drops them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from pyfastviz._files import write_atomic
from pyfastviz._inputs import check_choice

from .files import read_tensors, write_tensors
from .network import TransformerNet

FORMATS = ("pyfastviz", "state_dict")
TORCH_SAVE_SUFFIXES = (".pth", ".pt", ".model")
_RUNNING_STATS = re.compile(r"in\d+\.(running_mean|running_var|num_batches_tracked)$")


def save_style_network(network: TransformerNet, path: str | os.PathLike, *, format: str | None = None) -> Path:
    """Writes network's weights to path atomically, creating its folder (see pyfastviz._files.write_atomic).
    format: "pyfastviz" (weights and style count, safetensors when importable) or "state_dict"
    (torch.save of the plain state_dict, as pytorch/examples saves; loads there too when
    single-style); None: "state_dict" for a path ending in .pth, .pt or .model (torch.save's
    names), else "pyfastviz". Returns the path."""
    if not isinstance(network, TransformerNet):
        raise TypeError(f"network must be a pyfastviz.fast_style.TransformerNet, got {type(network).__name__}")
    if format is None:
        format = "state_dict" if Path(path).suffix.lower() in TORCH_SAVE_SUFFIXES else "pyfastviz"
    check_choice(format, "format", FORMATS)
    if format == "pyfastviz":
        return write_tensors(path, network.state_dict(), {"kind": "style network", "num_styles": network.num_styles})
    state = {name: t.detach().cpu() for name, t in network.state_dict().items()}
    return write_atomic(path, lambda file: torch.save(state, file))


def load_style_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> TransformerNet:
    """A TransformerNet (eval mode, on device) from a file of save_style_network (either format)
    or a pytorch/examples checkpoint; the style count comes from the file."""
    tensors, meta = read_tensors(path, "fast-style network")
    if meta is not None and meta.get("kind") != "style network":
        raise ValueError(f"{str(path)!r} is a fast-style {meta.get('kind', 'unknown')} file, not a style network "
                         "(a training checkpoint's network is TrainResult.network; save it with save_style_network)")
    state = {name: t for name, t in tensors.items() if not _RUNNING_STATS.search(name)}
    weight = state.get("in1.weight")
    if meta is not None:
        num_styles = meta.get("num_styles")
    elif weight is None or weight.dim() not in (1, 2):
        raise ValueError(f"{str(path)!r} is not a style network's state_dict: no 1-D or 2-D 'in1.weight'")
    else:
        num_styles = None if weight.dim() == 1 else int(weight.shape[0])
    network = TransformerNet(num_styles)
    load_state(network, state, path)
    return network.to(device).eval()


def load_state(network: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """network.load_state_dict(state, strict=True), with mismatches as a ValueError naming path."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r} does not fit the style network: {err}") from None
