"""`saliency`, `occlusion` and `sweep`: maps of what in an image the class depends on."""

from __future__ import annotations

import argparse
import copy
import functools
import os
from pathlib import Path

import torch

from pyfastviz.cli.common import (at_least, class_index, device, device_option, image_files, model_options,
                                  output_folder, quiet_option)
from pyfastviz.guided import guided_backprop
from pyfastviz.models import gradient_to_pil, load_image, load_model, saliency_overlay, saliency_to_pil, save_png, to_pil
from pyfastviz.occlusion import occlusion
from pyfastviz.saliency import saliency
from pyfastviz.sweep import sweep

METHODS = ("gradient", "guided")


def add_commands(commands) -> None:
    sal = _explain_command(commands, "saliency", "saliency maps of image files",
                           "Write <stem>_<method>.png and <stem>_<method>_overlay.png per image.")
    sal.add_argument("--method", choices=METHODS, default="gradient",
                     help="gradient: vanilla gradient (Simonyan et al.), guided: guided backprop "
                          "(default: %(default)s)")
    sal.add_argument("--smoothgrad", type=at_least(0), default=0, metavar="N",
                     help="average the gradient over N noisy copies (SmoothGrad; --method gradient only)")
    sal.add_argument("--seed", type=int, default=0, help="SmoothGrad's noise (default: %(default)s)")
    sal.set_defaults(run=_saliency)

    occ = _explain_command(commands, "occlusion", "occlusion maps of image files (Zeiler & Fergus)",
                           "Write <stem>_occlusion.png and <stem>_occlusion_overlay.png per image: "
                           "how much the class score drops when a window is covered.")
    occ.add_argument("--window", type=at_least(1), default=16, metavar="PX", help="window side (default: %(default)s)")
    occ.add_argument("--stride", type=at_least(1), default=8, metavar="PX", help="window step (default: %(default)s)")
    occ.add_argument("--score", choices=("prob", "logit"), default="prob", help="default: %(default)s")
    occ.add_argument("--compile", action="store_true", help="run the repeated chunk forward under torch.compile "
                                                            "(pays off from a few images on)")
    device_option(occ)
    occ.add_argument("--batch-size", type=at_least(1), metavar="N",
                     help="occluded images per forward pass (default: chosen from free memory)")
    occ.set_defaults(run=_occlusion)

    swp = commands.add_parser("sweep", help="maps of every image of a folder, resumable (torchrun: many GPUs)",
                              description="Write the maps of every image under DATA (a folder, or a text file of "
                                          "image paths) to DIR in float16 shards, with DIR/index.jsonl (path, shard, "
                                          "offset, predicted class and probability, target, map statistics and the "
                                          "map_scale each stored map is multiplied by) and "
                                          "DIR/errors.jsonl. Rerun the same command to resume after a crash. "
                                          "Under `torchrun --nproc-per-node G -m pyfastviz.cli sweep ...` each "
                                          "process takes its share of the shards.")
    swp.add_argument("data", metavar="DATA", help="image folder (searched recursively) or list file")
    swp.add_argument("--method", choices=("occlusion", "gradient", "guided"), default="occlusion",
                     help="default: %(default)s")
    model_options(swp)
    swp.add_argument("--out", required=True, metavar="DIR", help="output folder (new, or this sweep's to resume)")
    swp.add_argument("--target", default="predicted", metavar="predicted|LABEL_FILE|CLASS",
                     help="each image's predicted class (default), a file of 'path<TAB>class' lines, "
                          "or one class name or index for every image")
    swp.add_argument("--window", type=at_least(1), metavar="PX", help="occlusion window side (default: 16)")
    swp.add_argument("--stride", type=at_least(1), metavar="PX", help="occlusion window step (default: 8)")
    swp.add_argument("--score", choices=("prob", "logit"), help="occlusion score (default: prob)")
    swp.add_argument("--smoothgrad", type=at_least(0), metavar="N", help="gradient: SmoothGrad over N noisy copies")
    swp.add_argument("--shard-size", type=at_least(1), default=256, metavar="N", help="images per shard (default: %(default)s)")
    swp.add_argument("--batch-size", type=at_least(1), default=16, metavar="N", help="images per batch (default: %(default)s)")
    swp.add_argument("--workers", type=at_least(0), metavar="N",
                     help="decoding processes per GPU/process (default: CPU cores per process, at most 8)")
    device_option(swp, "e.g. cpu, cuda (this process's GPU: cuda:LOCAL_RANK, the default when there is one)")
    quiet_option(swp)
    swp.set_defaults(run=_sweep, keyword_flags={"samples": "--smoothgrad"})  # for errors (cli.in_flags)


