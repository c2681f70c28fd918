"""sweep(): saliency maps of every image of a folder or list file, in fixed shards, resumable,
one process per device under torchrun."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pyfastviz._fingerprints import lines_sha256, tensors_sha256, weights_sha256
from pyfastviz._inputs import check_choice, check_count, check_fraction, check_index, check_model, input_dtype
from pyfastviz._state import evaluation_mode
from pyfastviz.models import LoadedModel, load_model
from pyfastviz.models.zoo import PREPROCESS_ATTRIBUTE
from pyfastviz.occlusion import SCORES, baseline_fill, occlusion_geometry
from pyfastviz.sweep import manifest, plan, store
from pyfastviz.sweep import maps as maps_of
from pyfastviz.sweep import targets as sweep_targets
from pyfastviz.sweep.distributed import Group, local_device, process_group
from pyfastviz.sweep.loading import SweepImages, batch_loader

METHODS = ("occlusion", "gradient", "guided")
OPTIONS = {  # per method: its options and their defaults
    "occlusion": {"window": 16, "stride": 8, "score": "prob", "baseline": 0.0},
    "gradient": {"samples": 0, "noise": 0.15, "seed": 0},
    "guided": {},
}


@dataclass(frozen=True)
class SweepSummary:
    """How a sweep run went. images: in the list; mapped / errors: rows of the finished index
    and error list; resumed: images of shards an earlier run had finished; seconds: the whole
    call; loop_seconds: this rank's shard loop, compute_seconds the part of it in the model
    (forward, backward and maps, to the maps on the CPU); rank of world processes."""

    out: Path
    images: int
    mapped: int
    errors: int
    resumed: int
    seconds: float
    loop_seconds: float
    compute_seconds: float
    rank: int
    world: int

    def __str__(self) -> str:
        new = self.images - self.resumed
        rate = ""
        if new and self.seconds:  # s/image below one image a second
            rate = (f", {new / self.seconds:.1f} images/s" if new >= self.seconds
                    else f", {self.seconds / new:.1f} s/image")
        return (f"sweep {self.out}: {self.images} images, {self.mapped} mapped, {self.errors} errors, "
                f"{self.resumed} done by an earlier run; {self.seconds:.1f} s on {self.world} process(es){rate}")


def sweep(data: str | os.PathLike, out: str | os.PathLike, *, method: str = "occlusion",
          model: str | LoadedModel | nn.Module = "efficientnet_lite0", weights: str | os.PathLike | None = None,
          preprocess: Callable | None = None, classes: Sequence[str] | None = None, target=None,
          window: int | None = None, stride: int | None = None, score: str | None = None,
          baseline: float | None = None, samples: int | None = None, noise: float | None = None,
          seed: int | None = None, shard_size: int = 256, batch_size: int = 16, workers: int | None = None,
          device: str | torch.device | None = None, progress: bool = True) -> SweepSummary:
    """Saliency maps of every image under `data`, written to folder `out` (read it with load_sweep).

    data: a folder (recursive) or a text file of image paths; images are taken in sorted path
    order, shard k = images [k * shard_size, (k + 1) * shard_size), each shard computed in
    batches of batch_size and written as one float16 (n, H, W) .npy plus its index rows (each map
    stored divided by its row's power-of-two map_scale, so tiny values keep their precision).
    method: "occlusion" (options window=16, stride=8, score="prob", baseline=0.0),
    "gradient" (samples=0 i.e. vanilla, else SmoothGrad with noise=0.15, seed=0), "guided".
    model: a load_model name (with weights=), a LoadedModel, or an nn.Module with
    preprocess= (PIL image -> (C, H, W) tensor; a net from load_model brings its own) and
    optionally classes= (names).
    target: None or "predicted" (each image's top class), a class index or name for every
    image, or a pathlib.Path to a label file of `relative/path<TAB>class` lines.
    Unreadable, empty or truncated files, images the label file lacks, images that
    preprocess gives another size than the first one, and maps with NaN or inf go to the error
    list. Rerunning the same call resumes after a crash; other options (another model structure
    or preprocess result too), or images added, removed or replaced by a file of another size,
    against the same `out` raise ValueError. batch_size and device may change on resume (maps
    then equal to rounding): SmoothGrad draws each image's noise on the CPU, seeded by (seed,
    its position in the sorted list).
    Under torchrun each rank (NCCL on its GPU, gloo on the CPU) maps every world-th shard of
    those left, and rank 0 merges the index.
    workers: decoding processes per rank (default: the CPU cores per local rank, at most 8).
    device: default cuda:LOCAL_RANK, else the CPU; "cuda" is cuda:LOCAL_RANK too (an nn.Module
    is used where it is, which must be this rank's GPU under torchrun).
    The model is left as found.
    """
    start = time.perf_counter()
    data, out = _path(data, "data"), _path(out, "out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; give a folder (new, or this sweep's to resume)")
    check_choice(method, "method", METHODS)
    options = _method_options(method, dict(window=window, stride=stride, score=score, baseline=baseline,
                                           samples=samples, noise=noise, seed=seed))
    if workers is None:
        workers = max(1, min(8, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    for name, value, least in (("shard_size", shard_size, 1), ("batch_size", batch_size, 1), ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    net, preprocess, classes, device = _resolve_model(model, weights, preprocess, classes, device)
    with process_group(device) as group:
        setup = group.broadcast(_plan_on_rank0(group, data, out, net, preprocess, classes, target, method,
                                               options, shard_size))
        if isinstance(setup, str):
            raise ValueError(setup)
        base, paths, targets, size, todo, resumed = setup
        mine = todo[group.rank::group.world]
        images = SweepImages(base, paths, preprocess, size)
        loop_seconds, compute_seconds = _run_shards(group, net, images, classes, method, options, targets, mine,
                                                    out, shard_size, batch_size, workers,
                                                    progress and group.rank == 0)
        group.barrier()
        counts = None
        if group.rank == 0:  # a finished sweep run again is left as it is
            shards = plan.shard_count(len(paths), shard_size)
            counts = (not todo and store.merged_counts(out)) or store.merge(out, shards)
        mapped, errors = group.broadcast(counts)
    return SweepSummary(out, len(paths), mapped, errors, resumed, time.perf_counter() - start, loop_seconds,
                        compute_seconds, group.rank, group.world)


def _path(value, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__} {value!r}")
    return Path(value)


def _method_options(method: str, given: dict) -> dict:
    """The method's options, defaults filled in (numpy values and 0-d/1-d tensors as the Python
    numbers and lists the manifest records); one given for another method is an error."""
    options = dict(OPTIONS[method])
    for name, value in given.items():
        if value is None:
            continue
        if name not in options:
            owner = next(m for m, names in OPTIONS.items() if name in names)
            raise ValueError(f"{name}= applies to method={owner!r}, not method={method!r}")
        options[name] = _plain(value, name)
    return options


def _plain(value, name: str):
    """An option value as JSON can record it: numpy scalars, arrays and tensors of at most one
    dimension as Python numbers and lists; larger ones are refused (the manifest records values)."""
    if not isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value
    if value.ndim > 1:
        raise TypeError(f"{name}= must be a number or one value per channel, got a {type(value).__name__} of shape "
                        f"{tuple(value.shape)} (the manifest records option values)")
    return value.tolist()


def _resolve_model(model, weights, preprocess, classes, device):
    """-> (net, preprocess, class names or None, device)."""
    if isinstance(model, str):
        model = load_model(model, weights_path=weights, device=local_device(device))
    elif weights is not None:
        raise ValueError("weights= applies to a model given by name")
    if isinstance(model, LoadedModel):
        net, preprocess, classes = model.net, preprocess or model.preprocess, classes or model.class_names
    else:
        net = check_model(model)
        preprocess = preprocess or getattr(net, PREPROCESS_ATTRIBUTE, None)  # a net from load_model brings its own
        if preprocess is None or not callable(preprocess):
            raise TypeError("preprocess must be a callable PIL image -> (C, H, W) tensor when model is an nn.Module "
                            "not from load_model")
    parameter = next(net.parameters(), None)
    where = local_device(parameter.device if parameter is not None else "cpu")
    _check_device(device, where)
    if classes is not None and not all(isinstance(c, str) for c in classes):
        raise TypeError("classes must be a list of class names (str)")
    return net, preprocess, None if classes is None else list(classes), where


def _check_device(device, where: torch.device) -> None:
    """device= (None: any) must name where the model is; under torchrun a GPU model must be on
    this rank's own GPU, cuda:LOCAL_RANK."""
    if device is not None and local_device(device) != where:
        raise ValueError(f"device={str(device)!r} ({local_device(device)}) but the model is on {where}; "
                         "move the model there first")
    mine = local_device("cuda")
    if where.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and where != mine:
        raise ValueError(f"under torchrun each rank computes on its own GPU: the model is on {where}, "
                         f"this rank's is {mine} (LOCAL_RANK)")


def _plan_on_rank0(group: Group, data, out: Path, net, preprocess, classes, target, method, options, shard_size):
    """On rank 0: list the images, check every option and label against the first image that
    decodes, check or write the manifest, clean up after a crash, and list the shards left.
    Returns (base, paths, per-image targets, the first image's size (C, H, W) or None, shards
    to do, images already done), or an error message for every rank to raise; None on other ranks."""
    if group.rank != 0:
        return None
    try:
        base, paths = plan.list_images(data)
        if not paths:
            raise ValueError(f"data={str(data)!r} holds no image files")
        first = _first_image(base, paths, preprocess)
        size = None if first is None else tuple(first.shape)
        count = None if first is None else _class_count(net, first, group.device)
        if classes is not None and count is not None and len(classes) != count:
            raise ValueError(f"classes has {len(classes)} names but the model gives {count} outputs")
        spec, targets = sweep_targets.resolve(target, paths, classes, count if classes is None else len(classes))
        if size is not None:
            _check_options(method, options, size)
        manifest.write_or_check(out, {
            "method": method, **options, "target": spec, "model": type(net).__name__,
            "model_structure_sha256": lines_sha256([_describe(net)]),
            "weights_sha256": weights_sha256(net), "preprocess": _describe(preprocess),
            "preprocessed_first_image_sha256": None if first is None else tensors_sha256([("", first)]),
            "classes_sha256": None if classes is None else lines_sha256(classes),
            "shard_size": shard_size, **_noise_entry(method, options), "images": len(paths),
            "images_sha256": lines_sha256(plan.with_file_sizes(base, paths)),
            "maps": "float16 / map_scale"},
            bool(store.done_shards(out)))
        store.remove_partial(out)
        done = store.done_shards(out)
        shards = plan.shard_count(len(paths), shard_size)
        resumed = sum(len(plan.shard_range(k, len(paths), shard_size)) for k in done)
        return base, paths, targets, size, [k for k in range(shards) if k not in done], resumed
    except (OSError, ValueError, TypeError) as err:
        if group.world == 1:
            raise
        return f"rank 0: {err}"


def _noise_entry(method: str, options: dict) -> dict:
    """SmoothGrad's noise scheme, so that a folder whose noise was drawn otherwise (pyfastviz
    before it: one draw per batch, its batch_size recorded instead) is refused, not mixed."""
    smoothgrad = method == "gradient" and options["samples"]
    return {"noise_draws": "per image, seeded by (seed, position)"} if smoothgrad else {}


def _first_image(base: Path, paths: list[str], preprocess) -> torch.Tensor | None:
    """The first image that decodes, preprocessed (C, H, W); None when none does."""
    images = SweepImages(base, paths, preprocess)
    for i in range(len(images)):
        _, x, _ = images[i]
        if x is not None:
            return x
    return None


def _class_count(net: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """The model's number of classes: the width of its output for image x (C, H, W)."""
    with evaluation_mode(net), torch.no_grad():
        return net(x[None].to(device, input_dtype(net))).shape[1]


def _describe(thing) -> str:
    """A preprocess or model as the manifest records it: its repr (a dataclass's or torchvision
    transforms' settings, a function's name; a model's modules) on one line, without memory
    addresses, which change from run to run."""
    return " ".join(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(thing)).split())


def _check_options(method: str, options: dict, size: tuple[int, ...]) -> None:
    """A ValueError for an option that would fail on every image of this size (C, H, W), raised
    before the manifest locks the folder to it."""
    if method == "occlusion":
        occlusion_geometry(size, options["window"], options["stride"])
        check_choice(options["score"], "score", SCORES)
        baseline_fill(options["baseline"], torch.zeros(1, *size))
    elif method == "gradient":
        check_count(options["samples"], "samples", 0)
        check_fraction(options["noise"], "noise")
        check_index(options["seed"], "seed")


def _run_shards(group, net, images: SweepImages, classes, method, options, targets, shards, out, shard_size,
                batch_size, workers, show) -> tuple[float, float]:
    """Map this rank's shards, writing each in a background thread while the next computes.
    Returns (loop seconds, compute seconds)."""
    paths, dtype = images.paths, input_dtype(net)
    batches, ends = plan.batches(shards, len(paths), shard_size, batch_size)
    loader = batch_loader(images, batches, workers, group.device.type == "cuda")
    start, compute = time.perf_counter(), 0.0
    maps, rows, errors, failed = [], [], [], 0
    pending: Future | None = None
    with ThreadPoolExecutor(1) as writer, tqdm(total=sum(map(len, batches)), unit="img", disable=not show,
                                               desc=f"sweep {method} x{group.world}") as bar:
        for (good, x, bad), end in zip(loader, ends):
            shard = (good or [i for i, _ in bad])[0] // shard_size
            errors += [{"path": paths[i], "shard": shard, "error": reason} for i, reason in bad]
            wanted = good if not isinstance(targets, list) else [i for i in good if targets[i] is not None]
            errors += [{"path": paths[i], "shard": shard, "error": "no class for it in the label file"}
                       for i in good if i not in wanted]
            finite = []
            if wanted:
                tick = time.perf_counter()
                x = x[[good.index(i) for i in wanted]] if len(wanted) < len(good) else x
                batch_maps, batch_rows = maps_of.explain(net, x.to(group.device, dtype, non_blocking=True), wanted,
                                                         method, options, maps_of.batch_targets(targets, wanted),
                                                         classes, show)
                compute += time.perf_counter() - tick
                finite = [j for j, row in enumerate(batch_rows) if maps_of.is_finite(row)]
                errors += [{"path": paths[wanted[j]], "shard": shard, "error": maps_of.NOT_FINITE}
                           for j in range(len(wanted)) if j not in finite]
                offset = sum(len(m) for m in maps)
                maps.append(batch_maps[finite])
                rows += [{"path": paths[wanted[j]], "shard": shard, "offset": offset + k, **batch_rows[j]}
                         for k, j in enumerate(finite)]
            bar.update(len(good) + len(bad))
            failed += len(bad) + len(good) - len(finite)
            bar.set_postfix(errors=failed, refresh=False)
            if end:
                if pending is not None:
                    pending.result()
                pending = writer.submit(store.write_shard, out, shard, np.concatenate(maps) if maps else None,
                                        rows, errors)
                maps, rows, errors = [], [], []
        if pending is not None:
            pending.result()
    return time.perf_counter() - start, compute
