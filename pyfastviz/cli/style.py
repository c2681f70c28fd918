"""`texture`, `style`, `train-style` and `stylize`: Gram statistics matched by optimisation
(Gatys et al.) and by feed-forward networks (Johnson et al.; Dumoulin et al. for several styles)."""

from __future__ import annotations

import argparse
from contextlib import contextmanager

from pyfastviz.cli.common import at_least, device, device_option, image_files, model_options, output_file, quiet_option
from pyfastviz.data import image_extensions
from pyfastviz.fast_style import load_style_network, save_style_network, stylize, train_style
from pyfastviz.models import load_image, load_model, save_png, to_pil
from pyfastviz.style import image_input, style_transfer, texture_synthesis


def add_commands(commands) -> None:
    tex = commands.add_parser("texture", help="a texture with an image's Gram statistics (Gatys et al.)",
                              description="Write a texture grown from noise to match the example's Gram matrices.")
    tex.add_argument("image", metavar="IMAGE", help="example image file")
    tex.add_argument("--size", type=at_least(1), default=256, metavar="PX",
                     help="output side; the example is resized to this longer side (default: %(default)s)")
    tex.add_argument("--steps", type=at_least(0), default=500, help="L-BFGS steps (default: %(default)s)")
    tex.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default: %(default)s)")
    device_option(tex)
    model_options(tex)
    quiet_option(tex)
    tex.add_argument("--out", required=True, metavar="FILE", help="output PNG file")
    tex.set_defaults(run=_texture)

    sty = commands.add_parser("style", help="neural style transfer (Gatys et al.)",
                              description="Write CONTENT repainted in the style of STYLE (several styles blend "
                                          "equally unless --style-weights is given).")
    sty.add_argument("content", metavar="CONTENT", help="content image file")
    sty.add_argument("styles", nargs="+", metavar="STYLE", help="style image files")
    sty.add_argument("--style-weights", type=float, nargs="+", metavar="W", help="blend weight per style image")
    sty.add_argument("--size", type=at_least(1), default=256, metavar="PX",
                     help="longer side of the output (the content's aspect is kept) and of the style images "
                          "(default: %(default)s)")
    sty.add_argument("--steps", type=at_least(0), default=500, help="L-BFGS steps (default: %(default)s)")
    sty.add_argument("--preserve-color", action="store_true", help="transfer luminance only, keep the content's colours")
    sty.add_argument("--scales", type=at_least(1), default=1,
                     help="coarse-to-fine levels, each half the size of the next (default: %(default)s)")
    sty.add_argument("--init", choices=("content", "noise"), default="content",
                     help="start from the content image or from noise (default: %(default)s)")
    sty.add_argument("--seed", type=int, default=0, help="seed of the starting noise, --init noise "
                                                         "(default: %(default)s)")
    device_option(sty)
    model_options(sty)
    quiet_option(sty)
    sty.add_argument("--out", required=True, metavar="FILE", help="output PNG file")
    sty.set_defaults(run=_style)

    train = commands.add_parser("train-style", help="train a fast neural style network (Johnson et al.)",
                                description="Train a feed-forward network to paint images in the style of STYLE "
                                            "(several STYLEs: one network with a scale and shift per style, "
                                            "Dumoulin et al.) and save it to MODEL (safetensors; a .pth, .pt or "
                                            ".model name: the plain state_dict pytorch/examples saves).")
    train.add_argument("styles", nargs="+", metavar="STYLE", help="style image files")
    train.add_argument("--content", metavar="DIR",
                       help="folder of content images (default: random crops of the bundled sample photos)")
    train.add_argument("--size", type=at_least(1), default=256, metavar="PX",
                       help="training crop side (default: %(default)s)")
    train.add_argument("--steps", type=at_least(0), default=2000, help="Adam steps (default: %(default)s)")
    train.add_argument("--batch-size", type=at_least(1), default=4, metavar="N", help="default: %(default)s")
    train.add_argument("--style-weight", type=at_least(0, float), default=10.0, help="default: %(default)s")
    train.add_argument("--checkpoint-dir", metavar="DIR", help="checkpoint here, and resume from it")
    train.add_argument("--checkpoint-every", type=at_least(1), default=500, metavar="N", help="default: %(default)s")
    train.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    device_option(train)
    model_options(train, "--loss-model", "--loss-weights", "loss network")
    quiet_option(train)
    train.add_argument("--out", required=True, metavar="MODEL",
                       help="output network file: .safetensors, or .pth for a plain state_dict")
    train.set_defaults(run=_train_style, keyword_flags={"content_images": "--content"})  # for cli.in_flags

    styl = commands.add_parser("stylize", help="paint images with a trained fast style network",
                               description="Write <stem>_stylized.png per image, at the image's own size.")
    styl.add_argument("network", metavar="MODEL", help="a network saved by train-style (or a pytorch/examples "
                                                      "fast_neural_style .pth state dict)")
    styl.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    styl.add_argument("--style", type=float, nargs="+", metavar="S",
                      help="multi-style network: a style index, or one blend weight per style")
    device_option(styl)
    quiet_option(styl)
    styl.add_argument("--out", required=True, metavar="DIR", help="output folder")
    styl.set_defaults(run=_stylize)


