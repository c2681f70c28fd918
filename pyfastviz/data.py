"""A folder of image files as a torch Dataset: recursive, sorted, unreadable files skipped and reported."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pyfastviz.models import load_image


def image_extensions() -> set[str]:
    """Every file extension PIL can open (not those of formats it can only save, such as .pdf),
    lower case with the dot. MPO files have no opener of their own: the JPEG one reads them."""
    Image.init()
    return {ext.lower() for ext, format_ in Image.registered_extensions().items()
            if format_ in Image.OPEN or format_ == "MPO"}


def find_image_files(root: Path, suffixes: set[str] | None = None) -> list[Path]:
    """The files under folder `root` whose suffix (lower case) is in `suffixes` (default: every
    one PIL can open), sorted by path. Hidden files and folders (names starting with '.', such
    as .ipynb_checkpoints) are left out; folder links are followed after the real tree, each
    real folder listed once, under its real path where it has one; a folder that cannot be
    read is warned about."""
    suffixes = image_extensions() if suffixes is None else suffixes
    found, seen, links = [], set(), [Path(root)]

    def unreadable(error: OSError) -> None:
        warnings.warn(f"cannot read folder {error.filename!r} ({error.strerror}): its images are left out",
                      RuntimeWarning, stacklevel=4)

    while links:  # the real tree under root first, then each linked folder not seen yet
        top = links.pop(0)
        if os.path.realpath(top) in seen:
            continue
        for folder, subfolders, names in os.walk(top, onerror=unreadable):
            seen.add(os.path.realpath(folder))
            visible = sorted(name for name in subfolders if not name.startswith("."))
            linked = [name for name in visible if os.path.islink(os.path.join(folder, name))]
            links += [Path(folder, name) for name in linked]
            subfolders[:] = [name for name in visible if name not in linked  # nor one a link has listed
                             and os.path.realpath(os.path.join(folder, name)) not in seen]
            found += [Path(folder, name) for name in names if not name.startswith(".")
                      and os.path.splitext(name)[1].lower() in suffixes and os.path.isfile(os.path.join(folder, name))]
    return sorted(found)


class ImageFolder(Dataset):
    """Every image file under `root` (recursively, sorted by path; see find_image_files) as RGB.

    extensions: suffixes to consider (e.g. [".jpg", ".png"]); default: all PIL can open.
    Each candidate is decoded once when the dataset is built (progress: a bar meanwhile);
    unreadable, truncated or empty files are listed in `skipped` as (path, reason), with one
    warning, and left out. Item i: (preprocess(image) -> tensor (3, S, S), i) with a callable
    `preprocess` (e.g. model.preprocess), else (PIL image, i).
    """

    def __init__(self, root: str | os.PathLike, preprocess=None, extensions: Iterable[str] | None = None,
                 progress: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"root={str(root)!r} is not a folder")
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable (e.g. model.preprocess) or None, "
                            f"got {type(preprocess).__name__}")
        if isinstance(extensions, str):
            raise TypeError("extensions must be a list of suffixes such as ['.jpg', '.png'], not a string")
        suffixes = None if extensions is None else {(e if e.startswith(".") else "." + e).lower() for e in extensions}
        candidates = find_image_files(root, suffixes)
        self.root, self.preprocess = root, preprocess
        self.paths: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        for path in tqdm(candidates, desc="checking images", disable=not (progress and candidates), leave=False):
            try:
                if path.stat().st_size == 0:
                    raise ValueError("empty file (0 bytes)")
                load_image(path)
            except (OSError, ValueError) as err:
                self.skipped.append((path, str(err)))
            else:
                self.paths.append(path)
        if self.skipped:
            names = ", ".join(str(p) for p, _ in self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            warnings.warn(f"ImageFolder skipped {len(self.skipped)} unreadable file(s) under {str(root)!r}: "
                          f"{names} (see .skipped for reasons)", RuntimeWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_image(self.paths[index])
        return (image if self.preprocess is None else self.preprocess(image)), index


def image_loader(dataset: ImageFolder, batch_size: int = 32, num_workers: int = 0) -> DataLoader:
    """Batches of a preprocessed ImageFolder, in order: (images (B, 3, S, S), indices (B,))."""
    if not isinstance(dataset, ImageFolder) or dataset.preprocess is None:
        raise ValueError("dataset must be an ImageFolder built with preprocess= (e.g. model.preprocess)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
