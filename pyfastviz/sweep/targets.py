"""A sweep's target= as the manifest records it and as one class (or None) per image."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pyfastviz._fingerprints import lines_sha256
from pyfastviz._inputs import check_index
from pyfastviz.sweep import plan


def resolve(target, paths: list[str], classes, count: int | None) -> tuple[str, list[int | None] | int | None]:
    """-> (description for the manifest, None (predicted) | one class | a class or None per image).
    count: the model's number of classes (None: unknown), which every class is checked against."""
    lookup = {} if classes is None else {name: i for i, name in reversed(list(enumerate(classes)))}

    def index(cls) -> int:
        if isinstance(cls, str) and cls.strip().lstrip("-").isdigit():
            cls = int(cls)
        if not isinstance(cls, str):
            cls = check_index(cls, "target")
            if cls < 0 or (count is not None and cls >= count):
                raise ValueError(f"target class {cls} is out of range" + (f" [0, {count})" if count else ""))
            return cls
        if classes is None:
            raise ValueError(f"target class {cls!r} is a name but the model's classes are unknown (pass classes=)")
        if cls not in lookup:
            raise ValueError(f"target class {cls!r} is not one of the model's class names")
        return lookup[cls]

    if target is None or target == "predicted":
        return "predicted", None
    if isinstance(target, os.PathLike):
        labels = plan.read_label_file(target, index)
        text = Path(target).read_text(encoding="utf-8").splitlines()
        per_image = [labels.get(p) for p in paths]
        _check_label_coverage(target, paths, per_image)
        return f"label file sha256 {lines_sha256(text)}", per_image
    try:
        cls = index(target)
    except TypeError:
        raise TypeError(f"target must be None, 'predicted', a class index or name, or a pathlib.Path label file, "
                        f"got {type(target).__name__}") from None
    except ValueError as err:
        if isinstance(target, str) and (Path(target).is_file() or Path(target).suffix.lower() in (".tsv", ".txt")):
            raise ValueError(f"{err}; a label file is given as pathlib.Path({target!r})") from None
        raise
    return f"class {cls}", cls


def _check_label_coverage(target, paths: list[str], per_image: list[int | None]) -> None:
    """A ValueError when the label file names no image of the sweep, a warning when it lacks some."""
    missing = [path for path, cls in zip(paths, per_image) if cls is None]
    if len(missing) == len(paths):
        raise ValueError(f"label file {str(target)!r} names none of the {len(paths)} images (e.g. {paths[0]!r}); "
                         "its paths must be relative to the image folder (or the list file's folder)")
    if missing:
        warnings.warn(f"label file {str(target)!r} has no class for {len(missing)} of the {len(paths)} images "
                      f"(first: {missing[0]!r}); they go to the error list", stacklevel=5)
