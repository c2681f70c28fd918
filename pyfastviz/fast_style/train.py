"""Training fast style networks (Johnson et al. 2016; multi-style: Dumoulin et al. 2017):
Adam on the perceptual loss of a frozen loss network, with resumable checkpoints."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from pyfastviz._fingerprints import tensors_sha256, weights_sha256
from pyfastviz._inputs import check_model
from pyfastviz._state import gradients_enabled
from pyfastviz.models import Preprocess, load_model, preprocess_of
from pyfastviz.style import check_layers, default_layers

from .files import read_tensors, write_tensors
from .images import ContentSampler, style_tensor
from .loss import PerceptualLoss, frozen
from .network import TransformerNet
from .saving import load_state

CHECKPOINT_NAME = "fast_style_checkpoint"
LOSSES = ("content", "style", "tv", "total")


@dataclass
class TrainResult:
    """network: the trained TransformerNet (eval mode, on the training device). history: per
    name in LOSSES, one float per step (batch mean before that step's update; "total" weighted)."""

    network: TransformerNet
    history: dict[str, list[float]]


@gradients_enabled()  # trains also inside the caller's torch.no_grad() or torch.inference_mode()
def train_style(style_images, content_images=None, *, loss_model: torch.nn.Module | None = None, size: int = 256,
                style_size: int | None = None, batch_size: int = 4, steps: int = 2000, lr: float = 1e-3,
                content_weight: float = 1.0, style_weight: float = 10.0, tv_weight: float = 1e-4,
                content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 500,
                resume: bool = True, seed: int = 0, device: str | torch.device | None = None,
                mixed_precision: bool | None = None, preprocess: Preprocess | None = None,
                progress: bool = True) -> TrainResult:
    """Trains a TransformerNet to paint content images in the style of `style_images`.

    style_images: one image (PIL, path or (3, H, W) float tensor of pixels in [0, 1], else a
    ValueError) -> single-style network; a list -> multi-style network, image i of step t gets
    style (t * batch_size + i) % S.
    content_images: None (random crops of pyfastviz.fast_style.SAMPLE_PHOTOS), a folder, or a
    list of PIL images / paths; crops are size x size (see ContentSampler). Styles are resized to
    a shorter side of style_size (default size).
    loss_model: any nn.Module taking RGB normalised by `preprocess` (default: load_model().net,
    EfficientNet-Lite0), frozen during training and restored after.
    preprocess: the loss model's input normalisation (mean/std), default preprocess_of(loss_model)
    (the one load_model gave it, else ImageNet's). content_layer / style_layers default to
    pyfastviz.style.default_layers. Loss per image: content_weight * content +
    style_weight * style + tv_weight * tv (see PerceptualLoss); Adam with lr.
    checkpoint_dir: write a checkpoint every checkpoint_every steps and at the end; with resume,
    continue from the one there (same seed: same weights as an uninterrupted run). A checkpoint
    of another configuration, or of a later step than `steps`, raises a ValueError. device:
    default the loss model's; with loss_model=None, cuda when there is one, else cpu (the default
    model is loaded there). mixed_precision: bf16 autocast, None = on for CUDA with bf16.
    Works inside torch.no_grad() and torch.inference_mode() too.
    """
    styles = _styles(style_images)
    num_styles, multi = len(styles), isinstance(style_images, (list, tuple))
    for name, value in (("size", size), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        _check_int(value, name, 1)
    _check_int(steps, "steps", 0)
    _check_int(seed, "seed", 0, 2**31 - 1)
    style_size = size if style_size is None else _check_int(style_size, "style_size", 1)
    for name, value in (("content_weight", content_weight), ("style_weight", style_weight),
                        ("tv_weight", tv_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device={device!r} is not a torch device: {err}") from None
    if loss_model is None:
        loss_model = load_model(device=device or torch.device("cuda" if torch.cuda.is_available() else "cpu")).net
    check_model(loss_model)
    preprocess = preprocess or preprocess_of(loss_model)
    device = _device(loss_model, device)
    layers = default_layers(loss_model) if content_layer is None or style_layers is None else None
    content_layer = check_layers(loss_model, [content_layer or layers.content], "content_layer")[0]
    style_layers = check_layers(loss_model, layers.style if style_layers is None else style_layers, "style_layers")
    amp = _mixed_precision(mixed_precision, device)
    styles = [style_tensor(image, style_size) for image in styles]
    sampler = ContentSampler(content_images, size, seed, progress)
    config = {"num_styles": num_styles, "multi_style": multi, "size": size, "style_size": style_size,
              "batch_size": batch_size, "lr": lr, "content_weight": content_weight, "style_weight": style_weight,
              "tv_weight": tv_weight, "content_layer": content_layer, "style_layers": style_layers, "seed": seed,
              "loss_model": type(loss_model).__name__, "loss_model_sha256": weights_sha256(loss_model),
              "content_images": len(sampler), "content_sha256": sampler.fingerprint(),
              "loss_normalization": [[float(v) for v in preprocess.mean], [float(v) for v in preprocess.std]],
              "styles_sha256": tensors_sha256((str(i), style) for i, style in enumerate(styles))}
    config = json.loads(json.dumps(config))  # as checkpoints store it (lists, not tuples); fails before any work

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = TransformerNet(num_styles if multi else None)
    network.to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    history = {name: [] for name in LOSSES}
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start = 0
    if path is not None and resume and path.is_file():
        start, history = _load_checkpoint(path, config, network, optimizer)
        if start > steps:
            raise ValueError(f"steps={steps} but the checkpoint {str(path)!r} is of step {start}: pass "
                             f"steps >= {start}, resume=False or another checkpoint_dir")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
    with frozen(loss_model):
        loss = PerceptualLoss(loss_model, [s.to(device) for s in styles], content_layer, style_layers, preprocess)
        bar = tqdm(range(start, steps), initial=start, total=steps, desc="fast style", disable=not progress)
        records = []
        for step in bar:
            content = sampler.batch(step, batch_size).to(device, non_blocking=True)
            style_index = (step * batch_size + torch.arange(batch_size)) % num_styles  # CPU: no GPU syncs
            records.append(train_step(network, optimizer, loss, content, style_index, weights, amp))
            done = step + 1
            if progress and (done % 10 == 0 or done == steps):
                bar.set_postfix(content=f"{records[-1][0].item():.3g}", style=f"{records[-1][1].item():.3g}")
            if path is not None and (done % checkpoint_every == 0 or done == steps):
                _flush(records, history)
                _save_checkpoint(path, config, network, optimizer, done, history)
        _flush(records, history)
    return TrainResult(network.eval(), history)


def train_step(network: TransformerNet, optimizer: torch.optim.Optimizer, loss: PerceptualLoss,
               content: torch.Tensor, style_index: torch.Tensor, weights: dict[str, float],
               amp: bool) -> torch.Tensor:
    """One Adam step on content (N, 3, H, W) pixels in [0, 255] with per-image style_index (N,)
    (ignored by a single-style network; on the CPU it costs no host-device syncs); weights: the
    loss parts' weights. amp: bf16 autocast.
    Returns the batch means of LOSSES, (4,) detached."""
    with torch.autocast(content.device.type, dtype=torch.bfloat16, enabled=amp):
        output = network(content, style_index if network.num_styles else None)
        parts = loss(output, content, style_index)
    total = sum(weights[name] * parts[name] for name in weights)
    optimizer.zero_grad(set_to_none=True)
    total.mean().backward()
    optimizer.step()
    return torch.stack([parts["content"].mean(), parts["style"].mean(), parts["tv"].mean(), total.mean()]).detach()


def _flush(records: list[torch.Tensor], history: dict[str, list[float]]) -> None:
    """Moves the per-step loss records (tensors, maybe on the GPU) into history, one sync."""
    if records:
        for name, column in zip(LOSSES, torch.stack(records).cpu().T.tolist()):
            history[name].extend(column)
        records.clear()


def _save_checkpoint(path, config, network, optimizer, step, history) -> None:
    tensors = {f"network.{name}": t for name, t in network.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"optimizer.{index}.{key}": t for key, t in state.items()})
    tensors.update({f"history.{name}": torch.tensor(values, dtype=torch.float64) for name, values in history.items()})
    write_tensors(path, tensors, {"kind": "checkpoint", "step": step, "config": config})


def _load_checkpoint(path, config, network, optimizer) -> tuple[int, dict[str, list[float]]]:
    tensors, meta = read_tensors(path, "checkpoint")
    if meta is None or meta.get("kind") != "checkpoint" or not isinstance(meta.get("step"), int):
        raise ValueError(f"{str(path)!r} is not a fast-style training checkpoint")
    saved = meta.get("config", {})
    different = sorted(k for k in config.keys() | saved.keys() if saved.get(k) != config.get(k))
    if different:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {config.get(k)!r}" for k in different)
        raise ValueError(f"the checkpoint {str(path)!r} is from another configuration ({details}); "
                         "pass resume=False or another checkpoint_dir")
    load_state(network, {k[8:]: t for k, t in tensors.items() if k.startswith("network.")}, path)
    state = {}
    for key, tensor in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = tensor
    try:
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{str(path)!r}: damaged optimizer state ({err})") from None
    try:
        history = {name: tensors[f"history.{name}"].tolist() for name in LOSSES}
    except KeyError as err:
        raise ValueError(f"{str(path)!r}: no loss history {err}") from None
    return meta["step"], history


def _styles(style_images) -> list:
    if isinstance(style_images, (list, tuple)):
        if not style_images:
            raise ValueError("style_images must not be an empty list")
        return list(style_images)
    if isinstance(style_images, torch.Tensor) and style_images.dim() == 4 and style_images.shape[0] > 1:
        raise ValueError("style_images: pass several styles as a list of (3, H, W) tensors, not one batch")
    if not isinstance(style_images, (Image.Image, str, os.PathLike, torch.Tensor)):
        raise TypeError(f"style_images must be a PIL image, path, tensor or a list of them, "
                        f"got {type(style_images).__name__}")
    return [style_images]


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be an int >= {low}{bound}, got {value!r}")
    return value


def _device(model: torch.nn.Module, device) -> torch.device:
    parameter = next(model.parameters(), None)
    where = parameter.device if parameter is not None else torch.device("cpu")
    if device is None:
        return where
    if device.type != where.type or (device.index is not None and device != where):
        raise ValueError(f"device={str(device)!r} but loss_model is on {where}: move the loss model there first")
    return where


def _mixed_precision(mixed_precision, device: torch.device) -> bool:
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if mixed_precision is None:
        return bf16
    if not isinstance(mixed_precision, bool):
        raise TypeError(f"mixed_precision must be None, True or False, got {mixed_precision!r}")
    if mixed_precision and not bf16:
        raise ValueError(f"mixed_precision=True needs a CUDA device with bf16, got {device}")
    return mixed_precision
