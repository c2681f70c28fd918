"""The `pyfastviz` command line: `demo` builds the gallery, `saliency` explains your images,
`occlusion` maps what covering each part of an image does to its class score, `classvis`,
`fool`, `invert` and `dream` make images by gradient ascent, `texture` and `style` match Gram
statistics, `train-style` and `stylize` train and run fast (feed-forward) style networks,
`filters`, `activations`, `embed` and `neighbours` look inside the model, and `sweep` maps every
image of a folder (resumable, sharded; under torchrun one process per GPU).

Errors users can fix (a missing or unreadable image, an unknown class or model) print one
line `pyfastviz: error: ...` to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import copy
import functools
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from pyfastviz.adversarial import fooling_images
from pyfastviz.classvis import class_visualization
from pyfastviz.data import ImageFolder, image_loader
from pyfastviz.deepdream import deepdream, layer_energy
from pyfastviz.fast_style import load_style_network, save_style_network, stylize, train_style
from pyfastviz.guided import guided_backprop
from pyfastviz.inversion import invert_features
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
from pyfastviz.models import (
    available_models,
    gradient_to_pil,
    load_image,
    load_model,
    saliency_overlay,
    saliency_to_pil,
    save_png,
    to_pil,
)
from pyfastviz.occlusion import occlusion
from pyfastviz.report import run_demo
from pyfastviz.saliency import saliency
from pyfastviz.style import image_input, style_transfer, texture_synthesis
from pyfastviz.sweep import sweep

METHODS = ("gradient", "guided")


def _parser() -> argparse.ArgumentParser:
    model_help = f"model (default: %(default)s; one of {', '.join(available_models())})"
    parser = argparse.ArgumentParser(prog="pyfastviz", description="Visualizing and understanding CNNs in PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def device_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="where to run (default: %(default)s: cuda when there is one)")

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", default="efficientnet_lite0", metavar="NAME", help=model_help)
        sub.add_argument("--weights", metavar="PATH", help="weights file for the model (a state dict)")

    demo = commands.add_parser("demo", help="build the HTML gallery of every technique on sample photos",
                               description="Build the HTML gallery of every technique on sample photos.")
    demo.add_argument("--out", default="pyfastviz-demo", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--full", action="store_true", help="paper-quality settings (slower)")
    demo.add_argument("--model", default="efficientnet_lite0", metavar="NAME", help=model_help)
    demo.add_argument("--style-image", metavar="FILE", help="paint china in this image's style in the style "
                                                            "transfer section (default: the flower photo)")

    def explain_command(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        """A command that writes a map and an overlay per image file, for a class (see _explain_images)."""
        sub = commands.add_parser(name, help=help_, description=description)
        sub.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
        model_options(sub)
        sub.add_argument("--target", metavar="CLASS", help="class name (e.g. 'Egyptian cat') or index; default: predicted")
        sub.add_argument("--out", required=True, metavar="DIR", help="output folder")
        return sub

    sal = explain_command("saliency", "saliency maps of image files",
                          "Write <stem>_<method>.png and <stem>_<method>_overlay.png per image.")
    sal.add_argument("--method", choices=METHODS, default="gradient",
                     help="gradient: vanilla gradient (Simonyan et al.), guided: guided backprop "
                          "(default: %(default)s)")
    sal.add_argument("--smoothgrad", type=int, default=0, metavar="N",
                     help="average the gradient over N noisy copies (SmoothGrad; --method gradient only)")

    occ = explain_command("occlusion", "occlusion maps of image files (Zeiler & Fergus)",
                          "Write <stem>_occlusion.png and <stem>_occlusion_overlay.png per image: "
                          "how much the class score drops when a window is covered.")
    occ.add_argument("--window", type=int, default=16, metavar="PX", help="window side (default: %(default)s)")
    occ.add_argument("--stride", type=int, default=8, metavar="PX", help="window step (default: %(default)s)")
    occ.add_argument("--score", choices=("prob", "logit"), default="prob", help="default: %(default)s")
    occ.add_argument("--compile", action="store_true", help="run the repeated chunk forward under torch.compile "
                                                            "(pays off from a few images on)")
    device_option(occ)
    occ.add_argument("--batch-size", type=int, metavar="N",
                     help="occluded images per forward pass (default: chosen from free memory)")

    vis = commands.add_parser("classvis", help="images that maximise classes (gradient ascent)",
                              description="Write <class>.png per class: the image, from noise, that maximises the "
                                          "class score minus an L2 penalty (jitter, blur and clipping regularisers).")
    vis.add_argument("classes", nargs="+", metavar="CLASS", help="class names (e.g. goldfish) or indices")
    vis.add_argument("--size", type=int, default=224, metavar="PX", help="image side (default: %(default)s)")
    vis.add_argument("--steps", type=int, default=100, help="Adam steps (default: %(default)s)")
    vis.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    vis.add_argument("--fourier", action="store_true",
                     help="optimise a decorrelated Fourier spectrum (Lucid's parameterisation) instead of pixels")
    model_options(vis)
    vis.add_argument("--out", required=True, metavar="DIR", help="output folder")

    fool = commands.add_parser("fool", help="fooling images: small changes that flip the predicted class",
                               description="Write <stem>_fooled.png and <stem>_perturbation.png per image.")
    fool.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    fool.add_argument("--target", required=True, metavar="CLASS", help="the class to be predicted (name or index)")
    fool.add_argument("--epsilon", type=float, default=8, help="L-inf budget in 1/255 of the pixel range "
                                                                 "(default: %(default)s)")
    fool.add_argument("--steps", type=int, default=50, help="most gradient steps (default: %(default)s)")
    model_options(fool)
    fool.add_argument("--out", required=True, metavar="DIR", help="output folder")

    inv = commands.add_parser("invert", help="feature inversion: an image rebuilt from a layer's features",
                              description="Write <stem>_inverted.png per image: the image, grown from noise, whose "
                                          "features at --layer match the photo's (Mahendran & Vedaldi).")
    inv.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    inv.add_argument("--layer", default="_blocks.2", metavar="NAME",
                     help="layer name, see `pyfastviz activations --list` (default: %(default)s)")
    inv.add_argument("--steps", type=int, default=200, help="Adam steps (default: %(default)s)")
    inv.add_argument("--tv-weight", type=float, default=1e-3, help="total-variation prior (default: %(default)s)")
    inv.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    model_options(inv)
    inv.add_argument("--out", required=True, metavar="DIR", help="output folder")

    dream = commands.add_parser("dream", help="DeepDream: amplify what a layer sees in an image",
                                description="Write <stem>_dream.png per image (multi-octave gradient ascent on "
                                            "the mean square activation of --layer, with jitter).")
    dream.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    dream.add_argument("--layer", default="_blocks.8", metavar="NAME", help="layer name (default: %(default)s)")
    dream.add_argument("--octaves", type=int, default=3, help="pyramid levels (default: %(default)s)")
    dream.add_argument("--steps", type=int, default=10, help="steps per octave (default: %(default)s)")
    dream.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    model_options(dream)
    dream.add_argument("--out", required=True, metavar="DIR", help="output folder")

    tex = commands.add_parser("texture", help="a texture with an image's Gram statistics (Gatys et al.)",
                              description="Write a texture grown from noise to match the example's Gram matrices.")
    tex.add_argument("image", metavar="IMAGE", help="example image file")
    tex.add_argument("--size", type=int, default=256, metavar="PX",
                     help="output side; the example is resized to this longer side (default: %(default)s)")
    tex.add_argument("--steps", type=int, default=500, help="L-BFGS steps (default: %(default)s)")
    tex.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    device_option(tex)
    model_options(tex)
    tex.add_argument("--out", required=True, metavar="FILE", help="output PNG file")

    sty = commands.add_parser("style", help="neural style transfer (Gatys et al.)",
                              description="Write CONTENT repainted in the style of STYLE (several styles blend "
                                          "equally unless --style-weights is given).")
    sty.add_argument("content", metavar="CONTENT", help="content image file")
    sty.add_argument("styles", nargs="+", metavar="STYLE", help="style image files")
    sty.add_argument("--style-weights", type=float, nargs="+", metavar="W", help="blend weight per style image")
    sty.add_argument("--size", type=int, default=256, metavar="PX",
                     help="longer side of the output (the content's aspect is kept) and of the style images "
                          "(default: %(default)s)")
    sty.add_argument("--steps", type=int, default=500, help="L-BFGS steps (default: %(default)s)")
    sty.add_argument("--preserve-color", action="store_true", help="transfer luminance only, keep the content's colours")
    sty.add_argument("--scales", type=int, default=1, help="coarse-to-fine levels, each half the size of the next "
                                                           "(default: %(default)s)")
    sty.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    device_option(sty)
    model_options(sty)
    sty.add_argument("--out", required=True, metavar="FILE", help="output PNG file")

    train = commands.add_parser("train-style", help="train a fast neural style network (Johnson et al.)",
                                description="Train a feed-forward network to paint images in the style of STYLE "
                                            "(several STYLEs: one network with a scale and shift per style, "
                                            "Dumoulin et al.) and save it to MODEL (safetensors).")
    train.add_argument("styles", nargs="+", metavar="STYLE", help="style image files")
    train.add_argument("--content", metavar="DIR",
                       help="folder of content images (default: random crops of the bundled sample photos)")
    train.add_argument("--size", type=int, default=256, metavar="PX", help="training crop side (default: %(default)s)")
    train.add_argument("--steps", type=int, default=2000, help="Adam steps (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=4, metavar="N", help="default: %(default)s")
    train.add_argument("--style-weight", type=float, default=10.0, help="default: %(default)s")
    train.add_argument("--checkpoint-dir", metavar="DIR", help="checkpoint here, and resume from it")
    train.add_argument("--checkpoint-every", type=int, default=500, metavar="N", help="default: %(default)s")
    train.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    train.add_argument("--device", metavar="DEV", help="e.g. cpu, cuda (default: cuda when there is one)")
    train.add_argument("--loss-model", default="efficientnet_lite0", metavar="NAME",
                       help=f"loss network (default: %(default)s; one of {', '.join(available_models())})")
    train.add_argument("--loss-weights", metavar="PATH", help="weights file for the loss network (a state dict)")
    train.add_argument("--out", required=True, metavar="MODEL", help="output network file (.safetensors)")

    styl = commands.add_parser("stylize", help="paint images with a trained fast style network",
                               description="Write <stem>_stylized.png per image, at the image's own size.")
    styl.add_argument("network", metavar="MODEL", help="a network saved by train-style (or a pytorch/examples "
                                                      "fast_neural_style .pth state dict)")
    styl.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    styl.add_argument("--style", type=float, nargs="+", metavar="S",
                      help="multi-style network: a style index, or one blend weight per style")
    styl.add_argument("--device", metavar="DEV", help="e.g. cpu, cuda (default: cuda when there is one)")
    styl.add_argument("--out", required=True, metavar="DIR", help="output folder")

    def inspect_command(name: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=description[0].lower() + description[1:-1], description=description)
        model_options(sub)
        sub.add_argument("--out", required=True, metavar="FILE", help="output PNG file")
        return sub

    filt = inspect_command("filters", "Write a convolution layer's filters as a PNG grid.")
    filt.add_argument("--layer", metavar="NAME",
                      help="nn.Conv2d name (model.named_modules()); default: the first convolution")
    filt.add_argument("--channel", type=int, metavar="C",
                      help="show input channel C of every filter in grey (needed unless the layer "
                           "has 1 or 3 input channels)")
    act = inspect_command("activations", "Write the strongest feature maps of a layer for one image.")
    act.add_argument("image", metavar="IMAGE", help="image file")
    act.add_argument("--layer", required=True, metavar="NAME", help="layer name (model.named_modules())")
    act.add_argument("--top", type=int, default=16, metavar="K", help="channels shown (default: %(default)s)")
    embed = inspect_command("embed", "Write a 2-D map of the images in a folder, by their penultimate features.")
    embed.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    embed.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="default: %(default)s")
    near = inspect_command("neighbours", "Write a query image's nearest neighbours among a folder's images.")
    near.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    near.add_argument("--query", required=True, metavar="IMAGE", help="query image file")
    near.add_argument("--k", type=int, default=5, help="neighbours shown (default: %(default)s)")

    swp = commands.add_parser("sweep", help="maps of every image of a folder, resumable (torchrun: many GPUs)",
                              description="Write the maps of every image under DATA (a folder, or a text file of "
                                          "image paths) to DIR in float16 shards, with DIR/index.jsonl (path, shard, "
                                          "offset, predicted class and probability, target, map statistics) and "
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
    swp.add_argument("--window", type=int, metavar="PX", help="occlusion window side (default: 16)")
    swp.add_argument("--stride", type=int, metavar="PX", help="occlusion window step (default: 8)")
    swp.add_argument("--score", choices=("prob", "logit"), help="occlusion score (default: prob)")
    swp.add_argument("--smoothgrad", type=int, metavar="N", help="gradient: SmoothGrad over N noisy copies")
    swp.add_argument("--shard-size", type=int, default=256, metavar="N", help="images per shard (default: %(default)s)")
    swp.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default: %(default)s)")
    swp.add_argument("--workers", type=int, metavar="N",
                     help="decoding processes per GPU/process (default: CPU cores per process, at most 8)")
    swp.add_argument("--device", metavar="DEV", help="e.g. cpu, cuda:0 (default: cuda:LOCAL_RANK, else cpu)")
    swp.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _demo(args: argparse.Namespace) -> None:
    index = run_demo(args.out, full=args.full, model_name=args.model, style_image=args.style_image)
    print(f"Gallery written to {index}")


def _saliency(args: argparse.Namespace) -> None:
    if args.smoothgrad < 0 or (args.smoothgrad and args.method != "gradient"):
        raise ValueError("--smoothgrad N needs N >= 0 and --method gradient")

    def explain(model, x, cls):
        if args.method == "gradient":
            heat = saliency(model.net, x, cls, samples=args.smoothgrad, progress=args.smoothgrad > 0)[0]
            return heat, saliency_to_pil(heat)
        grad = guided_backprop(model.net, x, cls)[0]
        return grad.abs().amax(dim=0), gradient_to_pil(grad)

    _explain_images(args, args.method, explain)


def _occlusion(args: argparse.Namespace) -> None:
    device = _device(args.device)
    cuda = device.type == "cuda"
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number of images, got {args.batch_size}")

    @functools.cache
    def on_device(net):  # one copy on the GPU; the command's model stays on the CPU, where it picks the class
        return copy.deepcopy(net).to(device) if cuda else net

    def explain(model, x, cls):
        heat = occlusion(on_device(model.net), x.to(device), cls, window=args.window, stride=args.stride,
                         score=args.score, batch_size=args.batch_size, compile=args.compile)[0].cpu()
        evidence = heat.clamp(min=0)  # where occluding lowers the score; map and overlay alike
        return evidence, saliency_to_pil(evidence)

    _explain_images(args, "occlusion", explain)


def _class_index(model, name: str, flag: str = "--target") -> int:
    """A class name or index given on the command line, with errors that name its flag."""
    number = name.strip()
    try:
        return model.class_index(int(number) if number.lstrip("-").isdigit() else name)
    except ValueError as error:
        raise ValueError(str(error).replace("name_or_index", flag)) from None


def _classvis(args: argparse.Namespace) -> None:
    model = load_model(args.model, weights_path=args.weights)
    classes = [_class_index(model, name, "CLASS") for name in args.classes]
    result = class_visualization(model.net, classes, size=args.size, steps=args.steps, lr=0.1, start="noise",
                                 seed=args.seed, preprocess=model.preprocess,
                                 parameterization="fourier" if args.fourier else "pixels")
    with torch.no_grad():
        probs = model.net(result.images).softmax(dim=1)
    for i, (cls, image) in enumerate(zip(classes, result.to_pil(model.preprocess))):
        name = model.class_names[cls]
        print(f"{name!r}: p = {probs[i, cls]:.3f}")
        print(save_png(image, Path(args.out) / f"{name.replace(' ', '_').replace('/', '_')}.png"))


def _fool(args: argparse.Namespace) -> None:
    paths, model, x = _photos(args)
    target = _class_index(model, args.target)
    result = fooling_images(model.net, x, target, epsilon=args.epsilon / 255, steps=args.steps,
                            preprocess=model.preprocess)
    for i, path in enumerate(paths):
        verdict = "fooled" if result.success[i] else "not fooled"
        print(f"{path}: {verdict}, predicted {model.class_names[int(result.predictions[i])]!r}, "
              f"L-inf {result.linf[i] * 255:.1f}/255, {int(result.steps[i])} steps")
        magnified = (0.5 + result.perturbation[i] / (2 * result.linf[i].clamp(min=1e-12))).clamp(0, 1)
        print(save_png(to_pil(model.preprocess.denormalize(result.images[i])), Path(args.out) / f"{path.stem}_fooled.png"))
        print(save_png(to_pil(magnified), Path(args.out) / f"{path.stem}_perturbation.png"))


def _photos(args: argparse.Namespace):
    """(paths, the model, the preprocessed batch (N, 3, S, S)) of the command's image files."""
    paths = [Path(p) for p in args.images]
    images = [load_image(p) for p in paths]
    model = load_model(args.model, weights_path=args.weights)
    return paths, model, model.preprocess.batch(images)


