"""What the commands share: the --model/--weights and --device options, checked numbers, class
names and output paths read from the command line, and image files loaded for a model."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from pyfastviz.data import image_extensions
from pyfastviz.models import available_models, find_layer, load_image, load_model

def model_options(sub: argparse.ArgumentParser, flag: str = "--model", weights_flag: str | None = "--weights",
                  what: str = "model") -> None:
    sub.add_argument(flag, default="efficientnet_lite0", metavar="NAME",
                     help=f"{what} (default: %(default)s; one of {', '.join(available_models())})")
    if weights_flag is not None:
        sub.add_argument(weights_flag, metavar="PATH", help=f"weights file for the {what} (a state dict)")


def device_option(sub: argparse.ArgumentParser, help_: str = "e.g. cpu, cuda:0 (default: cuda when there is one)"
                  ) -> None:
    sub.add_argument("--device", metavar="DEV", help=help_)


def at_least(low: float, kind: type = int, *, exclusive: bool = False, below: float = math.inf):
    """An argparse type: a finite `kind` (int or float) >= low (> low if exclusive, < below when given),
    so that a bad value is refused while the command line is parsed, before any work, in argparse's
    error that names the flag."""
    wanted = f"{'an int' if kind is int else 'a number'} {'>' if exclusive else '>='} {low}"
    wanted += f" and < {below}" if below < math.inf else ""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        inside = value is not None and math.isfinite(value) and (value > low if exclusive else value >= low)
        if not (inside and value < below):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


def quiet_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--quiet", action="store_true", help="no progress bars")


def device(name: str | None) -> torch.device:
    """A command's --device: None or "auto" is cuda when there is one, else cpu; any other name
    that torch device, checked against the GPUs torch sees."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: pyfastviz runs on cpu or cuda[:N]")
    if chosen.type == "cpu":
        return torch.device("cpu")  # torch has one CPU device: cpu:1 is the same memory as cpu
    count = torch.cuda.device_count()
    if chosen.type == "cuda" and chosen.index is None and count == 0:
        raise ValueError(f"--device {name} needs a CUDA GPU, and torch sees none")
    if chosen.type == "cuda" and (chosen.index or 0) >= count:
        raise ValueError(f"--device {name!r}: this machine has {count} CUDA device(s)")
    return chosen


def class_index(model, name: str, flag: str = "--target") -> int:
    """A class name or index given on the command line, with errors that name its flag."""
    number = name.strip()
    try:
        return model.class_index(int(number) if number.lstrip("-").isdigit() else name)
    except ValueError as error:
        raise ValueError(str(error).replace("name_or_index", flag)) from None


def check_layer(model, name: str | None, flag: str = "--layer") -> None:
    """A --layer NAME of the loaded model, checked before any work (None: the command's default)."""
    if name is None:
        return
    try:
        find_layer(model.net, name)
    except ValueError as error:
        raise ValueError(str(error).replace("layer=", f"{flag} ").replace("see layer_names(model)",
                                                                            "see `pyfastviz layers`")) from None


def image_files(names: list[str], out_name: str, outputs: Sequence[str]) -> tuple[list[Path], Path]:
    """The command's image files and its --out folder, checked before any work: no two images
    share a file name stem, and no output --out/<stem>_<what>.png (what in `outputs`) is one of
    the images (outputs would overwrite each other, or an input)."""
    paths, out = [Path(name) for name in names], output_folder(out_name)
    stems = [path.stem for path in paths]
    if len(set(stems)) < len(stems):
        raise ValueError(f"two images share a file name stem; outputs would collide: {', '.join(map(str, paths))}")
    inputs = {path.resolve() for path in paths}
    for path in paths:
        for what in outputs:
            if (out / f"{path.stem}_{what}.png").resolve() in inputs:
                raise ValueError(f"--out {out_name!r}: {path.stem}_{what}.png would overwrite an input image; "
                                 "choose another --out folder")
    return paths, out


def output_file(name: str, suffix: str | None = None, flag: str = "--out", inputs: Sequence[str] = (),
                input_folder: str | None = None) -> Path:
    """--out FILE checked before any work: not a folder, ending in `suffix` when given, in a
    folder that exists or can be made, and neither one of the command's `inputs` files nor an
    existing file under its `input_folder`."""
    path = _non_empty(name, flag)
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {name!r} must be a {suffix} file name")
    if path.is_dir():
        raise ValueError(f"{flag} {name!r} is a folder: give a file name")
    if path.resolve() in {Path(i).resolve() for i in inputs}:
        raise ValueError(f"{flag} {name!r} is one of the command's input files: it would be overwritten")
    if input_folder is not None and path.exists() and path.resolve().is_relative_to(Path(input_folder).resolve()):
        raise ValueError(f"{flag} {name!r} is a file of the image folder {input_folder!r}: it would be overwritten")
    _check_parents(path, name, flag)
    return path


def output_folder(name: str, flag: str = "--out") -> Path:
    """--out DIR checked before any work: a folder, or a path where one can be made whose name
    does not end like a picture file's (the command writes several files into it)."""
    path = _non_empty(name, flag)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {name!r} is a file: give a folder")
    if not path.exists() and path.suffix.lower() in image_extensions():
        raise ValueError(f"{flag} {name!r} names a file, but this command writes a folder of PNGs: give a folder")
    _check_parents(path, name, flag)
    return path


def _non_empty(name: str, flag: str) -> Path:
    if not name.strip():
        raise ValueError(f"{flag} must not be empty")
    return Path(name)


def _check_parents(path: Path, name: str, flag: str) -> None:
    """No folder on the way to `path` is an existing file (else the write would fail after the work)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {name!r}: {str(parent)!r} is a file, not a folder")
            return


def photos(args: argparse.Namespace, outputs: Sequence[str]):
    """(paths, output folder, the model, the preprocessed batch (N, 3, S, S)) of a command on
    image files writing --out/<stem>_<what>.png for each what in `outputs`: paths and folder
    checked (image_files) and the images read before the model is loaded."""
    paths, out = image_files(args.images, args.out, outputs)
    images = [load_image(p) for p in paths]
    model = load_model(args.model, weights_path=args.weights)
    return paths, out, model, model.preprocess.batch(images)
