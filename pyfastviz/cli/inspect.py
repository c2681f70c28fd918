"""`layers`, `filters`, `activations`, `embed` and `neighbours`: what is inside the model."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyfastviz.cli.common import at_least, check_layer, model_options, output_file, quiet_option
from pyfastviz.data import ImageFolder, image_loader
from pyfastviz.inspect import (
    activation_grid,
    activations,
    embedding_image,
    extract_features,
    filter_grid,
    nearest_neighbours,
    neighbours_figure,
    pca,
    tsne,
)
from pyfastviz.models import layer_shapes, load_image, load_model, save_png

FEATURES_HELP = ("layer whose output, averaged over positions, is each image's feature vector (default: the input "
                 "of the last nn.Linear, the penultimate features)")
THUMB = 64  # embed's tiles: each photo is shrunk to this as it is read, not kept at full size


def add_commands(commands) -> None:
    lay = commands.add_parser("layers", help="list the model's layers: name, type and output shape",
                              description="Print every named layer of the model (the names --layer takes) with its "
                                          "type and its output shape on one image at the model's input size; a "
                                          "module that runs several times per forward lists each call's shape.")
    model_options(lay)
    lay.set_defaults(run=_layers)

    filt = _inspect_command(commands, "filters", "Write a convolution layer's filters as a PNG grid.")
    filt.add_argument("--layer", metavar="NAME",
                      help="nn.Conv2d name (see `pyfastviz layers`); default: the first convolution")
    filt.add_argument("--channel", type=int, metavar="C",
                      help="show input channel C of every filter in grey (needed unless the layer "
                           "has 1 or 3 input channels)")
    filt.set_defaults(run=_filters)

    act = _inspect_command(commands, "activations", "Write the strongest feature maps of a layer for one image.")
    act.add_argument("image", metavar="IMAGE", help="image file")
    act.add_argument("--layer", required=True, metavar="NAME", help="layer name (see `pyfastviz layers`)")
    act.add_argument("--top", type=at_least(1), default=16, metavar="K", help="channels shown (default: %(default)s)")
    act.set_defaults(run=_activations)

    embed = _folder_command(commands, "embed", "Write a 2-D map of the images in a folder, by their features.")
    embed.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="default: %(default)s")
    embed.set_defaults(run=_embed)

    near = _folder_command(commands, "neighbours", "Write a query image's nearest neighbours among a folder's "
                                                   "images, by their features (the query's own file, when it is "
                                                   "in the folder, is left out).")
    near.add_argument("--query", required=True, metavar="IMAGE",
                      help="query image file (if it is in DIR, it is not one of its own neighbours)")
    near.add_argument("--k", type=at_least(1), default=5, help="neighbours shown (default: %(default)s)")
    near.set_defaults(run=_neighbours)


def _inspect_command(commands, name: str, description: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=description[0].lower() + description[1:-1], description=description)
    model_options(sub)
    sub.add_argument("--out", required=True, metavar="FILE", help="output PNG file")
    return sub


def _folder_command(commands, name: str, description: str) -> argparse.ArgumentParser:
    """An inspect command on the features of a folder's images (see _folder)."""
    sub = _inspect_command(commands, name, description)
    sub.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    sub.add_argument("--layer", metavar="NAME", help=FEATURES_HELP)
    quiet_option(sub)
    return sub


def _layers(args: argparse.Namespace) -> None:
    model = load_model(args.model, weights_path=args.weights)
    size = model.preprocess.size
    rows = layer_shapes(model.net, torch.zeros(1, 3, size, size))
    name_width, kind_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    print(f"{args.model}: layers and their output shapes (C, H, W) for one {size}x{size} image")
    for name, kind, shapes in rows:
        calls = "not run" if not shapes else ", ".join(str(shape[1:]) if isinstance(shape, tuple) else shape
                                                       for shape in shapes)
        print(f"{name:<{name_width}}  {kind:<{kind_width}}  {calls}")