def _invert(args: argparse.Namespace) -> None:
    paths, model, x = _photos(args)
    result = invert_features(model.net, x, args.layer, steps=args.steps, lr=0.1, tv_weight=args.tv_weight,
                             preprocess=model.preprocess, seed=args.seed)
    for path, error, image in zip(paths, result.feature_error.tolist(), result.to_pil(model.preprocess)):
        print(f"{path}: relative feature error at {args.layer} {error:.3f}")
        print(save_png(image, Path(args.out) / f"{path.stem}_inverted.png"))


def _dream(args: argparse.Namespace) -> None:
    paths, model, x = _photos(args)
    result = deepdream(model.net, x, args.layer, octaves=args.octaves, steps_per_octave=args.steps, lr=0.1,
                       preprocess=model.preprocess, seed=args.seed)
    with torch.no_grad():
        gain = layer_energy(model.net, args.layer, result.images) / layer_energy(model.net, args.layer, x)
    for i, path in enumerate(paths):
        print(f"{path}: mean square activation of {args.layer} x{gain[i]:.2f}")
        print(save_png(to_pil(model.preprocess.denormalize(result.images[i])), Path(args.out) / f"{path.stem}_dream.png"))


def _gram_model(args: argparse.Namespace):
    """texture's and style's model on their --device, and a function PIL image -> (1, 3, H, W)
    input on it, longer side --size, aspect kept (no centre crop)."""
    device = _device(args.device)
    model = load_model(args.model, weights_path=args.weights, device=device)
    return model, lambda image: image_input(image, args.size, model.preprocess).to(device)


