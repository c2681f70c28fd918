"""Reading weights files safely (torch.load(weights_only=True)): the state dict inside common
checkpoint wrappers, and torch.load's errors in a few words."""

from __future__ import annotations

import os
import re

import torch

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # training scripts' checkpoint dicts


def read_state_dict(path: str | os.PathLike) -> dict:
    """The state dict in `path`: a saved state dict, or one inside {"state_dict": ...} (or
    "model_state_dict", "model"). Never unpickles code; a file it cannot read, or that holds no
    dict, raises ValueError naming the path."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not load weights from {str(path)!r} ({load_failure(err)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"could not load weights from {str(path)!r}: it holds a {type(data).__name__}, "
                         "not a state dict")
    return next((data[key] for key in _WRAPPER_KEYS if isinstance(data.get(key), dict)), data)


def under_model_prefix(state: dict, expected: dict) -> dict:
    """state's entries under the prefix that the model's own keys follow there (DataParallel's
    "module.", torch.compile's "_orig_mod.", Lightning's "model.", ...), the prefix removed and
    entries outside it (an EMA's "n_averaged") left out; state as it is when it holds the model's
    keys unprefixed, or no prefix fits."""
    first = next(iter(expected), None)
    if first is None or first in state:
        return state
    for key in state:
        prefix = key[: -len(first)] if isinstance(key, str) and key.endswith("." + first) else None
        if prefix and all(prefix + name in state for name in expected):
            return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    return state


def load_failure(err: Exception) -> str:
    """torch.load's error in a few words: the unpickler's reason without torch's weights_only
    advice, on one line, led by the exception type (a bare KeyError's text is just a byte)."""
    text = " ".join(str(err).split())  # torch's unpickling errors run over several lines
    reason = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    summary = ": ".join(filter(None, ["torch.load", type(err).__name__, reason.group(1) if reason else text]))
    return summary if len(summary) <= 120 else summary[:117] + "..."
