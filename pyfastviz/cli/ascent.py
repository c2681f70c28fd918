"""`classvis`, `fool`, `invert` and `dream`: images made by gradient steps on the input."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyfastviz.adversarial import fooling_images
from pyfastviz.classvis import class_visualization
from pyfastviz.cli.common import (at_least, check_layer, class_index, model_options, output_folder, photos,
                                  quiet_option)
from pyfastviz.deepdream import deepdream, layer_energy
from pyfastviz.inversion import invert_features
from pyfastviz.models import load_model, save_png, to_pil

LAYER_HELP = "layer name, see `pyfastviz layers`"


def add_commands(commands) -> None:
    vis = commands.add_parser("classvis", help="images that maximise classes (gradient ascent)",
                              description="Write <class>.png per class: the image, from noise, that maximises the "
                                          "class score minus an L2 penalty (jitter, blur and clipping regularisers).")
    vis.add_argument("classes", nargs="+", metavar="CLASS", help="class names (e.g. goldfish) or indices, "
                                                                 "each class once")
    vis.add_argument("--size", type=at_least(1), default=224, metavar="PX", help="image side (default: %(default)s)")
    vis.add_argument("--steps", type=at_least(1), default=100, help="Adam steps (default: %(default)s)")
    vis.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    vis.add_argument("--fourier", action="store_true",
                     help="optimise a decorrelated Fourier spectrum (Lucid's parameterisation) instead of pixels")
    model_options(vis)
    quiet_option(vis)
    vis.add_argument("--out", required=True, metavar="DIR", help="output folder")
    vis.set_defaults(run=_classvis)

    fool = commands.add_parser("fool", help="fooling images: small changes that flip the predicted class",
                               description="Write <stem>_fooled.png and <stem>_perturbation.png per image.")
    fool.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    fool.add_argument("--target", required=True, metavar="CLASS", help="the class to be predicted (name or index)")
    fool.add_argument("--epsilon", type=at_least(0, float, exclusive=True, below=255), default=8,
                      help="L-inf budget in 1/255 of the pixel range (default: %(default)s)")
    fool.add_argument("--steps", type=at_least(1), default=50, help="most gradient steps (default: %(default)s)")
    model_options(fool)
    quiet_option(fool)
    fool.add_argument("--out", required=True, metavar="DIR", help="output folder")
    fool.set_defaults(run=_fool)

    inv = commands.add_parser("invert", help="feature inversion: an image rebuilt from a layer's features",
                              description="Write <stem>_inverted.png per image: the image, grown from noise, whose "
                                          "features at --layer match the photo's (Mahendran & Vedaldi).")
    inv.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    inv.add_argument("--layer", default="_blocks.2", metavar="NAME", help=LAYER_HELP + " (default: %(default)s)")
    inv.add_argument("--steps", type=at_least(1), default=200, help="Adam steps (default: %(default)s)")
    inv.add_argument("--tv-weight", type=at_least(0, float), default=1e-3,
                     help="total-variation prior (default: %(default)s)")
    inv.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    model_options(inv)
    quiet_option(inv)
    inv.add_argument("--out", required=True, metavar="DIR", help="output folder")
    inv.set_defaults(run=_invert)

    dream = commands.add_parser("dream", help="DeepDream: amplify what a layer sees in an image",
                                description="Write <stem>_dream.png per image (multi-octave gradient ascent on "
                                            "the mean square activation of --layer, with jitter).")
    dream.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    dream.add_argument("--layer", default="_blocks.8", metavar="NAME", help=LAYER_HELP + " (default: %(default)s)")
    dream.add_argument("--octaves", type=at_least(1), default=3, help="pyramid levels (default: %(default)s)")
    dream.add_argument("--steps", type=at_least(1), default=10, help="steps per octave (default: %(default)s)")
    dream.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    model_options(dream)
    quiet_option(dream)
    dream.add_argument("--out", required=True, metavar="DIR", help="output folder")
    dream.set_defaults(run=_dream)


def _classvis(args: argparse.Namespace) -> None:
    out = output_folder(args.out)
    model = load_model(args.model, weights_path=args.weights)
    classes, files = _class_files(model, args.classes, out)
    result = class_visualization(model.net, classes, size=args.size, steps=args.steps, lr=0.1, start="noise",
                                 seed=args.seed, preprocess=model.preprocess,
                                 parameterization="fourier" if args.fourier else "pixels", progress=not args.quiet)
    with torch.no_grad():
        probs = model.net(result.images).softmax(dim=1)
    for i, (cls, file, image) in enumerate(zip(classes, files, result.to_pil(model.preprocess))):
        print(f"{model.class_names[cls]!r}: p = {probs[i, cls]:.3f}")
        print(save_png(image, file))


def _class_files(model, names: list[str], out: Path) -> tuple[list[int], list[Path]]:
    """The CLASS arguments' indices and output files out/<class name>.png, refused when two are
    the same class (by name and index, say): one image would overwrite the other."""
    classes = [class_index(model, name, "CLASS") for name in names]
    files = [out / f"{model.class_names[c].replace(' ', '_').replace('/', '_')}.png" for c in classes]
    first = {}
    for name, file in zip(names, files):
        if file in first:
            raise ValueError(f"CLASS {first[file]!r} and {name!r} are the same class, {file.stem!r}: "
                             "give each class once")
        first[file] = name
    return classes, files


def _fool(args: argparse.Namespace) -> None:
    paths, out, model, x = photos(args, ("fooled", "perturbation"))
    target = class_index(model, args.target)
    result = fooling_images(model.net, x, target, epsilon=args.epsilon / 255, steps=args.steps,
                            preprocess=model.preprocess, progress=not args.quiet)
    for i, path in enumerate(paths):
        verdict = "fooled" if result.success[i] else "not fooled"
        print(f"{path}: {verdict}, predicted {model.class_names[int(result.predictions[i])]!r}, "
              f"L-inf {result.linf[i] * 255:.1f}/255, {int(result.steps[i])} steps")
        magnified = (0.5 + result.perturbation[i] / (2 * result.linf[i].clamp(min=1e-12))).clamp(0, 1)
        print(save_png(to_pil(model.preprocess.denormalize(result.images[i])), out / f"{path.stem}_fooled.png"))
        print(save_png(to_pil(magnified), out / f"{path.stem}_perturbation.png"))


def _invert(args: argparse.Namespace) -> None:
    paths, out, model, x = photos(args, ("inverted",))
    check_layer(model, args.layer)
    result = invert_features(model.net, x, args.layer, steps=args.steps, lr=0.1, tv_weight=args.tv_weight,
                             preprocess=model.preprocess, seed=args.seed, progress=not args.quiet)
    for path, error, image in zip(paths, result.feature_error.tolist(), result.to_pil(model.preprocess)):
        print(f"{path}: relative feature error at {args.layer} {error:.3f}")
        print(save_png(image, out / f"{path.stem}_inverted.png"))


def _dream(args: argparse.Namespace) -> None:
    paths, out, model, x = photos(args, ("dream",))
    check_layer(model, args.layer)
    result = deepdream(model.net, x, args.layer, octaves=args.octaves, steps_per_octave=args.steps, lr=0.1,
                       preprocess=model.preprocess, seed=args.seed, progress=not args.quiet)
    with torch.no_grad():
        gain = layer_energy(model.net, args.layer, result.images) / layer_energy(model.net, args.layer, x)
    for i, path in enumerate(paths):
        print(f"{path}: mean square activation of {args.layer} x{gain[i]:.2f}")
        print(save_png(to_pil(model.preprocess.denormalize(result.images[i])), out / f"{path.stem}_dream.png"))