@contextmanager
def _size_must_fit():
    """The memory check's refusal of a size (a MemoryError, raised before any work) as a one-line error."""
    try:
        yield
    except MemoryError as err:
        raise ValueError(f"{err}: lower --size") from None


def _texture(args: argparse.Namespace) -> None:
    example = load_image(args.image)
    model, to_input = _gram_model(args)
    with _size_must_fit():
        result = texture_synthesis(model.net, to_input(example), size=args.size, steps=args.steps, tv_weight=0.5,
                                   seed=args.seed, preprocess=model.preprocess)
    print(f"Gram loss {result.history['style'][0]:.3f} -> {result.history['style'][-1]:.3f}")
    print(save_png(to_pil(model.preprocess.denormalize(result.image[0])), args.out))


def _style(args: argparse.Namespace) -> None:
    content, styles = load_image(args.content), [load_image(p) for p in args.styles]
    model, to_input = _gram_model(args)
    with _size_must_fit():
        result = style_transfer(model.net, to_input(content), [to_input(s) for s in styles],
                                style_weights=args.style_weights, steps=args.steps, tv_weight=0.1,
                                preserve_color=args.preserve_color, scales=args.scales, seed=args.seed,
                                preprocess=model.preprocess)
    print(f"style loss {result.history['style'][0]:.3f} -> {result.history['style'][-1]:.3f}, "
          f"content loss {result.history['content'][-1]:.3f}")
    print(save_png(to_pil(model.preprocess.denormalize(result.image[0])), args.out))


