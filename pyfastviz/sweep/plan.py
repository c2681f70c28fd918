"""What a sweep works on: the sorted image list (a folder or a list file), its fixed shards,
and the per-image classes of a label file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pyfastviz.data import find_image_files


def list_images(data: str | os.PathLike) -> tuple[Path, list[str]]:
    """(base folder, image paths relative to it as POSIX strings, sorted).

    data: a folder, searched recursively for every file PIL can open (find_image_files: links
    followed, hidden files and folders left out), or a text file with one image path per line
    (relative to the file's folder, or absolute; '#' lines are comments).
    """
    source = Path(data)
    if source.is_dir():
        return source, sorted(p.relative_to(source).as_posix() for p in find_image_files(source))
    if source.is_file():
        try:
            text = source.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"data={str(data)!r} is not a folder, nor a list file of image paths (UTF-8 text, one "
                             "path a line): give the folder that holds the images") from None
        lines = (line.strip() for line in text.splitlines())
        paths = sorted(Path(line).as_posix() for line in lines if line and not line.startswith("#"))
        files = sorted((os.path.normpath(source.parent.absolute() / path), path) for path in paths)
        repeated = next(((a, b) for (file_a, a), (file_b, b) in zip(files, files[1:]) if file_a == file_b), None)
        if repeated is not None:
            twice = repr(repeated[0]) + ("" if repeated[0] == repeated[1] else f" (also as {repeated[1]!r})")
            raise ValueError(f"data={str(data)!r} lists {twice} more than once")
        return source.parent, paths
    raise ValueError(f"data={str(data)!r} is neither a folder of images nor a list file of image paths")


def with_file_sizes(base: Path, paths: list[str]) -> list[str]:
    """'path<TAB>size in bytes' per image (-1 when it cannot be read): what a manifest hashes, so
    a resume notices replaced images as well as added or removed ones."""
    def size(path: str) -> int:
        try:
            return (base / path).stat().st_size
        except OSError:
            return -1

    return [f"{path}\t{size(path)}" for path in paths]


def shard_range(shard: int, count: int, shard_size: int) -> range:
    """Positions in the sorted image list of shard `shard`: [shard * size, (shard + 1) * size)."""
    return range(shard * shard_size, min(count, (shard + 1) * shard_size))


def shard_count(count: int, shard_size: int) -> int:
    return -(-count // shard_size)


def batches(shards: list[int], count: int, shard_size: int, batch_size: int) -> tuple[list[list[int]], list[bool]]:
    """The shards' image positions in batches of batch_size (none spans two shards), and for
    each batch whether it ends its shard."""
    groups, ends = [], []
    for shard in shards:
        positions = shard_range(shard, count, shard_size)
        for first in range(positions.start, positions.stop, batch_size):
            groups.append(list(range(first, min(first + batch_size, positions.stop))))
            ends.append(first + batch_size >= positions.stop)
    return groups, ends


def read_label_file(path: str | os.PathLike, class_index: Callable[[str], int]) -> dict[str, int]:
    """Lines `relative/path.jpg<TAB>class` (class: index or name) -> {path: class index}.

    Blank lines and '#' comments are skipped; class_index turns the class text into an index
    (its ValueError is raised naming the file and line).
    """
    labels: dict[str, int] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        image, sep, cls = line.rstrip("\r\n").rpartition("\t")
        if not sep or not image.strip():
            raise ValueError(f"label file {str(path)!r}, line {number}: expected 'path<TAB>class', got {line!r}")
        try:
            cls = class_index(cls.strip())
        except ValueError as err:
            raise ValueError(f"label file {str(path)!r}, line {number}: {err}") from None
        image = Path(image.strip()).as_posix()
        if labels.get(image, cls) != cls:
            raise ValueError(f"label file {str(path)!r}, line {number}: {image!r} has class {labels[image]} on an "
                             f"earlier line, {cls} here")
        labels[image] = cls
    return labels
