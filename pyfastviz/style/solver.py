"""The image optimiser of texture synthesis and style transfer: L-BFGS or Adam on folded pixels."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pyfastviz._inputs import check_choice, check_count, check_fraction, check_positive, widened

OPTIMIZERS = ("lbfgs", "adam")
LBFGS_HISTORY = 20
# Line-search evaluations per L-BFGS step. torch's LBFGS gives its line search max_eval - 1
# evaluations, and its default max_eval (max_iter * 5 // 4) is 1 for one iteration per step:
# then the search cannot backtrack, one overshoot returns t = 0, and the optimiser stalls.
LBFGS_LINE_SEARCH = 20
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.05}


def fold(z: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] of the variable z (any real): z reflected at 0 and 1 (a triangle wave of
    period 2, slope +-1 everywhere, so no pixel's gradient vanishes at the bounds)."""
    r = z.remainder(2)
    return torch.where(r > 1, 2 - r, r)


def optimize_image(start, objective, steps, optimizer, lr, preprocess, progress, desc):
    """Minimises objective(x) = (total (N,), parts) over the image x (N, 3, H, W, model input space).

    The variable is z, x = normalize(fold(z)), starting at z = start's pixels: pixels stay in
    [0, 1] without clamping after each step (which breaks L-BFGS's curvature pairs), and the
    problem keeps pixel space's conditioning (a sigmoid's vanishing slope near 0 and 1 slowed
    L-BFGS about 2x). A step is one L-BFGS iteration (a quasi-Newton direction and a strong-Wolfe
    line search, usually one evaluation) or one Adam update. Gradients w.r.t. z only
    (torch.autograd.grad), so parameters are untouched. z is a float32 master copy (float64 for
    float64 starts; fp16 would round Adam's eps to 0); x takes start's dtype, the model's.
    """
    z = preprocess.denormalize(widened(start.detach())).contiguous().requires_grad_(True)

    def image():
        return preprocess.normalize(fold(z)).to(start.dtype)

    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([z], lr=lr, max_iter=1, max_eval=1 + LBFGS_LINE_SEARCH,
                                history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([z], lr=lr)
    records: list[dict[str, torch.Tensor]] = []
    last: dict[str, torch.Tensor] = {}  # the latest evaluation: L-BFGS starts each step where its line search ended

    def closure():
        if last and torch.equal(last["z"], z):
            z.grad = last["grad"]
            total, parts = last["total"], last["parts"]
        else:
            total, parts = objective(image())
            (z.grad,) = torch.autograd.grad(total.sum(), z)
            last.update(z=z.detach().clone(), grad=z.grad, total=total.detach(),
                        parts={k: v.detach() for k, v in parts.items()})
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


def check_common(steps, optimizer, lr, **weights) -> None:
    """The solver's arguments: steps an int >= 0, a known optimizer, lr None (the optimizer's
    DEFAULT_LR) or a finite number > 0, and each loss weight a finite number >= 0."""
    check_count(steps, "steps", 0)
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    if lr is not None:
        check_positive(lr, "lr (None: the default)")
    for name, value in weights.items():
        check_fraction(value, name)