def _device(name: str | None) -> torch.device:
    """A command's --device: None or "auto" is cuda when there is one, else cpu; any other name
    that torch device, checked against the GPUs torch sees."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a torch device ({err})") from None
    count = torch.cuda.device_count()
    if device.type == "cuda" and device.index is None and count == 0:
        raise ValueError(f"--device {name} needs a CUDA GPU, and torch sees none")
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ValueError(f"--device {name!r}: this machine has {count} CUDA device(s)")
    return device


def _train_style(args: argparse.Namespace) -> None:
    styles = [load_image(p) for p in args.styles]
    device = _device(args.device)
    loss_model = load_model(args.loss_model, weights_path=args.loss_weights, device=device).net
    result = train_style(styles[0] if len(styles) == 1 else styles, args.content, loss_model=loss_model,
                         size=args.size, steps=args.steps, batch_size=args.batch_size, style_weight=args.style_weight,
                         checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, seed=args.seed,
                         device=device)
    history = result.history
    if history["total"]:
        print(f"perceptual loss {history['total'][0]:.3f} -> {history['total'][-1]:.3f} over {len(history['total'])} steps")
    print(save_style_network(result.network, args.out))


def _stylize(args: argparse.Namespace) -> None:
    network = load_style_network(args.network, device=_device(args.device))
    style = None
    if args.style is not None:
        style = int(args.style[0]) if len(args.style) == 1 and args.style[0].is_integer() else args.style
    paths = [Path(p) for p in args.images]
    pictures = stylize(network, [load_image(p) for p in paths], style=style)
    for path, picture in zip(paths, pictures):
        print(save_png(picture, Path(args.out) / f"{path.stem}_stylized.png"))


def _explain_images(args: argparse.Namespace, method: str, explain) -> None:
    """For each image: the class (args.target or the predicted one), explain(model, x (1, 3, S, S),
    class) -> (heat (S, S), picture), written as <stem>_<method>.png and an overlay."""
    paths = [Path(p) for p in args.images]
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):
        raise ValueError(f"two images share a file name stem; outputs would collide: {', '.join(map(str, paths))}")
    images = [load_image(p) for p in paths]  # fail on a bad file before loading the model
    model = load_model(args.model, weights_path=args.weights)
    target = None if args.target is None else _class_index(model, args.target)
    out = Path(args.out)
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


def _filters(args: argparse.Namespace) -> None:
    model = load_model(args.model, weights_path=args.weights)
    try:
        grid = filter_grid(model.net, layer=args.layer, channel=args.channel)
    except ValueError as err:  # name the flag, not the Python keyword
        raise ValueError(str(err).replace("pass channel= ", "pass --channel C ")
                         .replace("channel=", "--channel ").replace("layer=", "--layer ")) from None
    print(save_png(grid, args.out))


def _activations(args: argparse.Namespace) -> None:
    image = load_image(args.image)
    model = load_model(args.model, weights_path=args.weights)
    act = activations(model.net, model.preprocess(image)[None], args.layer)
    if act.dim() != 4:
        raise ValueError(f"--layer {args.layer!r} gives shape {tuple(act.shape)}, not feature maps (N, C, h, w)")
    print(save_png(activation_grid(act[0], top=args.top), args.out))


def _folder(args: argparse.Namespace, at_least: int):
    """The model and the folder's readable images (skipped files listed on stderr)."""
    if not Path(args.folder).is_dir():
        raise ValueError(f"{args.folder!r} is not a folder")
    model = load_model(args.model, weights_path=args.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # listed below, one line per file
        dataset = ImageFolder(args.folder, preprocess=model.preprocess)
    for path, reason in dataset.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(dataset) < at_least:
        raise ValueError(f"{args.command} needs at least {at_least} readable images in {args.folder!r}, "
                         f"found {len(dataset)}")
    return model, dataset


def _embed(args: argparse.Namespace) -> None:
    model, dataset = _folder(args, at_least=3)
    features = extract_features(model.net, image_loader(dataset))
    coords = tsne(features, perplexity=min(30.0, len(dataset) - 1)) if args.method == "tsne" else pca(features)[0]
    print(save_png(embedding_image([load_image(p) for p in dataset.paths], coords), args.out))


def _neighbours(args: argparse.Namespace) -> None:
    query = load_image(args.query)
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    model, dataset = _folder(args, at_least=args.k)
    features = extract_features(model.net, image_loader(dataset))
    query_features = extract_features(model.net, model.preprocess(query)[None], progress=False)
    distances, indices = nearest_neighbours(features, query_features, k=args.k)
    for distance, index in zip(distances[0].tolist(), indices[0].tolist()):
        print(f"{dataset.paths[index]}: cosine distance {distance:.4f}")
    print(save_png(neighbours_figure(query, [load_image(dataset.paths[i]) for i in indices[0].tolist()]), args.out))


def _sweep(args: argparse.Namespace) -> None:
    target = args.target
    if Path(target).is_file():
        target = Path(target)
    elif target.strip().isdigit():
        target = int(target)
    try:
        summary = sweep(args.data, args.out, method=args.method, model=args.model, weights=args.weights,
                        target=target, window=args.window, stride=args.stride, score=args.score,
                        samples=args.smoothgrad, shard_size=args.shard_size, batch_size=args.batch_size,
                        workers=args.workers, device=args.device, progress=not args.quiet)
    except ValueError as err:  # name the flags, not the Python keywords
        message = str(err)
        for keyword, flag in (("samples", "smoothgrad"), ("shard_size", "shard-size"), ("batch_size", "batch-size"),
                              ("window", "window"), ("stride", "stride"), ("score", "score"), ("workers", "workers")):
            message = re.sub(rf"\b{keyword}=?(?=[ ,])", f"--{flag}", message)
        raise ValueError(message) from None
    if summary.rank == 0:
        print(summary)
        print(Path(args.out) / "index.jsonl")


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        commands = {"demo": _demo, "saliency": _saliency, "occlusion": _occlusion, "classvis": _classvis,
                    "fool": _fool, "invert": _invert, "dream": _dream, "train-style": _train_style,
                    "stylize": _stylize, "texture": _texture, "style": _style, "filters": _filters, "activations": _activations, "embed": _embed,
                    "neighbours": _neighbours, "sweep": _sweep}
        commands[args.command](args)
    except (OSError, ValueError) as err:
        print(f"pyfastviz: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
