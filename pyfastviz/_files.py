"""Writing files atomically: readers see the old file or all of the new one, never a part."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Calls write(file) on a new temporary file beside path, then renames it to path; returns
    the path. Parent folders are created; a link at path is written through (its target is
    replaced); the file keeps an earlier file's permissions, else gets the usual ones
    (0666 & ~umask); its data reaches the disk before the rename (so a crash leaves the old
    file or the new one, never a truncated one); a failed write leaves nothing behind (and an
    earlier file at path untouched) and its error names path. The temporary name is short, so
    any name the folder takes works."""
    path = os.fsdecode(path)  # str, bytes or os.PathLike
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else None
    tmp = path.with_name(f".{uuid.uuid4().hex[:12]}.tmp")  # same folder: the rename is atomic
    try:
        with open(tmp, "xb") as file:  # "x" creates it with the umask's permissions
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is not None and err.filename is None:  # a failed write or fsync (disk full) names no file
            raise OSError(err.errno, f"{err.strerror} (writing {path})") from err
        raise
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; after the rename it is gone already
    return path
