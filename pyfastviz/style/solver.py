"""The image optimiser of texture synthesis and style transfer: L-BFGS or Adam on logit pixels."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from pyfastviz._inputs import check_choice

OPTIMIZERS = ("lbfgs", "adam")
LBFGS_HISTORY = 20
# Line-search evaluations per L-BFGS step. torch's LBFGS gives its line search max_eval - 1
# evaluations, and its default max_eval (max_iter * 5 // 4) is 1 for one iteration per step:
# then the search cannot backtrack, one overshoot returns t = 0, and the optimiser stalls.
LBFGS_LINE_SEARCH = 20
PIXEL_EPS = 1e-3  # start pixels are clamped to [eps, 1 - eps] so that their logit is finite


def optimize_image(start, objective, steps, optimizer, lr, preprocess, progress, desc):
    """Minimises objective(x) = (total (N,), parts) over the image x (N, 3, H, W, model input space).

    The variable is z = logit(pixels), x = normalize(sigmoid(z)): pixels stay inside [0, 1]
    without clamping after each step, which would break L-BFGS's curvature pairs (measured: the
    loss climbs back after ~100 clamped steps). Gradients w.r.t. z only (torch.autograd.grad),
    so parameters are untouched.
    """
    pixels = preprocess.denormalize(start.detach()).clamp(PIXEL_EPS, 1 - PIXEL_EPS)
    z = torch.logit(pixels).requires_grad_(True)

    def image():
        return preprocess.normalize(torch.sigmoid(z))

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([z], lr=lr or 1.0, max_iter=1, max_eval=1 + LBFGS_LINE_SEARCH,
                                history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([z], lr=lr or 0.2)
    records: list[dict[str, torch.Tensor]] = []

    def closure():
        total, parts = objective(image())
        (z.grad,) = torch.autograd.grad(total.sum(), z)
        if first[0]:
            records.append({"total": total.detach().mean(), **{k: v.detach().mean() for k, v in parts.items()}})
            first[0] = False
        return total.sum()

    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        first = [True]
        opt.step(closure)
    with torch.no_grad():
        x = image()
        total, parts = objective(x)
    records.append({"total": total.mean(), **{k: v.mean() for k, v in parts.items()}})
    history = {key: torch.stack([r[key] for r in records]).tolist() for key in records[0]}
    return x, history


def check_common(steps, optimizer, **weights) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    for name, value in weights.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
