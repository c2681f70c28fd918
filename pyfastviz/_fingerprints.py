"""sha256 fingerprints that tell a resumed run whether it is given what it was started with."""

import hashlib
from collections.abc import Iterable

import torch
from torch import nn


def lines_sha256(lines: Iterable[str]) -> str:
    """sha256 hex of text lines (one per line, UTF-8; a file name's undecodable bytes as they were)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 hex of (name, tensor) pairs: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in named:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """sha256 hex of the model's parameters and buffers (its state_dict)."""
    return tensors_sha256(model.state_dict().items())
