"""Triton instance norm over the H*W plane of each (n, c), with optional affine and fused ReLU,
and its backward. Spec: pyfastviz/ops/reference.py (instance_norm).

Forward: y = relu?((x - mean) * rstd * w + b), mean and biased variance of each plane in fp32,
rstd = 1 / sqrt(var + eps); w, b: none, (C,) or per-image (N, C), read through their strides
(stride 0 over n for (C,)). Backward, with g = dy masked by y > 0 under ReLU (y recomputed
from x, mean, rstd, w, b) and xhat = (x - mean) * rstd:
    dx = rstd * w * (g - sum(g) / K - xhat * sum(g * xhat) / K),   K = H * W,
    per-plane sums sum(g * xhat) (dweight) and sum(g) (dbias), returned as (N, C) fp32 rows.

Layout: a plane is read as K elements at one stride (contiguous: 1, channels_last: C), so
both are read in place; a program owns ROWS channels of one image over a BLOCK_K slice of
the plane, a [ROWS, BLOCK_K] tile (channels_last: ROWS channels side by side, coalesced).
Other layouts (H and W strides that do not merge) are copied to contiguous first.
Outputs keep x's memory format (torch.empty_like).

Two paths:
- fused: the whole plane fits one tile (BLOCK_K >= K): x (and dy) read once, statistics from
  registers, one kernel;
- split: the plane is cut into `split` slices of k_per_split elements, each slice a program
  (so a few big planes still fill the GPU). A reduce kernel writes per-slice partials
  (forward: mean and M2 of the slice, combined with Chan's formula; backward: sum(g) and
  sum(g * xhat)), then an apply kernel combines its plane's partials and writes its slice.
  Every apply program loads all its plane's partials, a [split, ROWS] tile: choose_split keeps
  split <= MAX_SPLIT, so that tile stays in registers and the partials' reads stay small.
  x (and dy) are read twice; the apply kernel runs its programs in reverse order, so it
  starts on what the reduce kernel read last (L2 hits). No atomics: results are deterministic.
Triton APIs used exist in Triton 3.6 (the GPU machine) and 3.8 (CI, TRITON_INTERPRET=1).
"""

import os

import torch
import triton
import triton.language as tl

from pyfastviz.kernels._launch import num_sms, on_input_device, slices

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Tile sizes in elements. Fused: the largest tile kept in registers, (contiguous, channels_last);
# on sm_90 these compile without register spills at 16 warps (the channels_last backward
# spills at 16384). Interpreted: smaller, so the tests reach the split path cheaply.
FUSED_TILE_FWD = (4096, 4096) if INTERPRET else (16384, 16384)
FUSED_TILE_BWD = (4096, 4096) if INTERPRET else (16384, 8192)  # the backward holds x and dy
NEVER_FUSED = (0, 0)
SPLIT_TILE = 4096  # one loop step of the split kernels
ROW_TILE = 4096  # small planes: several channels per program, up to this many elements
MAX_SPLIT = 64  # slices per plane: [64, ROWS <= 64] partials per apply program, no register spills


@triton.jit
def _inverse_std(var_eps):
    """1 / sqrt(var + eps), 0 where var + eps is exactly 0 (eps = 0, a constant plane whose mean is
    exact), as ATen's batch norm."""
    positive = var_eps > 0
    return tl.where(positive, tl.rsqrt(tl.where(positive, var_eps, 1.0)), 0.0)


