"""DIR/manifest.json: the options and image list a sweep folder was made with; a run against
the same folder must ask for the same, else it is refused rather than mixing results."""

from __future__ import annotations

import json
from pathlib import Path

from pyfastviz.sweep.store import atomic_write

NAME = "manifest.json"
FORMAT = 1


def write_or_check(out: Path, manifest: dict, has_results: bool) -> None:
    """Write DIR/manifest.json for a new sweep (or one without finished shards yet: nothing to
    mix); for one with results, raise ValueError naming each option that differs. A folder
    holding other files but no manifest is refused too."""
    manifest = json.loads(json.dumps({"format": FORMAT, **manifest}))
    path = out / NAME
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old == manifest:
            return
        if has_results:
            what = "; ".join(_difference(key, old.get(key), manifest.get(key))
                             for key in {**old, **manifest} if old.get(key) != manifest.get(key))
            raise ValueError(f"{str(out)!r} holds a sweep made with other options ({what}); resume it with the "
                             "same options, or write to another folder (or delete it to start over)")
    elif out.exists():
        others = sorted(p.name for p in out.iterdir() if p.name != NAME + ".tmp")
        if others:
            raise ValueError(f"out={str(out)!r} is not empty and holds no sweep ({NAME} missing; found "
                             f"{', '.join(others[:3])}); choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(manifest, indent=1).encode("utf-8"))


def _difference(key: str, old, new) -> str:
    if key.endswith("sha256"):
        return f"{key.removesuffix('_sha256')} differ"
    if old is None:
        return f"{key}={new!r} now, not recorded there"
    return f"{key}={old!r} there, {new!r} now"
