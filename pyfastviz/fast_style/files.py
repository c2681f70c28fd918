"""Tensor files for fast style: written atomically (see write_atomic), as safetensors when that
package is importable, else torch.save of plain tensors and strings; read back with safetensors
or torch.load(weights_only=True), never unpickling code. A corrupt or foreign file raises a
ValueError naming it.

Layout: a flat {name: tensor} dict plus `meta`, a JSON-able dict, stored with a format tag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pyfastviz._files import write_atomic
from pyfastviz._loading import load_failure

FORMAT = "pyfastviz.fast_style/1"
_ZIP_MAGIC = b"PK\x03\x04"

try:
    import safetensors.torch as _safetensors
except ImportError:
    _safetensors = None


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Writes `tensors` (moved to the CPU) and `meta` to path with write_atomic; returns the path."""
    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta, sort_keys=True)}
    if _safetensors is not None:
        data = _safetensors.save(cpu, metadata=header)  # bytes: save_file's own file would be owner-only
        return write_atomic(path, lambda file: file.write(data))
    return write_atomic(path, lambda file: torch.save({**header, "tensors": cpu}, file))


def read_tensors(path: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(tensors, meta) of a file written by write_tensors, or (state_dict, None) for a plain
    torch.save'd {name: tensor} dict (pytorch/examples' format). `what` names the file's kind
    in errors ("checkpoint", "style network")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}")
    with open(path, "rb") as file:
        head = file.read(9)
    if len(head) == 9 and head[8:9] == b"{" and not head.startswith(_ZIP_MAGIC):
        return _read_safetensors(path, what)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a {what} file of pyfastviz or pytorch/examples "
                         f"({load_failure(err)})") from None
    if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("tensors"), dict):
        return data["tensors"], _meta(data.get("meta"), path, what)
    if isinstance(data, dict) and data and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in data.items()):
        return dict(data), None
    raise ValueError(f"{str(path)!r} is not a {what} file: it holds a {type(data).__name__}, not pyfastviz's "
                     "format or a state_dict")


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    if _safetensors is None:
        raise ValueError(f"{str(path)!r} looks like a safetensors file: install the safetensors package to read it")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable {what} file (corrupt safetensors: {err})") from None
    if header.get("format") != FORMAT:
        return tensors, None
    return tensors, _meta(header.get("meta"), path, what)


def _meta(text, path: Path, what: str) -> dict:
    try:
        meta = json.loads(text)
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{str(path)!r} is not a readable {what} file: its metadata is damaged")
    return meta