@triton.jit
def _tile(rows_start, k0, k_end, C, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Channels c (ROWS,), plane indices k (BLOCK_K,) and the [ROWS, BLOCK_K] mask of a tile."""
    c = rows_start + tl.arange(0, ROWS)
    k = k0 + tl.arange(0, BLOCK_K)
    c_ok = c < C
    return c, k, c_ok, c_ok[:, None] & (k < k_end)[None, :]


@triton.jit
def _offsets(n, c, k, s_n, s_c, s_k):
    """[ROWS, BLOCK_K] int64 offsets of elements (n, c, k) of a tensor with strides (s_n, s_c, s_k)."""
    return n.to(tl.int64) * s_n + c.to(tl.int64)[:, None] * s_c + k.to(tl.int64)[None, :] * s_k


@triton.jit
def _scale_shift(n, c, c_ok, w_ptr, w_sn, w_sc, b_ptr, b_sn, b_sc, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """(w, b) of channels c of image n as fp32 (ROWS,): 1 and 0 where absent."""
    if HAS_W:
        w = tl.load(w_ptr + n * w_sn + c * w_sc, mask=c_ok, other=1.0).to(tl.float32)
    else:
        w = tl.full(c.shape, 1.0, tl.float32)
    if HAS_B:
        b = tl.load(b_ptr + n * b_sn + c * b_sc, mask=c_ok, other=0.0).to(tl.float32)
    else:
        b = tl.zeros(c.shape, tl.float32)
    return w, b


@triton.jit
def _reversed_ids():
    """(program 0, program 1) ids counted from the end of the grid: an apply kernel starts on
    the slices its reduce kernel read last, which may still be in L2."""
    return tl.num_programs(0) - 1 - tl.program_id(0), tl.num_programs(1) - 1 - tl.program_id(1)


@triton.jit
def _normalize_store(y_ptr, offs, mask, x, mean, rstd, w, b, RELU: tl.constexpr):
    y = (x - mean[:, None]) * rstd[:, None] * w[:, None] + b[:, None]
    if RELU:
        y = tl.maximum(y, 0.0, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN, as torch.relu
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _relu_grad(dy, xhat, w, b, RELU: tl.constexpr):
    """dy, but 0 where the forward's output y = xhat * w + b is <= 0 (ReLU, as torch's: NaN passes)."""
    if RELU:
        dy = tl.where(xhat * w[:, None] + b[:, None] <= 0.0, 0.0, dy)
    return dy


# ---- forward --------------------------------------------------------------------------------


@triton.jit
def _fwd_fused_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,
    C, K, c_blocks,
    x_sn, x_sc, x_sk, y_sn, y_sc, y_sk, w_sn, w_sc, b_sn, b_sc,
    eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // c_blocks
    c, k, c_ok, mask = _tile((pid % c_blocks) * ROWS, 0, K, C, ROWS, BLOCK_K)
    x = tl.load(x_ptr + _offsets(n, c, k, x_sn, x_sc, x_sk), mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, 1) / K
    diff = tl.where(mask, x - mean[:, None], 0.0)
    rstd = _inverse_std(tl.sum(diff * diff, 1) / K + eps)
    tl.store(mean_ptr + n * C + c, mean, mask=c_ok)
    tl.store(rstd_ptr + n * C + c, rstd, mask=c_ok)
    w, b = _scale_shift(n, c, c_ok, w_ptr, w_sn, w_sc, b_ptr, b_sn, b_sc, HAS_W, HAS_B)
    _normalize_store(y_ptr, _offsets(n, c, k, y_sn, y_sc, y_sk), mask, x, mean, rstd, w, b, RELU)


@triton.jit
def _fwd_stats_kernel(
    x_ptr, part_ptr,
    C, K, c_blocks, k_per_split, R, S,
    x_sn, x_sc, x_sk,
    ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """part[0, s, n*C + c], part[1, s, ...] = mean and M2 (sum of squared deviations) of slice s."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // c_blocks
    c0 = (pid % c_blocks) * ROWS
    k_begin = s * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    mean = tl.zeros((ROWS,), tl.float32)
    m2 = tl.zeros((ROWS,), tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        c, k, c_ok, mask = _tile(c0, k0, k_end, C, ROWS, BLOCK_K)
        x = tl.load(x_ptr + _offsets(n, c, k, x_sn, x_sc, x_sk), mask=mask, other=0.0).to(tl.float32)
        count = (k0 - k_begin).to(tl.float32)  # elements combined so far
        step = (tl.minimum(k0 + BLOCK_K, k_end) - k0).to(tl.float32)
        step_mean = tl.sum(x, 1) / step
        diff = tl.where(mask, x - step_mean[:, None], 0.0)
        delta = step_mean - mean
        total = count + step
        mean += delta * (step / total)
        m2 += tl.sum(diff * diff, 1) + delta * delta * (count * step / total)
    c = c0 + tl.arange(0, ROWS)
    c_ok = c < C
    tl.store(part_ptr + s * R + n * C + c, mean, mask=c_ok)
    tl.store(part_ptr + (S + s) * R + n * C + c, m2, mask=c_ok)


@triton.jit
def _fwd_apply_kernel(
    x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, part_ptr,
    C, K, c_blocks, k_per_split, R, S,
    x_sn, x_sc, x_sk, y_sn, y_sc, y_sk, w_sn, w_sc, b_sn, b_sc,
    eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Combines the S slices' (mean, M2) of its channels, then normalizes slice s."""
    pid, s = _reversed_ids()
    n = pid // c_blocks
    c0 = (pid % c_blocks) * ROWS
    c = c0 + tl.arange(0, ROWS)
    c_ok = c < C
    slices = tl.arange(0, BLOCK_S)
    counts = tl.where(slices < S, tl.minimum(k_per_split, K - slices * k_per_split), 0).to(tl.float32)
    pmask = (slices < S)[:, None] & c_ok[None, :]
    poffs = slices[:, None] * R + (n * C + c)[None, :]
    p_mean = tl.load(part_ptr + poffs, mask=pmask, other=0.0)
    p_m2 = tl.load(part_ptr + S * R + poffs, mask=pmask, other=0.0)
    mean = tl.sum(p_mean * counts[:, None], 0) / K
    delta = p_mean - mean[None, :]
    m2 = tl.sum(p_m2 + counts[:, None] * delta * delta, 0)
    rstd = _inverse_std(m2 / K + eps)
    first = c_ok & (s == 0)
    tl.store(mean_ptr + n * C + c, mean, mask=first)
    tl.store(rstd_ptr + n * C + c, rstd, mask=first)
    w, b = _scale_shift(n, c, c_ok, w_ptr, w_sn, w_sc, b_ptr, b_sn, b_sc, HAS_W, HAS_B)
    k_begin = s * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        c, k, c_ok, mask = _tile(c0, k0, k_end, C, ROWS, BLOCK_K)
        x = tl.load(x_ptr + _offsets(n, c, k, x_sn, x_sc, x_sk), mask=mask, other=0.0).to(tl.float32)
        _normalize_store(y_ptr, _offsets(n, c, k, y_sn, y_sc, y_sk), mask, x, mean, rstd, w, b, RELU)


# ---- backward -------------------------------------------------------------------------------


@triton.jit
def _bwd_fused_kernel(
    dy_ptr, x_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, dw_rows_ptr, db_rows_ptr,
    C, K, c_blocks,
    dy_sn, dy_sc, dy_sk, x_sn, x_sc, x_sk, dx_sn, dx_sc, dx_sk, w_sn, w_sc, b_sn, b_sc,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // c_blocks
    c, k, c_ok, mask = _tile((pid % c_blocks) * ROWS, 0, K, C, ROWS, BLOCK_K)
    x = tl.load(x_ptr + _offsets(n, c, k, x_sn, x_sc, x_sk), mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + _offsets(n, c, k, dy_sn, dy_sc, dy_sk), mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + n * C + c, mask=c_ok, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c_ok, other=0.0)
    w, b = _scale_shift(n, c, c_ok, w_ptr, w_sn, w_sc, b_ptr, b_sn, b_sc, HAS_W, HAS_B)
    xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
    g = _relu_grad(dy, xhat, w, b, RELU)
    sum_g = tl.sum(g, 1)
    sum_gx = tl.sum(g * xhat, 1)
    dx = (g - sum_g[:, None] / K - xhat * (sum_gx / K)[:, None]) * (rstd * w)[:, None]
    tl.store(dx_ptr + _offsets(n, c, k, dx_sn, dx_sc, dx_sk), dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_rows_ptr + n * C + c, sum_gx, mask=c_ok)
    tl.store(db_rows_ptr + n * C + c, sum_g, mask=c_ok)


@triton.jit
def _bwd_reduce_kernel(
    dy_ptr, x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, part_ptr,
    C, K, c_blocks, k_per_split, R, S,
    dy_sn, dy_sc, dy_sk, x_sn, x_sc, x_sk, w_sn, w_sc, b_sn, b_sc,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """part[0, s, n*C + c], part[1, s, ...] = sum(g * xhat) and sum(g) over slice s."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // c_blocks
    c0 = (pid % c_blocks) * ROWS
    c = c0 + tl.arange(0, ROWS)
    c_ok = c < C
    mean = tl.load(mean_ptr + n * C + c, mask=c_ok, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c_ok, other=0.0)
    w, b = _scale_shift(n, c, c_ok, w_ptr, w_sn, w_sc, b_ptr, b_sn, b_sc, HAS_W, HAS_B)
    k_begin = s * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    acc_g = tl.zeros((ROWS, BLOCK_K), tl.float32)
    acc_gx = tl.zeros((ROWS, BLOCK_K), tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        c, k, c_ok, mask = _tile(c0, k0, k_end, C, ROWS, BLOCK_K)
        x = tl.load(x_ptr + _offsets(n, c, k, x_sn, x_sc, x_sk), mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + _offsets(n, c, k, dy_sn, dy_sc, dy_sk), mask=mask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        g = _relu_grad(dy, xhat, w, b, RELU)
        acc_g += g
        acc_gx += g * xhat
    tl.store(part_ptr + s * R + n * C + c, tl.sum(acc_gx, 1), mask=c_ok)
    tl.store(part_ptr + (S + s) * R + n * C + c, tl.sum(acc_g, 1), mask=c_ok)


@triton.jit
def _bwd_apply_kernel(
    dy_ptr, x_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, part_ptr, dw_rows_ptr, db_rows_ptr,
    C, K, c_blocks, k_per_split, R, S,
    dy_sn, dy_sc, dy_sk, x_sn, x_sc, x_sk, dx_sn, dx_sc, dx_sk, w_sn, w_sc, b_sn, b_sc,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Sums the S slices' partials of its channels (slice 0 stores the sums), then writes dx
    over slice s."""
    pid, s = _reversed_ids()
    n = pid // c_blocks
    c0 = (pid % c_blocks) * ROWS
    c = c0 + tl.arange(0, ROWS)
    c_ok = c < C
    slices = tl.arange(0, BLOCK_S)
    pmask = (slices < S)[:, None] & c_ok[None, :]
    poffs = slices[:, None] * R + (n * C + c)[None, :]
    sum_gx = tl.sum(tl.load(part_ptr + poffs, mask=pmask, other=0.0), 0)
    sum_g = tl.sum(tl.load(part_ptr + S * R + poffs, mask=pmask, other=0.0), 0)
    tl.store(dw_rows_ptr + n * C + c, sum_gx, mask=c_ok & (s == 0))
    tl.store(db_rows_ptr + n * C + c, sum_g, mask=c_ok & (s == 0))
    mean_gx = sum_gx / K
    mean_g = sum_g / K
    mean = tl.load(mean_ptr + n * C + c, mask=c_ok, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c_ok, other=0.0)
    w, b = _scale_shift(n, c, c_ok, w_ptr, w_sn, w_sc, b_ptr, b_sn, b_sc, HAS_W, HAS_B)
    k_begin = s * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        c, k, c_ok, mask = _tile(c0, k0, k_end, C, ROWS, BLOCK_K)
        x = tl.load(x_ptr + _offsets(n, c, k, x_sn, x_sc, x_sk), mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + _offsets(n, c, k, dy_sn, dy_sc, dy_sk), mask=mask, other=0.0).to(tl.float32)
        xhat = (x - mean[:, None]) * rstd[:, None]
        g = _relu_grad(dy, xhat, w, b, RELU)
        dx = (g - mean_g[:, None] - xhat * mean_gx[:, None]) * (rstd * w)[:, None]
        tl.store(dx_ptr + _offsets(n, c, k, dx_sn, dx_sc, dx_sk), dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---- host side ------------------------------------------------------------------------------


def plane_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(s_n, s_c, s_k) with plane index k = h * W + w at the single stride s_k, or None when
    the H and W strides do not merge."""
    _, _, H, W = t.shape
    s_n, s_c, s_h, s_w = t.stride()
    if W == 1:
        return s_n, s_c, s_h
    if H == 1 or s_h == W * s_w:
        return s_n, s_c, s_w
    return None


def _readable(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """t and its plane strides, t made contiguous first when its H and W strides do not merge."""
    strides = plane_strides(t)
    if strides is None:
        t = t.contiguous()
        strides = plane_strides(t)
    return t, strides


def _writable_like(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, target): out = empty_like(x) (x's memory format); target = out, or a contiguous
    buffer to copy into out when out's H and W strides do not merge."""
    out = torch.empty_like(x)
    if plane_strides(out) is None:
        return out, torch.empty_like(x, memory_format=torch.contiguous_format)
    return out, out


def choose_tiles(C: int, K: int, s_c: int, s_k: int, itemsize: int,
                 fused_tile: tuple[int, int]) -> tuple[int, int]:
    """(ROWS, BLOCK_K): the fused tile [ROWS, next_pow2(K)] when the whole plane fits fused_tile
    elements ((contiguous, channels_last); NEVER_FUSED: never), else a split tile of SPLIT_TILE
    elements. Channels side by side in memory (channels_last): ROWS spans 128 bytes of
    channels; else ROWS > 1 only for small planes."""
    k_pow2 = triton.next_power_of_2(K)
    c_pow2 = triton.next_power_of_2(C)
    if s_c == 1 and s_k != 1 and C > 1:
        rows = min(c_pow2, max(1, 128 // itemsize))
        tile = fused_tile[1] if rows * k_pow2 <= fused_tile[1] else SPLIT_TILE
        return rows, min(k_pow2, max(1, tile // rows))
    if k_pow2 <= fused_tile[0]:
        return min(c_pow2, max(1, ROW_TILE // k_pow2)), k_pow2
    return 1, SPLIT_TILE


def choose_split(programs: int, K: int, block_k: int, device: torch.device) -> int:
    """Slices of the plane: enough programs to fill the machine (about 4 per SM), each slice
    at least 2 BLOCK_K steps long, at most MAX_SPLIT."""
    return max(1, min(triton.cdiv(4 * num_sms(device), programs), triton.cdiv(K, 2 * block_k), MAX_SPLIT))


def _warps(rows: int, block_k: int) -> int:
    return min(16, max(1, rows * block_k // 512))


def _affine_args(param: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(pointer, stride over n, stride over c) of a None, (C,) or (N, C) weight or bias."""
    if param is None:
        return x, 0, 0  # never read (HAS_W / HAS_B false)
    if param.dim() == 1:
        return param, 0, param.stride(0)
    return param, param.stride(0), param.stride(1)


def _tiling(x: torch.Tensor, x_sc: int, x_sk: int, fused_tile: tuple[int, int], weight, bias,
            relu: bool) -> tuple[int, int, dict]:
    """(channel blocks per image, programs over N, the kernels' shared meta-parameters)."""
    N, C, H, W = x.shape
    rows, block_k = choose_tiles(C, H * W, x_sc, x_sk, x.element_size(), fused_tile)
    c_blocks = triton.cdiv(C, rows)
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, RELU=relu, ROWS=rows, BLOCK_K=block_k,
                 num_warps=_warps(rows, block_k))
    return c_blocks, N * c_blocks, flags


@on_input_device
def instance_norm_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                          relu: bool, split: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd): y (N, C, H, W) in x's dtype and memory format; mean and rstd (N, C)
    fp32 (0 where H*W == 0). weight, bias: None, (C,) or (N, C). split: None chooses (the fused
    kernel when the plane fits one tile); an int forces the split path with about that many slices."""
    N, C, H, W = x.shape
    K = H * W
    y, target = _writable_like(x)
    mean = torch.empty((N, C), device=x.device, dtype=torch.float32)
    rstd = torch.empty((N, C), device=x.device, dtype=torch.float32)
    if y.numel() == 0:
        return y, mean.zero_(), rstd.zero_()
    x, (x_sn, x_sc, x_sk) = _readable(x)
    y_sn, y_sc, y_sk = plane_strides(target)
    w, w_sn, w_sc = _affine_args(weight, x)
    b, b_sn, b_sc = _affine_args(bias, x)
    c_blocks, programs, flags = _tiling(x, x_sc, x_sk, FUSED_TILE_FWD if split is None else NEVER_FUSED,
                                        weight, bias, relu)
    block_k = flags["BLOCK_K"]
    if split is None and block_k >= K:
        _fwd_fused_kernel[(programs,)](
            x, target, w, b, mean, rstd, C, K, c_blocks,
            x_sn, x_sc, x_sk, y_sn, y_sc, y_sk, w_sn, w_sc, b_sn, b_sc, eps, **flags)
    else:
        if split is None:
            split = choose_split(programs, K, block_k, x.device)
        k_per_split, split = slices(K, split, block_k)
        part = torch.empty((2, split, N * C), device=x.device, dtype=torch.float32)
        _fwd_stats_kernel[(programs, split)](
            x, part, C, K, c_blocks, k_per_split, N * C, split, x_sn, x_sc, x_sk,
            ROWS=flags["ROWS"], BLOCK_K=block_k, num_warps=flags["num_warps"])
        _fwd_apply_kernel[(programs, split)](
            x, target, w, b, mean, rstd, part, C, K, c_blocks, k_per_split, N * C, split,
            x_sn, x_sc, x_sk, y_sn, y_sc, y_sk, w_sn, w_sc, b_sn, b_sc, eps,
            BLOCK_S=triton.next_power_of_2(split), **flags)
    if target is not y:
        y.copy_(target)
    return y, mean, rstd


@on_input_device
def instance_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                           bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor, relu: bool,
                           split: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight_rows, dbias_rows): dx in x's dtype and memory format; sum over H*W of
    g * xhat and of g per (n, c), (N, C) fp32 (the weight's and bias's gradients before any
    reduction over n). mean, rstd: the forward's. split: as for instance_norm_forward."""
    N, C, H, W = x.shape
    K = H * W
    dx, target = _writable_like(x)
    dw_rows = torch.empty((N, C), device=x.device, dtype=torch.float32)
    db_rows = torch.empty((N, C), device=x.device, dtype=torch.float32)
    if dx.numel() == 0:
        return dx, dw_rows.zero_(), db_rows.zero_()
    x, (x_sn, x_sc, x_sk) = _readable(x)
    grad, (dy_sn, dy_sc, dy_sk) = _readable(grad)
    dx_sn, dx_sc, dx_sk = plane_strides(target)
    w, w_sn, w_sc = _affine_args(weight, x)
    b, b_sn, b_sc = _affine_args(bias, x)
    c_blocks, programs, flags = _tiling(x, x_sc, x_sk, FUSED_TILE_BWD if split is None else NEVER_FUSED,
                                        weight, bias, relu)
    block_k = flags["BLOCK_K"]
    strides = (dy_sn, dy_sc, dy_sk, x_sn, x_sc, x_sk)
    affine = (w_sn, w_sc, b_sn, b_sc)
    if split is None and block_k >= K:
        _bwd_fused_kernel[(programs,)](
            grad, x, target, w, b, mean, rstd, dw_rows, db_rows, C, K, c_blocks,
            *strides, dx_sn, dx_sc, dx_sk, *affine, **flags)
    else:
        if split is None:
            split = choose_split(programs, K, block_k, x.device)
        k_per_split, split = slices(K, split, block_k)
        part = torch.empty((2, split, N * C), device=x.device, dtype=torch.float32)
        _bwd_reduce_kernel[(programs, split)](
            grad, x, w, b, mean, rstd, part, C, K, c_blocks, k_per_split, N * C, split,
            *strides, *affine, **flags)
        _bwd_apply_kernel[(programs, split)](
            grad, x, target, w, b, mean, rstd, part, dw_rows, db_rows, C, K, c_blocks, k_per_split, N * C, split,
            *strides, dx_sn, dx_sc, dx_sk, *affine, BLOCK_S=triton.next_power_of_2(split), **flags)
    if target is not dx:
        dx.copy_(target)
    return dx, dw_rows, db_rows
