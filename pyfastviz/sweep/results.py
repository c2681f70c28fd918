"""Reading a finished sweep folder: the index, the errors and each image's map."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyfastviz.sweep.manifest import NAME as MANIFEST
from pyfastviz.sweep.store import ERRORS, INDEX, read_jsonl, shard_path


@dataclass
class Sweep:
    """A finished sweep. index: one dict per mapped image (path, shard, offset, predicted,
    probability, target, target_probability, map_min, map_max, map_mean, peak_row, peak_col,
    map_scale, and predicted_name/target_name when the classes have names); errors: {path,
    shard, error} per skipped file. The same rows are in DIR/index.jsonl and DIR/errors.jsonl, for
    `pandas.read_json(path, lines=True)`."""

    out: Path
    manifest: dict
    index: list[dict]
    errors: list[dict]
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # not the whole index, which may hold millions of rows
        return (f"Sweep({str(self.out)!r}: method={self.manifest.get('method')!r}, {len(self.index)} mapped, "
                f"{len(self.errors)} errors)")

    def map(self, key: int | str | os.PathLike) -> np.ndarray:
        """The float32 (H, W) map of index row `key`, or of the image with that path (its stored
        float16 values times the row's map_scale)."""
        if isinstance(key, os.PathLike):
            key = Path(key).as_posix()
        if isinstance(key, str):
            if not self._rows:
                self._rows.update((row["path"], i) for i, row in enumerate(self.index))
            if key not in self._rows:
                raise KeyError(f"{key!r} is not in the sweep's index")
            key = self._rows[key]
        row = self.index[key]
        stored = np.load(shard_path(self.out, row["shard"], ".npy"), mmap_mode="r")[row["offset"]]
        scale = row.get("map_scale", 1.0)  # none: a sweep made before maps were scaled
        return (stored.astype(np.float64) * scale).astype(np.float32)


def load_sweep(out: str | os.PathLike) -> Sweep:
    """The finished sweep in folder `out` (ValueError when its run has not finished)."""
    out = Path(out)
    if not (out / INDEX).is_file():
        raise ValueError(f"out={str(out)!r} holds no finished sweep ({INDEX} missing): run, or resume, the sweep")
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return Sweep(out, manifest, read_jsonl(out / INDEX), read_jsonl(out / ERRORS))