def _explain_command(commands, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    """A command that writes a map and an overlay per image file, for a class (see _explain_images)."""
    sub = commands.add_parser(name, help=help_, description=description)
    sub.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    model_options(sub)
    quiet_option(sub)
    sub.add_argument("--target", metavar="CLASS", help="class name (e.g. 'Egyptian cat') or index; default: predicted")
    sub.add_argument("--out", required=True, metavar="DIR", help="output folder")
    return sub


def _saliency(args: argparse.Namespace) -> None:
    if args.smoothgrad and args.method != "gradient":
        raise ValueError("--smoothgrad N needs --method gradient")

    def explain(model, x, cls):
        if args.method == "gradient":
            heat = saliency(model.net, x, cls, samples=args.smoothgrad, seed=args.seed, progress=not args.quiet)[0]
            return heat, saliency_to_pil(heat)
        grad = guided_backprop(model.net, x, cls)[0]
        return grad.abs().amax(dim=0), gradient_to_pil(grad)

    _explain_images(args, args.method, explain)


def _occlusion(args: argparse.Namespace) -> None:
    where = device(args.device)
    cuda = where.type == "cuda"

    @functools.cache
    def on_device(net):  # one copy on the GPU; the command's model stays on the CPU, where it picks the class
        return copy.deepcopy(net).to(where) if cuda else net

    def explain(model, x, cls):
        heat = occlusion(on_device(model.net), x.to(where), cls, window=args.window, stride=args.stride,
                         score=args.score, batch_size=args.batch_size, compile=args.compile,
                         progress=not args.quiet)[0].cpu()
        evidence = heat.clamp(min=0)  # where occluding lowers the score; map and overlay alike
        return evidence, saliency_to_pil(evidence)

    _explain_images(args, "occlusion", explain)


def _explain_images(args: argparse.Namespace, method: str, explain) -> None:
    """For each image: the class (args.target or the predicted one), explain(model, x (1, 3, S, S),
    class) -> (heat (S, S), picture), written as <stem>_<method>.png and an overlay."""
    paths, out = image_files(args.images, args.out, [method, f"{method}_overlay"])
    images = [load_image(p) for p in paths]  # fail on a bad file before loading the model
    model = load_model(args.model, weights_path=args.weights)
    target = None if args.target is None else class_index(model, args.target)
    for path, image in zip(paths, images):
        x = model.preprocess(image)[None]
        with torch.no_grad():
            probs = model.net(x).softmax(dim=1)[0]
        cls = int(probs.argmax()) if target is None else target
        heat, picture = explain(model, x, cls)
        photo = to_pil(model.preprocess.denormalize(x[0]))
        print(f"{path}: class {cls} {model.class_names[cls]!r} (p={probs[cls]:.3f})")
        print(save_png(picture, out / f"{path.stem}_{method}.png"))
        print(save_png(saliency_overlay(photo, heat), out / f"{path.stem}_{method}_overlay.png"))


LABEL_FILE_SUFFIXES = (".tsv", ".txt", ".csv", ".lst")


def _sweep_target(text: str):
    """--target as sweep's target=: "predicted" as it is (never a file of that name), an existing
    file as a label file (pathlib.Path), else a class name or index (sweep reads digits too)."""
    if text == "predicted":
        return text
    path = Path(text)
    if path.is_file():
        return path
    if path.suffix.lower() in LABEL_FILE_SUFFIXES or os.sep in text:
        raise ValueError(f"--target {text!r}: no such label file")
    return text


def _sweep(args: argparse.Namespace) -> None:
    target = _sweep_target(args.target)
    where = None if args.device is None else device(args.device)  # None: sweep's per-rank default
    out = output_folder(args.out)
    summary = sweep(args.data, out, method=args.method, model=args.model, weights=args.weights,
                    target=target, window=args.window, stride=args.stride, score=args.score,
                    samples=args.smoothgrad, shard_size=args.shard_size, batch_size=args.batch_size,
                    workers=args.workers, device=where, progress=not args.quiet)
    if summary.rank == 0:
        print(summary)
        print(out / "index.jsonl")
        if summary.images and not summary.mapped:
            raise ValueError(f"no image could be mapped: see {out / 'errors.jsonl'}")
