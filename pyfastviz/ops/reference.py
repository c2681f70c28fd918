"""Pure-PyTorch references of every pyfastviz op: the specification the kernels are tested against."""

import torch


class _GuidedReLU(torch.autograd.Function):
    """clamp(x, 0, upper) whose backward is guided: grad * [0 < x < upper] * [grad > 0].

    Works under torch.func.grad/vjp/vmap; forward mode raises (there is no guided jvp)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, upper):
        return torch.relu(x) if upper is None else torch.clamp(x, 0.0, upper)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, upper = inputs
        ctx.save_for_backward(relu_passes_gradient(x, upper))

    @staticmethod
    def backward(ctx, grad):
        (passes,) = ctx.saved_tensors
        return torch.where(passes & (grad > 0), grad, torch.zeros_like(grad)), None

    @staticmethod
    def jvp(ctx, x_tangent, upper_tangent):
        raise NotImplementedError(
            "guided_relu has no forward-mode derivative: guided backprop changes only the backward pass, "
            "and its rule dx = dy * [x passes] * [dy > 0] is not linear in dy. Use reverse mode "
            "(torch.autograd.grad, backward(), torch.func.grad/vjp/jacrev)")


def relu_passes_gradient(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """Bool tensor, x's shape: where ReLU (upper=None) or clamp(0, upper) has derivative 1.

    x < upper is compared in at least fp32, as the kernels do: a bf16 x just below 6.1 passes,
    where comparing in bf16 would round upper down onto it."""
    passes = x > 0
    return passes if upper is None else passes & (x.to(torch.promote_types(x.dtype, torch.float32)) < upper)


def guided_relu(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """Reference guided ReLU: forward clamp(x, 0, upper), backward grad * [0<x<upper] * [grad>0].

    x: any shape, floating point. Saves a bool mask (1 byte per element; the kernel keeps 1 bit),
    not x, so x may be overwritten afterwards (in-place activations).
    """
    return _GuidedReLU.apply(x, upper)


def guided_relu_backward(grad: torch.Tensor, x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """The two-pass backward the hook-based method computes: ReLU's backward, then clamp(min=0)."""
    relu_grad = torch.where(relu_passes_gradient(x, upper), grad, torch.zeros_like(grad))
    return relu_grad.clamp(min=0)


def gram(features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Reference Gram matrices: G = F @ F^T / (C*H*W), F = features (N, C, H, W) viewed as (N, C, H*W).

    Divides by 1 instead when normalize=False or C*H*W == 0. fp16/bf16 are multiplied in
    fp32 and G rounded once to features' dtype (what the kernel's fp32 accumulation gives);
    fp32/fp64 in their own precision. Returns (N, C, C) in features' dtype.
    """
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    if f.dtype not in (torch.float32, torch.float64):
        f = f.float()
    g = f @ f.mT
    if normalize and c * h * w:
        g = g / (c * h * w)
    return g.to(features.dtype)


def gram_backward(grad: torch.Tensor, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Reference gradient of gram: dF = (dG + dG^T) @ F / (C*H*W), features' shape and dtype."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    compute = f.dtype if f.dtype in (torch.float32, torch.float64) else torch.float32
    f, grad = f.to(compute), grad.to(compute)
    df = (grad + grad.mT) @ f
    if normalize and c * h * w:
        df = df / (c * h * w)
    return df.reshape(features.shape).to(features.dtype)


def gram_style_loss(features: torch.Tensor, target: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Reference style loss per image: sum over i, j of (G - target)^2, G = gram(features) before
    any rounding (fp32 for fp32/fp16/bf16 features, fp64 for fp64). target: (C, C) or (N, C, C).
    Returns (N,) in that fp32 / fp64."""
    n, c, h, w = features.shape
    compute = torch.float64 if features.dtype == torch.float64 else torch.float32
    f = features.reshape(n, c, h * w).to(compute)
    g = f @ f.mT
    if normalize and c * h * w:
        g = g / (c * h * w)
    return (g - target.to(compute)).square().sum((1, 2))


def occlusion_counts(size, window, stride) -> tuple[int, ...]:
    """Window positions per dimension: ceil((size - window) / stride) + 1 (Captum's rule), but
    none starting past the edge: at most ceil(size / stride) (fewer only when stride > window,
    which Captum refuses)."""
    return tuple(min((s - w + t - 1) // t + 1, (s + t - 1) // t) for s, w, t in zip(size, window, stride))


def occlusion_box(position: int, size, window, stride) -> tuple[slice, ...]:
    """The slices (channel, row, col) of one window position, numbered row-major; cropped at the edge."""
    counts = occlusion_counts(size, window, stride)
    starts = []
    for count, step in zip(reversed(counts), reversed(stride)):
        starts.append((position % count) * step)
        position //= count
    return tuple(slice(start, start + w) for start, w in zip(reversed(starts), window))


def occlusion_batch(images: torch.Tensor, baseline: torch.Tensor, window, stride, first: int, count: int) -> torch.Tensor:
    """Occluded copies (count * N, C, H, W): row r is image r % N with position first + r // N
    (see occlusion_box) taken from baseline (N, C, H, W)."""
    n = images.shape[0]
    out = images.repeat(count, 1, 1, 1)
    for k in range(count):
        box = occlusion_box(first + k, images.shape[1:], window, stride)
        out[(slice(k * n, (k + 1) * n), *box)] = baseline[(slice(None), *box)]
    return out


def occlusion_scatter(drops: torch.Tensor, window, stride, size) -> torch.Tensor:
    """Score drops (R, P) -> (R, C, H, W): each pixel's mean drop over the positions whose window
    covers it, as Captum's Occlusion; 0 where no window does (a stride larger than the window).
    Summed in fp32 for fp16/bf16 drops (bf16 cannot count past 256), returned in their dtype."""
    work = torch.promote_types(drops.dtype, torch.float32)
    total = drops.new_zeros((drops.shape[0], *size), dtype=work)
    covering = drops.new_zeros(tuple(size), dtype=work)
    for position in range(drops.shape[1]):
        box = occlusion_box(position, size, window, stride)
        total[(slice(None), *box)] += drops[:, position, None, None, None]
        covering[box] += 1
    return torch.where(covering > 0, total / covering.clamp(min=1), torch.zeros_like(total)).to(drops.dtype)


def instance_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  eps: float = 1e-5, relu: bool = False) -> torch.Tensor:
    """Reference instance norm: per-(n, c) mean and biased variance over H*W, then affine, then ReLU.

    x: (N, C, H, W). weight, bias: None, (C,) (shared) or (N, C) (one row per image: conditional
    instance norm). Statistics and arithmetic in fp32 (fp64 for fp64 x); returns x's dtype.
    """
    n, c = x.shape[:2]
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    mean = work.mean(dim=(2, 3), keepdim=True)
    centred = work - mean
    var = centred.square().mean(dim=(2, 3), keepdim=True)  # var() warns on empty input; this does not
    # eps = 0 and a variance that comes out exactly 0 (a constant plane whose mean is exact; other
    # constant planes get a rounding-sized variance and +-1, in torch too): 1 / sqrt is 0, as ATen's
    flat = var + eps == 0
    y = centred * torch.where(flat, 0.0, torch.rsqrt(torch.where(flat, 1.0, var + eps)))
    if weight is not None:
        y = y * weight.to(work.dtype).expand(n, c)[:, :, None, None]
    if bias is not None:
        y = y + bias.to(work.dtype).expand(n, c)[:, :, None, None]
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype)
