"""Reading weights files safely (torch.load(weights_only=True)): the state dict inside common
checkpoint wrappers, and torch.load's errors in a few words."""

from __future__ import annotations

import os
import re

import torch

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # training scripts' checkpoint dicts


def read_state_dict(path: str | os.PathLike) -> dict:
    """The state dict in `path`: a saved state dict, or one inside {"state_dict": ...} (or
    "model_state_dict", "model"), with DataParallel's "module." prefix removed. Never unpickles
    code; a file it cannot read raises ValueError naming the path."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not load weights from {str(path)!r} ({load_failure(err)})") from None
    if isinstance(data, dict):
        data = next((data[key] for key in _WRAPPER_KEYS if isinstance(data.get(key), dict)), data)
        if data and all(isinstance(key, str) and key.startswith("module.") for key in data):
            data = {key.removeprefix("module."): value for key, value in data.items()}
    return data


def load_failure(err: Exception) -> str:
    """torch.load's error in a few words: the unpickler's reason without torch's weights_only
    advice, on one line, led by the exception type (a bare KeyError's text is just a byte)."""
    text = " ".join(str(err).split())  # torch's unpickling errors run over several lines
    reason = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    summary = ": ".join(filter(None, ["torch.load", type(err).__name__, reason.group(1) if reason else text]))
    return summary if len(summary) <= 120 else summary[:117] + "..."
