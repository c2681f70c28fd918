"""One batch of a sweep: its maps, stored as scaled float16, and their index rows."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pyfastviz._inputs import widened
from pyfastviz._state import evaluation_mode
from pyfastviz.guided import guided_backprop
from pyfastviz.occlusion import occlusion
from pyfastviz.saliency import saliency

NOT_FINITE = "the model's output or its map is not finite (NaN or inf)"
POSITIONS_PER_PASS = 16  # occlusion: window positions of every image of a batch per forward pass


def is_finite(row: dict) -> bool:
    """Whether an index row's probabilities and map are finite."""
    return all(math.isfinite(row[key]) for key in ("probability", "target_probability", "map_min", "map_max"))


def batch_targets(targets, positions: list[int]):
    if targets is None or isinstance(targets, int):
        return targets
    return torch.tensor([targets[i] for i in positions])


def explain(net: nn.Module, x: torch.Tensor, positions: list[int], method: str, options: dict, target, classes,
             show: bool):
    """-> (maps (B, H, W) float16 numpy, each divided by its row's map_scale, one index row per image
    without its path/shard/offset).
    positions: the images' places in the sorted list; show: occlusion's own progress bar."""
    with evaluation_mode(net), torch.no_grad():
        probs = widened(net(x)).softmax(1)
    probability, predicted = probs.max(1)
    chosen = predicted if target is None else torch.as_tensor(target, device=x.device).expand(len(x))
    if method == "occlusion":
        maps = occlusion(net, x, chosen, **options, batch_size=POSITIONS_PER_PASS * len(x), progress=show)
    elif method == "gradient" and options["samples"]:
        maps = saliency(net, x, chosen, samples=options["samples"], noise=options["noise"],
                        seed=_image_seeds(options["seed"], positions), batch_size=len(x), progress=False)
    elif method == "gradient":
        maps = saliency(net, x, chosen, progress=False)
    else:
        maps = guided_backprop(net, x, chosen, reduce="abs_max")
    stored, scale = _to_float16(maps.detach())
    flat = (stored.double() * scale[:, None, None]).flatten(1)  # the index describes the maps as stored
    peak = flat.argmax(1)
    columns = {"predicted": predicted, "probability": probability, "target": chosen,
               "target_probability": probs.gather(1, chosen[:, None])[:, 0], "map_min": flat.amin(1),
               "map_max": flat.amax(1), "map_mean": flat.mean(1), "peak_row": peak // stored.shape[2],
               "peak_col": peak % stored.shape[2], "map_scale": scale}
    columns = {name: value.cpu().tolist() for name, value in columns.items()}
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    if classes is not None:
        for row in rows:
            row["predicted_name"], row["target_name"] = classes[row["predicted"]], classes[row["target"]]
    return stored.cpu().numpy(), rows


def _to_float16(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """maps (B, H, W) -> (maps / scale as float16, scale (B,) float64), scale the power of two that
    brings each map's largest magnitude into [0.5, 1): float16 then keeps 11 significant bits of a
    map whatever its size, where unscaled values below 6e-8 would round to 0 (1 for an all-zero
    map; float64, as the index records it, so that maps beyond float32's 2^127 scale too)."""
    maps = maps.double()
    largest = maps.flatten(1).abs().amax(1)
    scale = torch.where(largest > 0, torch.ldexp(torch.ones_like(largest), torch.frexp(largest).exponent), 1.0)
    return (maps / scale[:, None, None]).half(), scale


def _image_seeds(seed: int, positions: list[int]) -> list[int]:
    """SmoothGrad's noise seed of each image, from (seed, its position): with one generator per
    image (saliency's seed=list), a map depends on neither its batch nor the device."""
    return [int(np.random.SeedSequence([seed % 2**64, i]).generate_state(1, np.uint64)[0]) for i in positions]