def _gram_model(args: argparse.Namespace):
    """texture's and style's model on their --device, and a function PIL image -> (1, 3, H, W)
    input on it, longer side --size, aspect kept (no centre crop)."""
    where = device(args.device)
    model = load_model(args.model, weights_path=args.weights, device=where)
    return model, lambda image: image_input(image, args.size, model.preprocess).to(where)


@contextmanager
def _size_must_fit():
    """The memory check's refusal of a size (a MemoryError, raised before any work) as a one-line error."""
    try:
        yield
    except MemoryError as err:
        raise ValueError(f"{err}: lower --size") from None


def _texture(args: argparse.Namespace) -> None:
    out = output_file(args.out, ".png", inputs=[args.image])
    example = load_image(args.image)
    model, to_input = _gram_model(args)
    with _size_must_fit():
        result = texture_synthesis(model.net, to_input(example), size=args.size, steps=args.steps, tv_weight=0.5,
                                   seed=args.seed, preprocess=model.preprocess, progress=not args.quiet)
    print(f"Gram loss {result.history['style'][0]:.3f} -> {result.history['style'][-1]:.3f}")
    print(save_png(to_pil(model.preprocess.denormalize(result.image[0])), out))


def _style(args: argparse.Namespace) -> None:
    out = output_file(args.out, ".png", inputs=[args.content, *args.styles])
    content, styles = load_image(args.content), [load_image(p) for p in args.styles]
    model, to_input = _gram_model(args)
    with _size_must_fit():
        result = style_transfer(model.net, to_input(content), [to_input(s) for s in styles],
                                style_weights=args.style_weights, steps=args.steps, tv_weight=0.1, init=args.init,
                                preserve_color=args.preserve_color, scales=args.scales, seed=args.seed,
                                preprocess=model.preprocess, progress=not args.quiet)
    print(f"style loss {result.history['style'][0]:.3f} -> {result.history['style'][-1]:.3f}, "
          f"content loss {result.history['content'][-1]:.3f}")
    print(save_png(to_pil(model.preprocess.denormalize(result.image[0])), out))


def _train_style(args: argparse.Namespace) -> None:
    out = output_file(args.out, inputs=args.styles)
    if out.suffix.lower() in image_extensions():
        raise ValueError(f"--out {args.out!r} names a picture: a network file ends in .safetensors (or .pth for "
                         "a plain state_dict)")
    styles = [load_image(p) for p in args.styles]
    where = device(args.device)
    loss_model = load_model(args.loss_model, weights_path=args.loss_weights, device=where).net
    result = train_style(styles[0] if len(styles) == 1 else styles, args.content, loss_model=loss_model,
                         size=args.size, steps=args.steps, batch_size=args.batch_size, style_weight=args.style_weight,
                         checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, seed=args.seed,
                         device=where, progress=not args.quiet)
    history = result.history
    if history["total"]:
        steps = len(history["total"])
        print(f"perceptual loss {history['total'][0]:.3f} -> {history['total'][-1]:.3f} over {steps} "
              f"step{'s' if steps > 1 else ''}")
    print(save_style_network(result.network, out))


def _stylize(args: argparse.Namespace) -> None:
    paths, out = image_files(args.images, args.out, ["stylized"])
    network = load_style_network(args.network, device=device(args.device))
    style = None
    if args.style is not None:
        style = int(args.style[0]) if len(args.style) == 1 and args.style[0].is_integer() else args.style
    pictures = stylize(network, [load_image(p) for p in paths], style=style, progress=not args.quiet)
    for path, picture in zip(paths, pictures):
        print(save_png(picture, out / f"{path.stem}_stylized.png"))
