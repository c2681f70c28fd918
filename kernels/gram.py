"""Triton Gram matrix G[n] = scale * F[n] @ F[n]^T of features (N, C, H, W), and its backward.

F[n] is features[n] viewed as (C, K = H*W), read in place through the tensor's strides
(contiguous, channels_last or any other layout; no copy). Spec: pyfastviz/ops/reference.py.

Forward, for the short and wide shapes of style transfer (C = 64..512, K up to 512^2):
- only the upper triangle of G is computed: program t of axis 0 owns the tile (bi, bj),
  bi <= bj, of the BLOCK x BLOCK tiling, and writes it twice (G[bi, bj] and, transposed,
  G[bj, bi]);
- split-K: axis 1 splits the reduction over K into `split` slices. With split == 1 each
  program reduces its whole row of K and stores the scaled tile straight into the output.
  With split > 1 each program atomically adds its fp32 partial tile into a zeroed fp32
  workspace (N, C, C), and a small second kernel scales, casts and mirrors the upper
  triangle into the output. fp32 atomics make the last bits depend on the order the
  slices land in; `split=1` (chosen when torch.use_deterministic_algorithms is on) is
  deterministic.
Accumulation is fp32 for every input dtype. fp32 inputs use IEEE fp32 dot products unless
allow_tf32. The output is rounded once to the output's dtype.

Style loss: sum over i, j of (G - T)^2 per image, with no G output. Short reductions: one
program per triangle tile keeps its tile of G in registers. Long ones (few tiles, K large):
split-K partial sums go into an fp32 workspace, then a finish kernel reduces the loss. Each
tile's loss is stored, not added atomically, and the tiles summed by torch: with split = 1
the loss is deterministic.

Backward: dF[n] = scale * (dG[n] + dG[n]^T) @ F[n], a tiled matmul over (C, K) tiles whose
A operand sums dG and its transpose on load (no dG + dG^T temporary); fp32 accumulation.
bf16: the symmetrised dG rounded to bf16 before the dot (tensor cores). fp16: F upcast and
a TF32 dot, as fp16's range would overflow on a large dG; the style loss's backward: its
fp32 residual kept and F upcast.

Grids put their long axis on axis 0 (up to 2^31 - 1 programs); the batch is axis 1 or 2, which
stop at 65535: a larger batch runs in chunks.

Triton APIs used exist in Triton 3.6 (the GPU machine) and 3.8 (CI, TRITON_INTERPRET=1).
"""

import os

import torch
import triton
import triton.language as tl

