"""The demo page: every technique on the default model and the sample photos, one gallery
section per technique. A new technique adds one builder `(DemoContext) -> Section` to SECTIONS."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import nn
from tqdm.auto import tqdm

from pyfastviz.adversarial import fooling_images
from pyfastviz.classvis import class_visualization
from pyfastviz.deepdream import deepdream, layer_energy
from pyfastviz.fast_style import stylize, train_style
from pyfastviz.guided import guided_backprop
from pyfastviz.inspect import (
    activation_grid,
    activations,
    embedding_image,
    extract_features,
    filter_grid,
    nearest_neighbours,
    neighbours_figure,
    pca,
    strongest_channels,
    top_patches,
    tsne,
)
from pyfastviz.models import (
    SAMPLE_IMAGES,
    ActivationTap,
    LoadedModel,
    gradient_to_pil,
    heatmap_overlay,
    image_grid,
    layer_names,
    load_image,
    load_model,
    sample_image,
    saliency_overlay,
    saliency_to_pil,
    save_png,
    to_pil,
)
from pyfastviz.models.images import to_unit_tensor
from pyfastviz.inversion import invert_features
from pyfastviz.occlusion import occlusion
from pyfastviz.saliency import saliency
from pyfastviz.style import StyleTargets, image_input, style_transfer, texture_synthesis
from pyfastviz.style import extract_features as extract_style_features

from .gallery import FIGURE_WIDTH, Figure, Section, staged_folder, write_gallery

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower")
MIDDLE_LAYERS = {"efficientnet_lite0": "_blocks.10"}  # else the convolution 2/3 of the way in
EARLY_LAYERS = {"efficientnet_lite0": "_blocks.4"}  # else the convolution 1/3 of the way in
INVERSION_LAYERS = {"efficientnet_lite0": {"early": "_blocks.2", "deep": "_blocks.8"}}  # else early / middle
DREAM_LAYERS = {"efficientnet_lite0": "_blocks.8"}  # else the middle layer
FAST_STYLES = ("flower", "brick")


@dataclass
class DemoContext:
    """What every section builder gets: the model, the page folder, the settings, and the
    sample photos preprocessed once (with the model's predictions) for all sections."""

    model: LoadedModel  # on the device every section runs on
    out_dir: Path
    full: bool = False
    progress: bool = True
    style_image: Image.Image | None = None  # the style section's style (default: the flower photo)

    @cached_property
    def inputs(self) -> torch.Tensor:
        """The photos as model input, (N, 3, S, S), in PHOTOS order, on the model's device."""
        return self.to_model(self.model.preprocess.batch([sample_image(name) for name in PHOTOS]))

    @cached_property
    def photos(self) -> list[Image.Image]:
        """The photos as the model sees them (resized, centre-cropped), as PIL images."""
        return [to_pil(x) for x in self.model.preprocess.denormalize(self.inputs)]

    @cached_property
    def middle_layer(self) -> str:
        """A layer two thirds of the way into the model, for sections about intermediate units."""
        if self.model.name in MIDDLE_LAYERS:
            return MIDDLE_LAYERS[self.model.name]
        convs = layer_names(self.model.net, nn.Conv2d)
        return convs[len(convs) * 2 // 3]

    @cached_property
    def early_layer(self) -> str:
        """A layer a third of the way into the model."""
        if self.model.name in EARLY_LAYERS:
            return EARLY_LAYERS[self.model.name]
        convs = layer_names(self.model.net, nn.Conv2d)
        return convs[len(convs) // 3]

    @cached_property
    def probs(self) -> torch.Tensor:
        """Softmax class probabilities, (N, num_classes)."""
        with torch.no_grad():
            return self.model.net(self.inputs).softmax(dim=1)

    @cached_property
    def predicted(self) -> torch.Tensor:
        """The predicted class of each photo, (N,)."""
        return self.probs.argmax(dim=1)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """x on the model's device."""
        return x.to(next(self.model.net.parameters()).device)

    def label(self, i: int, cls: int | None = None) -> str:
        """'class name (probability)' of photo i, for its predicted class by default."""
        cls = int(self.predicted[i]) if cls is None else cls
        return f"{self.model.class_names[cls]} ({self.probs[i, cls]:.2f})"

    def photo(self, i: int) -> Figure:
        """Photo i as the model sees it, captioned with its prediction (shared by all sections)."""
        return self.save(self.photos[i], f"photos/{PHOTOS[i]}.png", f"{PHOTOS[i]}: {self.label(i)}")

    def save(self, image: Image.Image, relpath: str, caption: str) -> Figure:
        """Save `image` as PNG at `relpath` under the page folder; its Figure, shown at least at its
        own width."""
        save_png(image, self.out_dir / relpath)
        return Figure(relpath, caption, width=max(FIGURE_WIDTH, image.width))


def saliency_section(ctx: DemoContext) -> Section:
    """Vanilla gradient and SmoothGrad maps of the predicted class; one photo's top-5 classes."""
    net, x = ctx.model.net, ctx.inputs
    samples = 50 if ctx.full else 25
    maps = saliency(net, x, progress=False)
    smooth = saliency(net, x, samples=samples, seed=0, progress=ctx.progress)
    rows = []
    for i, name in enumerate(PHOTOS):
        rows.append([
            ctx.photo(i),
            ctx.save(saliency_to_pil(maps[i]), f"saliency/{name}_map.png", f"gradient: {ctx.label(i)}"),
            ctx.save(saliency_overlay(ctx.photos[i], maps[i]), f"saliency/{name}_overlay.png",
                     "gradient, blurred, over the photo"),
            ctx.save(saliency_to_pil(smooth[i]), f"saliency/{name}_smoothgrad.png",
                     f"SmoothGrad, {samples} samples"),
        ])
    top5 = ctx.probs[:1].topk(5, dim=1).indices  # (1, 5): the first photo's top-5 classes
    top_maps = saliency(net, x[:1], top5, progress=False)[0]
    rows.append([ctx.save(saliency_to_pil(m), f"saliency/{PHOTOS[0]}_top{rank}.png", f"top-{rank}: {ctx.label(0, cls)}")
                 for rank, (cls, m) in enumerate(zip(top5[0].tolist(), top_maps), start=1)])
    return Section(
        "Saliency by backprop (vanilla gradient)",
        "Simonyan et al. (2014): the magnitude of the gradient of the class score with respect to "
        "each pixel (max over colour channels) shows which pixels change the score most. Per photo: "
        f"the input, its map for the predicted class, an overlay, and SmoothGrad (Smilkov et al. 2017, "
        f"the mean gradient over {samples} noisy copies). Then the {PHOTOS[0]} photo's top-5 "
        "classes, from one call with a (1, 5) target.",
        rows,
    )


def guided_section(ctx: DemoContext) -> Section:
    """Guided backprop of the predicted class, and of each photo's most active channel of a
    middle layer (with where that channel fires)."""
    net, x, layer = ctx.model.net, ctx.inputs, ctx.middle_layer
    guided = guided_backprop(net, x)
    with ActivationTap(net, layer) as tap, torch.no_grad():
        net(x)
    activation = tap[layer]  # (N, C, h, w)
    channels = activation.mean(dim=(2, 3)).argmax(dim=1).tolist()
    rows = []
    for i, name in enumerate(PHOTOS):
        c = channels[i]
        unit = guided_backprop(net, x[i : i + 1], layer=layer, channel=c)[0]
        rows.append([
            ctx.photo(i),
            ctx.save(gradient_to_pil(guided[i]), f"guided/{name}_class.png", f"guided: {ctx.label(i)}"),
            ctx.save(heatmap_overlay(ctx.photos[i], activation[i, c]), f"guided/{name}_channel_activation.png",
                     f"{layer} channel {c}: activation"),
            ctx.save(gradient_to_pil(unit), f"guided/{name}_channel.png", f"guided: {layer} channel {c}"),
        ])
    return Section(
        "Guided backprop",
        "Springenberg et al. (2015): the gradient with every ReLU passing back only positive gradients "
        "where its input was positive, which keeps the image structure that excites the unit. Per photo: "
        f"the input, guided backprop of the predicted class, where the most active channel of layer "
        f"{layer} fires, and guided backprop of that channel (its mean activation).",
        rows,
    )


def _photo_set(ctx: DemoContext) -> tuple[list[str], torch.Tensor, list[Image.Image]]:
    """Every sample image, its mirror image and a centre crop (88%): names, model input
    (3N, 3, S, S) and the pictures as the model sees them."""
    names, images = [], []
    for name in SAMPLE_IMAGES:
        image = sample_image(name)
        w, h = image.size
        crop = image.crop((round(0.06 * w), round(0.06 * h), round(0.94 * w), round(0.94 * h)))
        names += [name, f"{name} (mirrored)", f"{name} (cropped)"]
        images += [image, ImageOps.mirror(image), crop]
    x = ctx.to_model(ctx.model.preprocess.batch(images))
    return names, x, [to_pil(p) for p in ctx.model.preprocess.denormalize(x)]


def occlusion_section(ctx: DemoContext) -> Section:
    """Occlusion maps of the predicted class: how much its probability drops when a grey window
    (the input mean) covers each part of the photo."""
    window, stride = (16, 8) if ctx.full else (32, 16)
    maps = occlusion(ctx.model.net, ctx.inputs, ctx.predicted, window=window, stride=stride, progress=ctx.progress)
    rows = []
    for i, name in enumerate(PHOTOS):
        drop = maps[i].clamp(min=0)
        rows.append([
            ctx.photo(i),
            ctx.save(saliency_to_pil(drop), f"occlusion/{name}_map.png", f"probability drop: {ctx.label(i)}"),
            ctx.save(saliency_overlay(ctx.photos[i], drop), f"occlusion/{name}_overlay.png", "over the photo"),
        ])
    return Section(
        "Saliency by occlusion",
        "Zeiler & Fergus (2014): cover a window of the image with the mean colour, run the model again "
        f"for every window position ({window} px windows every {stride} px), and map how much the predicted "
        "class's probability drops, averaged where windows overlap (equal to Captum's Occlusion). Per photo: "
        "the input, the map, and the map over the photo.",
        rows,
    )


GRADIENT_ASCENT_CLASSES = ("goldfish", "tarantula", "jellyfish", "monarch")


def gradient_ascent_section(ctx: DemoContext) -> Section:
    """Class visualisations from noise, in pixels and in a Fourier basis, and chelsea fooled into
    'goldfish' within 8/255."""
    size, steps = (224, 200) if ctx.full else (128, 30)
    fourier_size, fourier_steps = (224, 256) if ctx.full else (160, 60)
    model, preprocess = ctx.model, ctx.model.preprocess
    classes = [model.class_index(name) for name in GRADIENT_ASCENT_CLASSES]

    def visualise(parameterization: str, size: int, steps: int, lr: float) -> list[Figure]:
        vis = class_visualization(model.net, classes, size=size, steps=steps, lr=lr, start="noise", seed=0,
                                  preprocess=preprocess, parameterization=parameterization, progress=ctx.progress)
        with torch.no_grad():
            probs = model.net(vis.images).softmax(dim=1)
        return [ctx.save(image, f"gradient_ascent/{name.replace(' ', '_')}_{parameterization}.png",
                         f"{name}, {parameterization}: p = {probs[i, cls]:.2f} after {steps} steps")
                for i, (name, cls, image) in enumerate(zip(GRADIENT_ASCENT_CLASSES, classes, vis.to_pil(preprocess)))]

    in_pixels = visualise("pixels", size, steps, lr=0.1)
    in_fourier = visualise("fourier", fourier_size, fourier_steps, lr=0.05)
    goldfish = model.class_index("goldfish")
    adv = fooling_images(model.net, ctx.inputs[:1], goldfish, epsilon=8 / 255, preprocess=preprocess,
                         progress=False)
    fooled = model.net(adv.images).softmax(dim=1)[0].detach()
    magnified = (0.5 + adv.perturbation[0] / (2 * adv.linf[0].clamp(min=1e-12))).clamp(0, 1)
    fooling = [
        ctx.photo(0),
        ctx.save(to_pil(preprocess.denormalize(adv.images[0])), "gradient_ascent/chelsea_fooled.png",
                 f"fooled: {model.class_names[int(fooled.argmax())]} ({fooled.max():.2f}), "
                 f"L-inf {adv.linf[0] * 255:.1f}/255, {int(adv.steps[0])} steps"),
        ctx.save(to_pil(magnified), "gradient_ascent/chelsea_perturbation.png", "the perturbation, magnified"),
    ]
    return Section(
        "Images by gradient ascent",
        "Simonyan et al. (2014), Yosinski et al. (2015): the image that maximises a class score minus an L2 "
        f"penalty, from noise, with jitter, blur and clipping of small pixels ({size} px, {steps} Adam steps; "
        "the caption gives the class probability the model assigns to it). Below them the same classes "
        "optimised as a colour-decorrelated, frequency-scaled spectrum (Olah et al. 2017, Feature Visualization; "
        f"{fourier_size} px, {fourier_steps} steps), which keeps the high-frequency noise out. Then a fooling "
        "image: the cat photo changed by at most 8/255 per pixel until the model calls it a goldfish.",
        [in_pixels, in_fourier, fooling],
    )


def inversion_dream_section(ctx: DemoContext) -> Section:
    """chelsea rebuilt from its features at an early and a deeper layer; coffee dreamed on."""
    size, steps, dream_steps = (224, 300, 10) if ctx.full else (96, 40, 4)
    model, preprocess = ctx.model, ctx.model.preprocess
    layers = INVERSION_LAYERS.get(model.name, {"early": ctx.early_layer, "deep": ctx.middle_layer})
    cat = torch.nn.functional.interpolate(ctx.inputs[:1], size=(size, size), mode="bilinear", antialias=True)
    inversions = [ctx.photo(0)]
    for depth, layer in layers.items():
        inverted = invert_features(model.net, cat, layer, steps=steps, lr=0.1, tv_weight=1e-3, seed=0,
                                   preprocess=preprocess, progress=ctx.progress)
        inversions.append(ctx.save(inverted.to_pil(preprocess)[0], f"inversion/chelsea_{depth}.png",
                                   f"from {layer} ({depth}): relative feature error {inverted.feature_error[0]:.2f}"))
    coffee = ctx.inputs[PHOTOS.index("coffee")][None]
    dream_layer = DREAM_LAYERS.get(model.name, ctx.middle_layer)
    dream = deepdream(model.net, coffee, dream_layer, octaves=3, steps_per_octave=dream_steps, lr=0.1, seed=0,
                      preprocess=preprocess, progress=ctx.progress)
    with torch.no_grad():
        gain = layer_energy(model.net, dream_layer, dream.images) / layer_energy(model.net, dream_layer, coffee)
    dreams = [ctx.photo(PHOTOS.index("coffee")),
              ctx.save(to_pil(preprocess.denormalize(dream.images[0])), "inversion/coffee_dream.png",
                       f"DeepDream on {dream_layer}: its mean square activation x{float(gain[0]):.1f}")]
    return Section(
        "Feature inversion and DeepDream",
        "Mahendran & Vedaldi (2015): an image grown from noise until its features at one layer match the photo's, "
        f"with a total-variation prior ({size} px, {steps} Adam steps; the caption gives the relative feature "
        "error reached). Early layers keep the photo; deeper ones keep only what the model needs to recognise it. "
        f"Then DeepDream (Mordvintsev et al. 2015): gradient ascent on a layer's mean square activation over three "
        f"octaves ({dream_steps} steps each) with jitter, so the patterns that layer detects grow into the photo.",
        [inversions, dreams],
    )


def style_section(ctx: DemoContext) -> Section:
    """A texture grown from noise with the Gram statistics of `flower`; `china` in the style of
    `flower`, or of ctx.style_image when the user gave one."""
    size, steps = (384, 400) if ctx.full else (128, 150)
    preprocess = ctx.model.preprocess
    china, flower = (ctx.inputs[PHOTOS.index(name)][None] for name in ("china", "flower"))
    small = torch.nn.functional.interpolate(china, size=(size, size), mode="bilinear", antialias=True)
    style_name = "flower" if ctx.style_image is None else "your image"
    style = flower if ctx.style_image is None else ctx.to_model(image_input(ctx.style_image, size, preprocess))
    # a total-variation prior keeps the default model's features from matching on pixel noise (at
    # 0.5 / 0.1 the texture and the painting were mostly that noise)
    texture = texture_synthesis(ctx.model.net, flower, size=size, steps=steps, optimizer="adam", tv_weight=5.0,
                                seed=0, preprocess=preprocess, progress=ctx.progress)
    styled = style_transfer(ctx.model.net, small, style, steps=steps, optimizer="adam", tv_weight=1.0, seed=0,
                            preprocess=preprocess, progress=ctx.progress)
    textures = [
        ctx.photo(PHOTOS.index("flower")),
        ctx.save(to_pil(preprocess.denormalize(texture.image[0])), "style/flower_texture.png",
                 f"texture from noise: Gram loss {texture.history['style'][0]:.2f} -> {texture.history['style'][-1]:.2f}"),
    ]
    transfer = [ctx.photo(PHOTOS.index("china"))]
    if ctx.style_image is not None:
        transfer.append(ctx.save(to_pil(preprocess.denormalize(style[0])), "style/style_image.png",
                                 "style: your image"))
    transfer.append(ctx.save(to_pil(preprocess.denormalize(styled.image[0])), "style/china_styled.png",
                             f"china in the style of {style_name}: style loss {styled.history['style'][0]:.2f} -> "
                             f"{styled.history['style'][-1]:.2f}"))
    return Section(
        "Texture synthesis and style transfer",
        "Gatys et al. (2015, 2016): an image whose Gram matrices (channel correlations) at several layers match "
        f"those of an example, grown from noise; and a photo repainted to match a style image's Gram matrices "
        f"while keeping its own content features ({size} px, {steps} Adam steps on pixels, a total-variation "
        "prior; captions give the relative style loss before and after; `pyfastviz demo --style-image FILE` "
        "paints china in your image's style). VGG weights, when given, are the classic loss network.",
        [textures, transfer],
    )


def fast_style_section(ctx: DemoContext) -> Section:
    """A network trained briefly on `flower`, applied to two photos; a two-style network (flower,
    brick) with a 50/50 blend; captions give each output's style loss to its style image."""
    # quick: a lighter style weight than train_style's default keeps the photo recognisable after
    # so few steps (at 10 the 80-step network painted chelsea as leaves)
    size, steps, style_weight, shown = (256, 2000, 10.0, 256) if ctx.full else (64, 100, 2.0, 128)
    net, preprocess = ctx.model.net, ctx.model.preprocess
    styles = {name: sample_image(name) for name in FAST_STYLES}
    train = dict(loss_model=net, size=size, batch_size=2 if not ctx.full else 4, steps=steps, style_weight=style_weight,
                 lr=1e-2 if not ctx.full else 1e-3, seed=0, preprocess=preprocess, progress=ctx.progress)
    single = train_style(styles[FAST_STYLES[0]], **train).network
    both = train_style(list(styles.values()), **train).network
    targets = {name: StyleTargets(net, ctx.to_model(preprocess(image)[None])) for name, image in styles.items()}
    layers = {name: dict.fromkeys(t.layers, 1 / len(t.layers)) for name, t in targets.items()}

    def style_loss(picture: Image.Image, name: str) -> float:
        with torch.no_grad():
            x = ctx.to_model(preprocess.normalize(to_unit_tensor(picture)))
            return float(targets[name].loss(extract_style_features(net, x[None], targets[name].layers), layers[name]))

    photos = [ctx.photos[PHOTOS.index(name)].resize((shown, shown)) for name in ("chelsea", "china")]
    style_row = [ctx.save(styles[name].resize((shown, shown)), f"fast_style/style_{name}.png", f"style: {name}")
                 for name in FAST_STYLES]
    single_row, blend_row = [], []
    first = FAST_STYLES[0]
    for name, photo, out in zip(("chelsea", "china"), photos, stylize(single, photos, progress=ctx.progress)):
        single_row.append(ctx.save(out, f"fast_style/{name}_{first}.png",
                                   f"{name} in one pass: style loss to {first} {style_loss(out, first):.2f} "
                                   f"(the photo: {style_loss(photo, first):.2f})"))
    for label, style in (*((n, i) for i, n in enumerate(FAST_STYLES)), ("50/50 blend", [0.5, 0.5])):
        out = stylize(both, photos[0], style=style)
        losses = ", ".join(f"{n} {style_loss(out, n):.2f}" for n in FAST_STYLES)
        blend_row.append(ctx.save(out, f"fast_style/chelsea_two_styles_{label.replace('/', '_').replace(' ', '_')}.png",
                                  f"two-style network, {label}: style losses {losses}"))
    return Section(
        "Fast neural style",
        "Johnson et al. (2016): a feed-forward network (downsampling convolutions, five residual blocks, "
        "upsampling, instance norm) trained to minimise the perceptual loss of the style-transfer section, then "
        f"run in one forward pass on any photo ({size} px crops of the sample photos, {steps} Adam steps, "
        f"style weight {style_weight:g}, the default model as loss network). Then one network for two styles "
        "(Dumoulin et al. 2017: each style owns only its instance-norm scale and shift), run with either style "
        "or a blend of their scales and shifts. Captions give the relative style loss of each output to each "
        "style image.",
        [style_row, single_row, blend_row],
    )


def inside_section(ctx: DemoContext) -> Section:
    """First-layer filters, a middle layer's feature maps, neighbours in feature vs pixel space,
    a 2-D map of the features, and the patches that excite one channel most."""
    net, layer = ctx.model.net, ctx.middle_layer
    convs, early = layer_names(net, nn.Conv2d), ctx.early_layer
    act = activations(net, ctx.inputs[:1], layer)[0]
    names, x, pictures = _photo_set(ctx)
    features = extract_features(net, x, progress=ctx.progress)
    pixels = torch.nn.functional.interpolate(x, size=(32, 32), mode="area").flatten(1)
    query = names.index(f"{PHOTOS[0]} (mirrored)")
    rows = [[
        ctx.save(filter_grid(net), "inside/filters.png", f"first-layer filters ({convs[0]}), each scaled to its range"),
        ctx.photo(0),
        ctx.save(activation_grid(act, top=16), "inside/activations.png",
                 f"{layer}: top-16 channels by mean activation ({', '.join(map(str, strongest_channels(act, 4).tolist()))}, ...)"),
    ]]
    for space, vectors in (("feature", features), ("pixel", pixels)):
        _, nearest = nearest_neighbours(vectors, vectors[query : query + 1], k=5)
        found = [i for i in nearest[0].tolist() if i != query][:4]
        rows.append([ctx.save(neighbours_figure(pictures[query], [pictures[i] for i in found]),
                              f"inside/neighbours_{space}.png",
                              f"{space} space: {names[query]} (framed), then {', '.join(names[i] for i in found)}")])
    method = "t-SNE" if ctx.full else "PCA"
    coords = tsne(features, perplexity=8.0) if ctx.full else pca(features)[0]
    embedding = ctx.save(embedding_image(pictures, coords, size=672, thumb=80), "inside/embedding.png",
                         f"{method} of the penultimate features of {len(names)} images")
    early_act = activations(net, x, early)
    channel = int(early_act.amax(dim=(0, 2, 3)).argmax())
    patches = top_patches(net, x, early, channel, k=9, progress=ctx.progress)
    crops = [pictures[p.index].crop(p.box).resize((64, 64), Image.Resampling.BICUBIC) for p in patches]
    maps = [gradient_to_pil(p.guided).resize((64, 64), Image.Resampling.BICUBIC) for p in patches]
    rows.append([
        embedding,
        ctx.save(image_grid(crops, ncols=3), "inside/patches.png",
                 f"{early} channel {channel}: its 9 strongest activations' receptive fields"),
        ctx.save(image_grid(maps, ncols=3), "inside/patches_guided.png", "the same 9 units, guided backprop"),
    ])
    return Section(
        "Looking inside the model",
        "The first layer's filters (each normalised on its own); the 16 most active feature maps of layer "
        f"{layer} for the {PHOTOS[0]} photo; the nearest neighbours of a mirrored photo among {len(names)} "
        "images (every sample image, mirrored and cropped) in the penultimate feature space (cosine) and "
        f"in pixel space (32 x 32 thumbnails); a {method} "
        "map of those features; and, Zeiler & Fergus style, the receptive fields of the 9 strongest "
        f"activations of one channel of {early} over the set, with the guided backprop of each unit.",
        rows,
    )


SECTIONS = [saliency_section, guided_section, occlusion_section, gradient_ascent_section, inversion_dream_section,
            style_section, fast_style_section, inside_section]


def run_demo(
    out_dir: str | os.PathLike = "pyfastviz-demo",
    full: bool = False,
    model_name: str = "efficientnet_lite0",
    progress: bool = True,
    style_image: str | os.PathLike | None = None,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """Build the gallery of every technique in SECTIONS into `out_dir`; returns its index.html.
    Quick by default; `full=True` uses paper-quality settings (slower). style_image: an image file
    to paint `china` in, in the style section (default: the flower photo). weights_path: as for
    load_model. device: where every technique runs (default: CUDA when there is one, else the
    CPU). The gallery is built aside and replaces out_dir only once complete (see
    gallery.staged_folder), so a failed run leaves the last gallery as it was."""
    out_dir = Path(out_dir).resolve()
    style = load_image(style_image) if style_image is not None else None  # a bad file fails before any work
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_name, weights_path, device=device)
    with staged_folder(out_dir) as staging:
        ctx = DemoContext(model, staging, full=full, progress=progress, style_image=style)
        sections = [build(ctx) for build in tqdm(SECTIONS, desc="pyfastviz demo", disable=not progress)]
        intro = (
            f"Model: {ctx.model.name}, ImageNet classes, {ctx.model.preprocess.size} px input, on {device.type}; "
            f"sample photos from scikit-image and scikit-learn; {'full' if full else 'quick'} settings."
        )
        write_gallery(staging, "pyfastviz demo", sections, intro)
    return out_dir / "index.html"