def _filters(args: argparse.Namespace) -> None:
    out = output_file(args.out, ".png")
    model = load_model(args.model, weights_path=args.weights)
    try:
        grid = filter_grid(model.net, layer=args.layer, channel=args.channel)
    except ValueError as err:  # name the flag, not the Python keyword
        raise ValueError(str(err).replace("pass channel= ", "pass --channel C ")
                         .replace("channel=", "--channel ").replace("layer=", "--layer ")) from None
    print(save_png(grid, out))


def _activations(args: argparse.Namespace) -> None:
    out = output_file(args.out, ".png", inputs=[args.image])
    image = load_image(args.image)
    model = load_model(args.model, weights_path=args.weights)
    check_layer(model, args.layer)
    act = activations(model.net, model.preprocess(image)[None], args.layer)
    if act.dim() != 4:
        raise ValueError(f"--layer {args.layer!r} gives shape {tuple(act.shape)}, not feature maps (N, C, h, w)")
    print(save_png(activation_grid(act[0], top=args.top), out))


def _folder(args: argparse.Namespace, needed: int, leave_out: Path | None = None):
    """The model and the folder's readable images (skipped files listed on stderr), less the
    file `leave_out` (a resolved path) when it is one of them."""
    if not Path(args.folder).is_dir():
        raise ValueError(f"{args.folder!r} is not a folder")
    model = load_model(args.model, weights_path=args.weights)
    check_layer(model, args.layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # listed below, one line per file
        dataset = ImageFolder(args.folder, preprocess=model.preprocess, progress=not args.quiet)
    for path, reason in dataset.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if leave_out is not None:
        dataset.paths = [path for path in dataset.paths if path.resolve() != leave_out]
    if len(dataset) < needed:
        besides = "" if leave_out is None else " besides the query"
        raise ValueError(f"{args.command} needs at least {needed} readable images{besides} in {args.folder!r}, "
                         f"found {len(dataset)}")
    return model, dataset


def _features(model, images_or_loader, layer: str | None, progress: bool) -> torch.Tensor:
    try:
        return extract_features(model.net, images_or_loader, layer=layer, progress=progress)
    except ValueError as err:  # name the flag, not the Python keyword
        raise ValueError(str(err).replace("pass layer=", "pass --layer NAME (see `pyfastviz layers`)")) from None


def _embed(args: argparse.Namespace) -> None:
    out = output_file(args.out, ".png", input_folder=args.folder)
    model, dataset = _folder(args, needed=3)
    features = _features(model, image_loader(dataset), args.layer, progress=not args.quiet)
    coords = tsne(features, perplexity=min(30.0, len(dataset) - 1)) if args.method == "tsne" else pca(features)[0]
    thumbs = [_thumbnail(path) for path in tqdm(dataset.paths, desc="thumbnails", disable=args.quiet, leave=False)]
    print(save_png(embedding_image(thumbs, coords, thumb=THUMB), out))


def _thumbnail(path: Path):
    """The image file shrunk to at most THUMB x THUMB (the full-size image is dropped at once)."""
    image = load_image(path)
    image.thumbnail((THUMB, THUMB))
    return image


def _neighbours(args: argparse.Namespace) -> None:
    out = output_file(args.out, ".png", inputs=[args.query], input_folder=args.folder)
    query = load_image(args.query)
    model, dataset = _folder(args, needed=args.k, leave_out=Path(args.query).resolve())
    features = _features(model, image_loader(dataset), args.layer, progress=not args.quiet)
    query_features = _features(model, model.preprocess(query)[None], args.layer, progress=False)
    distances, indices = nearest_neighbours(features, query_features, k=args.k)
    for distance, index in zip(distances[0].tolist(), indices[0].tolist()):
        print(f"{dataset.paths[index]}: cosine distance {distance:.4f}")
    print(save_png(neighbours_figure(query, [load_image(dataset.paths[i]) for i in indices[0].tolist()]), out))