from pyfastviz.kernels._launch import batch_chunks, num_sms, on_input_device, slices

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _hw_offset(k, W, s_h, s_w, MERGED_HW: tl.constexpr):
    """int64 memory offset of flattened spatial index k = h * W + w (h and w found in int32)."""
    if MERGED_HW:  # h and w merge into one stride (contiguous, channels_last)
        offset = k.to(tl.int64) * s_w
    else:
        offset = (k // W).to(tl.int64) * s_h + (k % W).to(tl.int64) * s_w
    return offset


@triton.jit
def _triangle_tile(t):
    """Tile (bi, bj), bi <= bj, of tile number t of the upper triangle: t = bj (bj + 1) / 2 + bi."""
    tf = t.to(tl.float32)
    bj = ((tl.sqrt(8.0 * tf + 1.0) - 1.0) * 0.5).to(tl.int32)
    bj = tl.where((bj + 1) * (bj + 2) // 2 <= t, bj + 1, bj)  # fix float rounding
    bj = tl.where(bj * (bj + 1) // 2 > t, bj - 1, bj)
    return t - bj * (bj + 1) // 2, bj


@triton.jit
def _tile_indices(bi, bj, C, BLOCK: tl.constexpr):
    """Rows and columns of G in tile (bi, bj), and which of them lie inside C."""
    rows = bi * BLOCK + tl.arange(0, BLOCK)
    cols = bj * BLOCK + tl.arange(0, BLOCK)
    return rows, cols, rows < C, cols < C


@triton.jit
def _gram_tile(base, rows, cols, row_ok, col_ok, k_begin, k_end, W, s_c, s_h, s_w,
               MERGED_HW: tl.constexpr, USE_TF32: tl.constexpr, IS_FP32: tl.constexpr, UPCAST: tl.constexpr,
               BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
    """F[rows] . F[cols]^T over spatial indices k_begin..k_end of one image at base: (BLOCK, BLOCK) fp32."""
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    row_off = rows.to(tl.int64) * s_c  # int64: one image may span more than 2^31 elements
    col_off = cols.to(tl.int64) * s_c
    for k0 in range(k_begin, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < k_end
        k_off = _hw_offset(ks, W, s_h, s_w, MERGED_HW)
        a = tl.load(base + row_off[:, None] + k_off[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(base + col_off[None, :] + k_off[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if IS_FP32:
            if USE_TF32:
                acc = tl.dot(a, b, acc, input_precision="tf32")
            else:
                acc = tl.dot(a, b, acc, input_precision="ieee")
        elif UPCAST:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _gram_fwd_kernel(
    f_ptr, out_ptr, ws_ptr,
    C, K, W,
    s_n, s_c, s_h, s_w,
    scale, k_per_split,
    MERGED_HW: tl.constexpr, SPLIT: tl.constexpr,
    USE_TF32: tl.constexpr, IS_FP32: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    t = tl.program_id(0)
    s = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    bi, bj = _triangle_tile(t)
    rows, cols, row_ok, col_ok = _tile_indices(bi, bj, C, BLOCK)
    base = f_ptr + n * s_n
    k_begin = s * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    acc = _gram_tile(base, rows, cols, row_ok, col_ok, k_begin, k_end, W, s_c, s_h, s_w,
                     MERGED_HW, USE_TF32, IS_FP32, UPCAST, BLOCK, BLOCK_K)

    mask = row_ok[:, None] & col_ok[None, :]
    if SPLIT:
        ws = ws_ptr + n * C * C
        tl.atomic_add(ws + rows[:, None] * C + cols[None, :], acc, mask=mask)
    else:
        g = (acc * scale).to(out_ptr.dtype.element_ty)
        out = out_ptr + n * C * C
        # The tile and its mirror G[bj, bi] = G[bi, bj]^T. A diagonal tile writes its upper
        # half both ways, so G is exactly symmetric whatever order the dot summed in.
        off_diagonal = bi != bj
        tl.store(out + rows[:, None] * C + cols[None, :], g,
                 mask=mask & (off_diagonal | (rows[:, None] <= cols[None, :])))
        tl.store(out + cols[None, :] * C + rows[:, None], g,
                 mask=mask & (off_diagonal | (rows[:, None] < cols[None, :])))


@triton.jit
def _gram_finish_kernel(ws_ptr, out_ptr, C, scale, BLOCK: tl.constexpr):
    """out[n][r, c] = scale * ws[n][min(r, c), max(r, c)]: the upper triangle of ws, mirrored
    (exactly symmetric), cast."""
    bi = tl.program_id(0)
    bj = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    rows, cols, row_ok, col_ok = _tile_indices(bi, bj, C, BLOCK)
    mask = row_ok[:, None] & col_ok[None, :]
    upper_rows = tl.minimum(rows[:, None], cols[None, :])
    upper_cols = tl.maximum(rows[:, None], cols[None, :])
    g = tl.load(ws_ptr + n * C * C + upper_rows * C + upper_cols, mask=mask, other=0.0) * scale
    tl.store(out_ptr + n * C * C + rows[:, None] * C + cols[None, :], g.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gram_bwd_kernel(
    dg_ptr, f_ptr, df_ptr,
    C, K, W,
    g_n, g_r, g_c,
    s_n, s_c, s_h, s_w,
    d_n, d_c, d_h, d_w,
    scale,
    MERGED_IN: tl.constexpr, MERGED_OUT: tl.constexpr,
    USE_TF32: tl.constexpr, FP32_DOT: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr,
):
    # axis 0: (K tile, channel tile) pairs, channel tiles fastest so that programs reading the same
    # columns of F run together. K / BLOCK_K alone reaches 65536 at 2048^2: over axes 1 and 2's limit.
    m_tiles = tl.cdiv(C, BLOCK_M)
    pid_m = tl.program_id(0) % m_tiles
    pid_k = tl.program_id(0) // m_tiles
    n = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # channels c of dF
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # spatial positions of dF
    row_ok = rows < C
    k_ok = ks < K
    k_in = _hw_offset(ks, W, s_h, s_w, MERGED_IN)
    dg = dg_ptr + n * g_n
    f = f_ptr + n * s_n
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for j0 in range(0, C, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        j_ok = js < C
        m = row_ok[:, None] & j_ok[None, :]
        # A[c, j] = dG[c, j] + dG[j, c], summed in fp32 as it is loaded
        a = tl.load(dg + rows[:, None] * g_r + js[None, :] * g_c, mask=m, other=0.0).to(tl.float32)
        a += tl.load(dg + js[None, :] * g_r + rows[:, None] * g_c, mask=m, other=0.0).to(tl.float32)
        b = tl.load(f + js.to(tl.int64)[:, None] * s_c + k_in[None, :], mask=j_ok[:, None] & k_ok[None, :],
                    other=0.0)
        if FP32_DOT:  # fp32 F, or an fp32 dG kept so (the style loss's residual)
            b = b.to(tl.float32)
            if USE_TF32:
                acc = tl.dot(a, b, acc, input_precision="tf32")
            else:
                acc = tl.dot(a, b, acc, input_precision="ieee")
        elif UPCAST:
            acc = tl.dot(a.to(b.dtype).to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a.to(b.dtype), b, acc)
    k_out = _hw_offset(ks, W, d_h, d_w, MERGED_OUT)
    out = df_ptr + n * d_n + rows.to(tl.int64)[:, None] * d_c + k_out[None, :]
    tl.store(out, (acc * scale).to(df_ptr.dtype.element_ty), mask=row_ok[:, None] & k_ok[None, :])


@triton.jit
def _tile_loss(g, tgt, rows, cols, mask, t_r, t_c, bi, bj):
    """sum over tile (bi, bj) of (g - T[rows, cols])^2; an off-diagonal tile also stands for its
    mirror, so its residual against T[cols, rows]^T is added too. g: (BLOCK, BLOCK) fp32."""
    r = g - tl.load(tgt + rows[:, None] * t_r + cols[None, :] * t_c, mask=mask, other=0.0).to(tl.float32)
    total = tl.sum(tl.sum(tl.where(mask, r * r, 0.0), axis=1), axis=0)
    if bi != bj:
        r2 = g - tl.load(tgt + cols[None, :] * t_r + rows[:, None] * t_c, mask=mask, other=0.0).to(tl.float32)
        total += tl.sum(tl.sum(tl.where(mask, r2 * r2, 0.0), axis=1), axis=0)
    return total


@triton.jit
def _style_loss_kernel(
    f_ptr, t_ptr, partial_ptr,
    C, K, W,
    s_n, s_c, s_h, s_w,
    t_n, t_r, t_c,
    scale,
    MERGED_HW: tl.constexpr, USE_TF32: tl.constexpr, IS_FP32: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """partial[n, t] = sum over one tile pair of (G - T)^2, G's tile kept in registers, never stored.

    Program (t, n) owns upper-triangle tile (bi, bj) and reduces all of K (the residual needs
    the whole tile; see style_loss_forward for the split-K alternative)."""
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    bi, bj = _triangle_tile(t)
    rows, cols, row_ok, col_ok = _tile_indices(bi, bj, C, BLOCK)
    base = f_ptr + n * s_n
    acc = _gram_tile(base, rows, cols, row_ok, col_ok, 0, K, W, s_c, s_h, s_w,
                     MERGED_HW, USE_TF32, IS_FP32, UPCAST, BLOCK, BLOCK_K)
    mask = row_ok[:, None] & col_ok[None, :]
    tl.store(partial_ptr + n * tl.num_programs(0) + t,
             _tile_loss(acc * scale, t_ptr + n * t_n, rows, cols, mask, t_r, t_c, bi, bj))


@triton.jit
def _style_loss_finish_kernel(ws_ptr, t_ptr, partial_ptr, C, t_n, t_r, t_c, scale, BLOCK: tl.constexpr):
    """partial[n, t] = sum over upper-triangle tile t (and its mirror) of (scale * ws[n] - T)^2,
    ws holding the split-K sums of F F^T."""
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    bi, bj = _triangle_tile(t)
    rows, cols, row_ok, col_ok = _tile_indices(bi, bj, C, BLOCK)
    mask = row_ok[:, None] & col_ok[None, :]
    g = tl.load(ws_ptr + n * C * C + rows[:, None] * C + cols[None, :], mask=mask, other=0.0) * scale
    tl.store(partial_ptr + n * tl.num_programs(0) + t, _tile_loss(g, t_ptr + n * t_n, rows, cols, mask, t_r, t_c,
                                                                   bi, bj))


# ---- launchers ------------------------------------------------------------------------------


def _spatial(x: torch.Tensor) -> tuple[int, int, int, bool]:
    """(W, stride of h, stride of w, h and w merge into one stride) for x (N, C, H, W)."""
    _, _, H, W = x.shape
    s_h, s_w = x.stride(2), x.stride(3)
    if W == 1:  # k = h: one stride, s_h
        return W, s_h, s_h, True
    return W, s_h, s_w, H == 1 or s_h == W * s_w


def _upcast(dtype: torch.dtype) -> bool:
    """Dot bf16 tiles as fp32 (exact products): the interpreter's bf16 tl.dot returns garbage."""
    return INTERPRET and dtype == torch.bfloat16


def _block(C: int) -> int:
    """Tile side over channels: 16 (tl.dot's minimum) up to 64 on the GPU, 32 interpreted."""
    return max(16, min(32 if INTERPRET else 64, triton.next_power_of_2(C)))


def choose_split(N: int, C: int, K: int, block: int, block_k: int, device: torch.device) -> int:
    """Slices of K: enough programs to fill the machine (about 2 per SM), each slice at
    least 4 BLOCK_K steps long; 1 under torch.use_deterministic_algorithms."""
    if torch.are_deterministic_algorithms_enabled():
        return 1
    tiles = triton.cdiv(C, block)
    programs = N * tiles * (tiles + 1) // 2
    k_steps = triton.cdiv(K, block_k)
    return max(1, min(triton.cdiv(2 * num_sms(device), programs), k_steps // 4))


def _block_k(dtype: torch.dtype) -> int:
    """Reduction step of the forward kernels."""
    return 32 if INTERPRET else (64 if dtype == torch.float32 else 128)


@on_input_device
def gram_forward(features: torch.Tensor, scale: float, allow_tf32: bool, split: int | None = None,
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """G (N, C, C) = scale * F @ F^T, in out_dtype (default features' dtype). split: slices of K
    (None: choose)."""
    N, C, H, W = features.shape
    K = H * W
    out = features.new_empty((N, C, C), dtype=out_dtype or features.dtype)
    if len(chunks := batch_chunks(N)) > 1:
        for chunk in chunks:
            out[chunk] = gram_forward(features[chunk], scale, allow_tf32, split, out_dtype)
        return out
    if N == 0 or C == 0:
        return out
    if K == 0:
        return out.zero_()
    block = _block(C)
    block_k = _block_k(features.dtype)
    if split is None:
        split = choose_split(N, C, K, block, block_k, features.device)
    k_per_split, split = slices(K, split, block_k)
    tiles = triton.cdiv(C, block)
    w, s_h, s_w, merged = _spatial(features)
    ws = torch.zeros((N, C, C), device=features.device, dtype=torch.float32) if split > 1 else out
    grid = (tiles * (tiles + 1) // 2, split, N)
    _gram_fwd_kernel[grid](
        features, out, ws, C, K, w,
        features.stride(0), features.stride(1), s_h, s_w,
        scale, k_per_split,
        MERGED_HW=merged, SPLIT=split > 1,
        USE_TF32=allow_tf32, IS_FP32=features.dtype == torch.float32, UPCAST=_upcast(features.dtype),
        BLOCK=block, BLOCK_K=block_k,
        num_warps=4, num_stages=3,
    )
    if split > 1:
        _gram_finish_kernel[(tiles, tiles, N)](ws, out, C, scale, BLOCK=block, num_warps=4)
    return out


@on_input_device
def gram_backward(grad: torch.Tensor, features: torch.Tensor, scale: float, allow_tf32: bool,
                  fp32_dot: bool = False) -> torch.Tensor:
    """dF = scale * (dG + dG^T) @ F, in features' dtype and (dense) layout. bf16 features: dG + dG^T
    is rounded to bf16 for the dot, unless fp32_dot (F upcast instead). fp16 features: always F
    upcast, and a TF32 dot unless fp32_dot (TF32 keeps fp16's 10-bit mantissa, and fp32's range:
    a summed dG beyond fp16's 65504, e.g. under a GradScaler, stays finite)."""
    N, C, H, W = features.shape
    K = H * W
    out = torch.empty_like(features)
    if len(chunks := batch_chunks(N)) > 1:
        for chunk in chunks:
            out[chunk] = gram_backward(grad[chunk], features[chunk], scale, allow_tf32, fp32_dot)
        return out
    if out.numel() == 0:
        return out
    block_m = _block(C)
    block_j = block_m
    block_k = 32 if INTERPRET else 64
    w, s_h, s_w, merged_in = _spatial(features)
    _, d_h, d_w, merged_out = _spatial(out)
    fp16 = features.dtype == torch.float16
    grid = (triton.cdiv(C, block_m) * triton.cdiv(K, block_k), N)
    _gram_bwd_kernel[grid](
        grad, features, out, C, K, w,
        grad.stride(0), grad.stride(1), grad.stride(2),
        features.stride(0), features.stride(1), s_h, s_w,
        out.stride(0), out.stride(1), d_h, d_w,
        scale,
        MERGED_IN=merged_in, MERGED_OUT=merged_out, USE_TF32=allow_tf32 or (fp16 and not fp32_dot),
        FP32_DOT=fp32_dot or fp16 or features.dtype == torch.float32, UPCAST=_upcast(features.dtype),
        BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_J=block_j,
        num_warps=4, num_stages=3,
    )
    return out


@on_input_device
def style_loss_forward(features: torch.Tensor, target: torch.Tensor, scale: float, allow_tf32: bool,
                       split: int | None = None) -> torch.Tensor:
    """loss (N,) fp32 = sum over i, j of (scale * F F^T - target)^2 per image. target: (N, C, C)
    of any strides (an expanded (C, C) costs nothing). split: slices of K (None: choose, as
    gram_forward). One slice: G's tiles stay in registers, never stored. More (few tiles and a
    long K, e.g. C = 64 at 512^2, where one program per tile would leave the GPU idle): the
    split-K sums go into an fp32 (N, C, C) workspace and a finish kernel reduces the loss from it."""
    N, C, H, W = features.shape
    K = H * W
    loss = torch.zeros((N,), device=features.device, dtype=torch.float32)
    if len(chunks := batch_chunks(N)) > 1:
        for chunk in chunks:
            loss[chunk] = style_loss_forward(features[chunk], target[chunk], scale, allow_tf32, split)
        return loss
    if N == 0 or C == 0:
        return loss
    if K == 0:  # G = 0
        return target.float().square().sum((1, 2))
    block = _block(C)
    block_k = _block_k(features.dtype)
    if split is None:
        split = choose_split(N, C, K, block, block_k, features.device)
    k_per_split, split = slices(K, split, block_k)
    tiles = triton.cdiv(C, block)
    triangle = tiles * (tiles + 1) // 2
    w, s_h, s_w, merged = _spatial(features)
    f_strides = (features.stride(0), features.stride(1), s_h, s_w)
    t_strides = (target.stride(0), target.stride(1), target.stride(2))
    meta = dict(MERGED_HW=merged, USE_TF32=allow_tf32, IS_FP32=features.dtype == torch.float32,
                UPCAST=_upcast(features.dtype), BLOCK=block, BLOCK_K=block_k, num_warps=4, num_stages=3)
    partials = torch.empty((N, triangle), device=features.device, dtype=torch.float32)  # summed in order below
    if split == 1:
        _style_loss_kernel[(triangle, N)](features, target, partials, C, K, w, *f_strides, *t_strides, scale, **meta)
        return partials.sum(1)
    ws = torch.zeros((N, C, C), device=features.device, dtype=torch.float32)
    _gram_fwd_kernel[(triangle, split, N)](features, ws, ws, C, K, w, *f_strides, 1.0, k_per_split, SPLIT=True,
                                           **meta)
    _style_loss_finish_kernel[(triangle, N)](ws, target, partials, C, *t_strides, scale, BLOCK=block, num_warps=4)
    return partials.sum(1)


@on_input_device
def style_loss_backward(grad: torch.Tensor, features: torch.Tensor, target: torch.Tensor, scale: float,
                        allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dF, dT) of loss = sum (G - T)^2: with R = 2 grad[n] (G - T), dF = scale (R + R^T) F
    and dT = -R, summed over the images for a (C, C) target (in fp32, rounded once). target:
    (N, C, C) or (C, C). Recomputes G (N, C, C) in fp32 with the Gram kernel: the backward does
    write G, the forward does not. R stays fp32 in the dot (rounded to fp16, a small G - T
    would lose its low bits or underflow)."""
    g = gram_forward(features, scale, allow_tf32, out_dtype=torch.float32)
    residual = (g - target.float()) * (2 * grad.float())[:, None, None]
    df = gram_backward(residual, features, scale, allow_tf32, fp32_dot=True)
    dt = -residual if target.dim() == 3 else -residual.sum(0)
    return df, dt.to(target.dtype)
