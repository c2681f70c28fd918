"""Crash-safe files of a sweep folder.

    DIR/manifest.json               options and image list (manifest.py)
    DIR/shards/000007.npy           float16 maps (n, H, W) of shard 7's readable images, in order,
                                    each divided by its index row's map_scale
    DIR/shards/000007.json          {"rows": [index rows], "errors": [error rows]}: shard 7 is done
    DIR/index.jsonl, errors.jsonl   every shard's rows merged in order: the sweep is done

Every file is written to a .tmp file beside it, fsynced and renamed, so a kill at any moment
leaves whole files only; a shard counts as done once its .json exists (written after its .npy).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np

from pyfastviz._files import write_atomic

INDEX, ERRORS, SHARDS = "index.jsonl", "errors.jsonl", "shards"


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to path atomically (pyfastviz._files.write_atomic), then sync the folder, so
    that the rename too survives a crash (a shard's .json is its done mark)."""
    write_atomic(path, lambda file: file.write(data))
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def shard_path(out: Path, shard: int, suffix: str) -> Path:
    return out / SHARDS / f"{shard:06d}{suffix}"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_shard(out: Path, shard: int, maps: np.ndarray | None, rows: list[dict], errors: list[dict]) -> None:
    """Shard files: maps (n, H, W) float16 (none when no image of the shard was readable), then the rows."""
    if maps is not None:
        atomic_write(shard_path(out, shard, ".npy"), npy_bytes(maps))
    atomic_write(shard_path(out, shard, ".json"), json.dumps({"rows": rows, "errors": errors}).encode("utf-8"))


def done_shards(out: Path) -> set[int]:
    """Shards whose rows file exists."""
    return set(_numbered(out, ".json"))


def _numbered(out: Path, suffix: str) -> dict[int, Path]:
    """{shard: path} of the shard files NNNNNN<suffix> (other files, such as a copy or macOS's
    ._000001.json, are not the sweep's and are left alone)."""
    folder = out / SHARDS
    if not folder.is_dir():
        return {}
    return {int(p.stem): p for p in folder.glob(f"*{suffix}") if re.fullmatch(r"\d{6,}", p.stem)}


def remove_partial(out: Path) -> None:
    """Delete what a killed run left unfinished: *.tmp files and maps of shards without rows."""
    folder = out / SHARDS
    folder.mkdir(exist_ok=True)
    done = done_shards(out)
    for path in [*out.glob("*.tmp"), *folder.glob("*.tmp")]:
        path.unlink()
    for shard, path in _numbered(out, ".npy").items():
        if shard not in done:
            path.unlink()


def read_shard(out: Path, shard: int) -> dict:
    return json.loads(shard_path(out, shard, ".json").read_text(encoding="utf-8"))


def merge(out: Path, shards: int) -> tuple[int, int]:
    """Write errors.jsonl, then index.jsonl (the sweep's completion mark), from shards 0..shards-1.
    Returns (index rows, error rows)."""
    rows, errors = [], []
    for shard in range(shards):
        part = read_shard(out, shard)
        rows += part["rows"]
        errors += part["errors"]
    atomic_write(out / ERRORS, _jsonl(errors))
    atomic_write(out / INDEX, _jsonl(rows))
    return len(rows), len(errors)


def merged_counts(out: Path) -> tuple[int, int] | None:
    """(index rows, error rows) of a merged sweep, None before the merge."""
    if not (out / INDEX).exists():
        return None
    return len(read_jsonl(out / INDEX)), len(read_jsonl(out / ERRORS))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
