"""Triton structure-aware state fusion: one 25-offset depthwise stencil, and its transpose.

    h = alpha[0] dw3x3_dil1(x) + alpha[1] dw3x3_dil3(x) + alpha[2] dw3x3_dil5(x)

replicate borders (clamped indices), conv2d cross-correlation. Shapes: x (batch, D,
H, W); kernels (3, D, 3, 3) for dilations 1, 3, 5; alpha (3,); out (batch, D, H, W).

Taps. The 27 taps have 25 distinct offsets (the three centres coincide). PyTorch
folds kernels and alpha into per-channel weights ``w`` of shape (25, D): row 0 the
centre (sum of the three centre taps), row ``1 + 8 i + k`` the k-th non-centre tap
of dilation ``(1, 3, 5)[i]``. Kernels receive ``w``, so the stencil is
``h(p) = sum_k w_k x(clamp(p + off_k))``.

Forward kernel: one program per (batch, BLOCK_D channels, BLOCK_P flattened
pixels); 25 gathers at clamped offsets, optionally the readout
``y = C h + Dskip u`` (fused SSM). Reads x once from memory (the +-5-row halo of a
tile is re-read from L1/L2: neighbouring tiles of one channel run together),
writes the output once.

Backward. With ``g_h`` the gradient of h (``g_y C`` in the fused op):
- weights: ``S_k = sum_p g_h(p) x(clamp(p + off_k))`` (same gathers as forward),
  per-tile partials summed by PyTorch, then ``g_kernels``, ``g_alpha`` from S;
- input: ``g_x(s) = sum_k w_k sum_{p: clamp(p + off_k) = s} g_h(p)``. Replicate
  padding only sends extra pixels to the outermost ring of the image (a pixel that
  is not on the first/last row/column is the clamped source only of its
  unclamped preimage), so the main kernel computes the zero-padded transpose
  ``sum_k w_k g_h(s - off_k)`` for interior pixels, and a second small kernel
  computes the ring exactly: for ring pixel (i, j) and offset (dy, dx) the
  preimage is a rectangle of rows [i - dy] (extended to [0, -dy] on the top row,
  [H-1-dy, H-1] on the bottom row) times the analogous columns, at most
  (|dy|+1)(|dx|+1) pixels: 273 masked loads per ring pixel over all offsets, work
  proportional to the perimeter. A gather, no atomics: deterministic.

Memory traffic per element (s = bytes of the x dtype): forward s + s (read x,
write out). Backward: read g_out and x, write g_x: 3s, plus 100/BLOCK_P bytes of per-tile
weight partials; the ring kernel touches O(H + W) pixels per image.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from .._shape_checks import check_fusion_args
from ._common import FUSION_WARPS, RING_WARPS, check_launchable, custom_op, \
    device_guard, fusion_blocks, new_output, ring_blocks

DILATIONS = (1, 3, 5)
NUM_TAPS = 25
_NON_CENTRE = (0, 1, 2, 3, 5, 6, 7, 8)          # 3x3 positions ky*3+kx except the centre


def _tap_index_table():
    """(27,) long: tap (i, ky, kx) of the kernels -> row of the folded weights."""
    table = []
    for i in range(len(DILATIONS)):
        for pos in range(9):
            table.append(0 if pos == 4 else 1 + 8 * i + _NON_CENTRE.index(pos))
    return torch.tensor(table)


_TAP_INDEX = _tap_index_table()


def tap_offsets():
    """[(dy, dx)] of the 25 folded taps, in the order of the weight rows."""
    offsets = [(0, 0)]
    for dilation in DILATIONS:
        for pos in _NON_CENTRE:
            offsets.append(((pos // 3 - 1) * dilation, (pos % 3 - 1) * dilation))
    return offsets


def fold_tap_weights(kernels, alpha):
    """(25, D) float32 weights of the distinct offsets (not differentiable)."""
    kernels, alpha = kernels.detach().float(), alpha.detach().float()
    taps = (alpha[:, None, None, None] * kernels).permute(0, 2, 3, 1).reshape(27, -1)
    index = _TAP_INDEX.to(kernels.device)
    return taps.new_zeros(NUM_TAPS, taps.shape[1]).index_add_(0, index, taps)


def kernel_grads(S, kernels, alpha):
    """g_kernels (3, D, 3, 3), g_alpha (3,) from S (25, D) = sum g_h * shifted x."""
    S27 = S[_TAP_INDEX.to(S.device)].view(3, 3, 3, -1).permute(0, 3, 1, 2)
    g_kernels = alpha.detach().float()[:, None, None, None] * S27
    g_alpha = (kernels.detach().float() * S27).sum((1, 2, 3))
    return g_kernels.to(kernels.dtype), g_alpha.to(alpha.dtype)


# ------------------------------------------------------------------------- kernels

@triton.jit
def _clamp(v, hi):
    return tl.minimum(tl.maximum(v, 0), hi)


@triton.jit
def _stencil_tile(D, W, L, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's tile of the stencil kernels' grid (pixel tiles, channel
    blocks, batch): pixel indices, their rows and columns, channel indices, the
    masks, and each channel row's offset into (batch, D, L) memory (int64)."""
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < L
    row = offs_p // W
    col = offs_p - row * W
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    mask = mask_d[:, None] & mask_p[None, :]
    chan = (pid_b * D + offs_d).to(tl.int64) * L
    return pid_p, pid_d, pid_b, offs_p, mask_p, row, col, offs_d, mask_d, mask, chan


@triton.jit
def _fwd_tap(acc, x_ptr, w_ptr, chan, row, col, H, W, D, offs_d, mask_d, mask,
             TAP: tl.constexpr, DY: tl.constexpr, DX: tl.constexpr):
    src = _clamp(row + DY, H - 1) * W + _clamp(col + DX, W - 1)
    v = tl.load(x_ptr + chan[:, None] + src[None, :], mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + TAP * D + offs_d, mask=mask_d, other=0.0)
    return acc + w[:, None] * v


@triton.jit
def _fusion_fwd_kernel(x_ptr, w_ptr, c_ptr, u_ptr, dskip_ptr, out_ptr,
                       D, H, W, L,
                       HAS_C: tl.constexpr, HAS_SKIP: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    """out = stencil(x) [* C + Dskip * u]. x, u, out (batch, D, L); C (batch, L)."""
    pid_p, pid_d, pid_b, offs_p, mask_p, row, col, offs_d, mask_d, mask, chan = \
        _stencil_tile(D, W, L, BLOCK_D, BLOCK_P)
    acc = tl.zeros([BLOCK_D, BLOCK_P], dtype=tl.float32)
    acc = _fwd_tap(acc, x_ptr, w_ptr, chan, row, col, H, W, D, offs_d, mask_d, mask,
                   0, 0, 0)
    for DI in tl.static_range(3):
        for K in tl.static_range(8):
            acc = _fwd_tap(acc, x_ptr, w_ptr, chan, row, col, H, W, D, offs_d, mask_d,
                           mask, 1 + 8 * DI + K,
                           ((K + K // 4) // 3 - 1) * (2 * DI + 1),
                           ((K + K // 4) % 3 - 1) * (2 * DI + 1))
    if HAS_C:
        c = tl.load(c_ptr + pid_b.to(tl.int64) * L + offs_p, mask=mask_p,
                    other=0.0).to(tl.float32)
        acc = acc * c[None, :]
    if HAS_SKIP:
        u = tl.load(u_ptr + chan[:, None] + offs_p[None, :], mask=mask,
                    other=0.0).to(tl.float32)
        dskip = tl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0)
        acc += dskip[:, None] * u
    tl.store(out_ptr + chan[:, None] + offs_p[None, :], acc, mask=mask)


@triton.jit
def _bwd_tap(acc_h, acc_gx, gh_own, x_ptr, g_ptr, c_ptr, w_ptr, s_ptr, chan, c_row,
             row, col, offs_p, H, W, D, offs_d, mask_d, mask_p, mask,
             HAS_C: tl.constexpr, TAP: tl.constexpr, DY: tl.constexpr, DX: tl.constexpr):
    w = tl.load(w_ptr + TAP * D + offs_d, mask=mask_d, other=0.0)
    # weights and (fused op) h: gather x at the clamped source of this tap
    src = _clamp(row + DY, H - 1) * W + _clamp(col + DX, W - 1)
    xs = tl.load(x_ptr + chan[:, None] + src[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(s_ptr + TAP * D + offs_d, tl.sum(gh_own * xs, axis=1), mask=mask_d)
    if HAS_C:
        acc_h += w[:, None] * xs
    # input, zero-padded transpose: the pixel whose tap lands here, if it exists
    r = row - DY
    c = col - DX
    valid = mask_p & (r >= 0) & (r < H) & (c >= 0) & (c < W)
    dst = offs_p - (DY * W + DX)
    gs = tl.load(g_ptr + chan[:, None] + dst[None, :], mask=mask_d[:, None] & valid[None, :],
                 other=0.0).to(tl.float32)
    if HAS_C:
        gs *= tl.load(c_ptr + c_row + dst, mask=valid, other=0.0).to(tl.float32)[None, :]
    acc_gx += w[:, None] * gs
    return acc_h, acc_gx


@triton.jit
def _fusion_bwd_kernel(x_ptr, w_ptr, g_ptr, c_ptr, gx_ptr, s_part_ptr, gc_part_ptr,
                       D, H, W, L, n_ptiles, n_dblocks,
                       HAS_C: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    """g_x off the border ring; per-tile partials of S (and of g_C when HAS_C).

    g_ptr is g_out, or g_y of the fused op (then g_h = g_y C and g_C = sum_d g_y h).
    """
    pid_p, pid_d, pid_b, offs_p, mask_p, row, col, offs_d, mask_d, mask, chan = \
        _stencil_tile(D, W, L, BLOCK_D, BLOCK_P)
    c_row = pid_b.to(tl.int64) * L
    g_own = tl.load(g_ptr + chan[:, None] + offs_p[None, :], mask=mask,
                    other=0.0).to(tl.float32)
    gh_own = g_own
    if HAS_C:
        c_own = tl.load(c_ptr + c_row + offs_p, mask=mask_p, other=0.0).to(tl.float32)
        gh_own = g_own * c_own[None, :]
    s_ptr = s_part_ptr + (pid_b * n_ptiles + pid_p).to(tl.int64) * (25 * D)
    acc_h = tl.zeros([BLOCK_D, BLOCK_P], dtype=tl.float32)
    acc_gx = tl.zeros([BLOCK_D, BLOCK_P], dtype=tl.float32)
    acc_h, acc_gx = _bwd_tap(acc_h, acc_gx, gh_own, x_ptr, g_ptr, c_ptr, w_ptr, s_ptr,
                             chan, c_row, row, col, offs_p, H, W, D, offs_d, mask_d,
                             mask_p, mask, HAS_C, 0, 0, 0)
    for DI in tl.static_range(3):
        for K in tl.static_range(8):
            acc_h, acc_gx = _bwd_tap(acc_h, acc_gx, gh_own, x_ptr, g_ptr, c_ptr, w_ptr,
                                     s_ptr, chan, c_row, row, col, offs_p, H, W, D,
                                     offs_d, mask_d, mask_p, mask, HAS_C,
                                     1 + 8 * DI + K,
                                     ((K + K // 4) // 3 - 1) * (2 * DI + 1),
                                     ((K + K // 4) % 3 - 1) * (2 * DI + 1))
    inner = (row > 0) & (row < H - 1) & (col > 0) & (col < W - 1)   # not on the ring
    tl.store(gx_ptr + chan[:, None] + offs_p[None, :], acc_gx,
             mask=mask & inner[None, :])
    if HAS_C:
        gc = tl.sum(g_own * acc_h, axis=0)
        tl.store(gc_part_ptr + (pid_b * n_dblocks + pid_d).to(tl.int64) * L + offs_p,
                 gc, mask=mask_p)


@triton.jit
def _fusion_bwd_ring_kernel(w_ptr, g_ptr, c_ptr, gx_ptr,
                            D, H, W, L, R,
                            HAS_C: tl.constexpr,
                            BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    """g_x on the border ring, exactly. Ring index r < R = 2W + 2H enumerates the
    top row, bottom row, left column, right column (corners twice: same value).

    For ring pixel (p, q) and offset (dy, dx), the pixels whose clamped tap lands
    on (p, q) form the rectangle rows [lo_i, hi_i] x columns [lo_j, hi_j], at most
    (|dy| + 1) x (|dx| + 1). Runtime loops (not unrolled: 273 bodies would take
    minutes to compile for a kernel that only touches the perimeter).
    """
    pid_r = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    top = offs_r < W
    bottom = (offs_r >= W) & (offs_r < 2 * W)
    left = (offs_r >= 2 * W) & (offs_r < 2 * W + H)
    p = tl.where(top, 0, tl.where(bottom, H - 1,
                                  tl.where(left, offs_r - 2 * W, offs_r - 2 * W - H)))
    q = tl.where(top, offs_r, tl.where(bottom, offs_r - W, tl.where(left, 0, W - 1)))
    p = _clamp(p, H - 1)
    q = _clamp(q, W - 1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    chan = (pid_b * D + offs_d).to(tl.int64) * L
    c_row = pid_b.to(tl.int64) * L
    acc = tl.zeros([BLOCK_D, BLOCK_R], dtype=tl.float32)
    for tap in range(0, 25):
        # decode the folded tap order: 0 = centre, 1 + 8 i + k = k-th non-centre
        # position of dilation 2 i + 1 (positions 0..8 of the 3x3 minus 4)
        # (integer arithmetic only: ``tap`` is a Python int under the interpreter)
        not_centre = (tap + 24) // 25
        t = tap - not_centre
        dilation = (2 * (t // 8) + 1) * not_centre
        pos = t % 8 + (t % 8) // 4
        dy = (pos // 3 - 1) * dilation
        dx = (pos % 3 - 1) * dilation
        span_y = (pos // 3 - 1) * (pos // 3 - 1) * dilation + 1          # |dy| + 1
        span_x = (pos % 3 - 1) * (pos % 3 - 1) * dilation + 1            # |dx| + 1
        lo_i = tl.maximum(tl.where(p == 0, 0, p - dy), 0)
        hi_i = tl.minimum(tl.where(p == H - 1, H - 1, p - dy), H - 1)
        lo_j = tl.maximum(tl.where(q == 0, 0, q - dx), 0)
        hi_j = tl.minimum(tl.where(q == W - 1, W - 1, q - dx), W - 1)
        total = tl.zeros([BLOCK_D, BLOCK_R], dtype=tl.float32)
        for ei in range(0, span_y):
            i = lo_i + ei
            mask_i = mask_r & (i <= hi_i)
            for ej in range(0, span_x):
                j = lo_j + ej
                m = mask_i & (j <= hi_j)
                src = i * W + j
                v = tl.load(g_ptr + chan[:, None] + src[None, :],
                            mask=mask_d[:, None] & m[None, :], other=0.0).to(tl.float32)
                if HAS_C:
                    v *= tl.load(c_ptr + c_row + src, mask=m,
                                 other=0.0).to(tl.float32)[None, :]
                total += v
        w = tl.load(w_ptr + tap * D + offs_d, mask=mask_d, other=0.0)
        acc += w[:, None] * total
    tl.store(gx_ptr + chan[:, None] + (p * W + q)[None, :], acc,
             mask=mask_d[:, None] & mask_r[None, :])


# ----------------------------------------------------------------------- launchers

def fusion_forward(x, weights, height, width, C=None, u=None, Dskip=None,
                   out_dtype=None):
    """Stencil of x (batch, D, L) with folded weights (25, D) float32.

    With ``C`` (batch, L) the result is multiplied by C; with ``u`` (batch, D, L)
    and ``Dskip`` (D,) the skip term is added (the fused SSM readout).
    """
    device = check_launchable('state_fusion_triton', _fusion_fwd_kernel, x, weights)
    batch, channels, length = x.shape
    x = x.contiguous()
    out = new_output((batch, channels, length), out_dtype or x.dtype, x.device)
    if out.numel() == 0:
        return out
    block_d, block_p = fusion_blocks(channels, length)
    has_c, has_skip = C is not None, u is not None
    c_arg = C.contiguous() if has_c else weights
    u_arg = u.contiguous() if has_skip else weights
    dskip_arg = Dskip.detach().float().contiguous() if has_skip else weights
    grid = (triton.cdiv(length, block_p), triton.cdiv(channels, block_d), batch)
    with device_guard(device):
        _fusion_fwd_kernel[grid](x, weights, c_arg, u_arg, dskip_arg, out,
                                 channels, height, width, length,
                                 HAS_C=has_c, HAS_SKIP=has_skip,
                                 BLOCK_D=block_d, BLOCK_P=block_p,
                                 num_warps=FUSION_WARPS)
    return out


def fusion_backward(g, x, weights, height, width, C=None, gx_dtype=torch.float32):
    """Transposed stencil and weight sums.

    ``g`` (batch, D, L) is g_out, or g_y of the fused op when ``C`` is given
    (then g_h = g_y * C). Returns (g_x (batch, D, L) in ``gx_dtype``,
    S (25, D) float32, g_C (batch, L) float32 or None).
    """
    device = check_launchable('state_fusion_triton', _fusion_bwd_kernel, g, x, weights)
    batch, channels, length = x.shape
    g, x = g.contiguous(), x.contiguous()
    has_c = C is not None
    c_arg = C.contiguous() if has_c else weights
    block_d, block_p = fusion_blocks(channels, length)
    n_ptiles, n_dblocks = triton.cdiv(length, block_p), triton.cdiv(channels, block_d)
    dev = x.device
    g_x = new_output((batch, channels, length), gx_dtype, dev)
    s_part = new_output((batch, n_ptiles, NUM_TAPS, channels), torch.float32, dev)
    gc_part = new_output((batch, n_dblocks, length), torch.float32, dev) if has_c else None
    if x.numel() == 0:
        S = s_part.zero_().sum((0, 1))
        return g_x, S, (gc_part.zero_().sum(1) if has_c else None)
    ring_length = 2 * (height + width)
    ring_d, ring_r = ring_blocks(channels, ring_length)
    with device_guard(device):
        _fusion_bwd_kernel[(n_ptiles, n_dblocks, batch)](
            x, weights, g, c_arg, g_x, s_part, gc_part if has_c else s_part,
            channels, height, width, length, n_ptiles, n_dblocks,
            HAS_C=has_c, BLOCK_D=block_d, BLOCK_P=block_p, num_warps=FUSION_WARPS)
        # after the main kernel: both write g_x, on disjoint pixels
        _fusion_bwd_ring_kernel[(triton.cdiv(ring_length, ring_r),
                                 triton.cdiv(channels, ring_d), batch)](
            weights, g, c_arg, g_x, channels, height, width, length, ring_length,
            HAS_C=has_c, BLOCK_D=ring_d, BLOCK_R=ring_r, num_warps=RING_WARPS)
    S = s_part.sum((0, 1))
    g_c = gc_part.sum(1) if has_c else None
    return g_x, S, g_c


# ---------------------------------------------------------------- torch.library ops

def _fusion_fwd_fake(x, kernels, alpha):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@custom_op('state_fusion_fwd', _fusion_fwd_fake)
def _fusion_fwd_op(x: torch.Tensor, kernels: torch.Tensor,
                   alpha: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out = fusion_forward(x.reshape(batch, channels, height * width),
                         fold_tap_weights(kernels, alpha), height, width)
    return out.view(batch, channels, height, width)


def _fusion_bwd_fake(g_out, x, kernels, alpha):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(kernels, memory_format=torch.contiguous_format),
            torch.empty_like(alpha, memory_format=torch.contiguous_format))


@custom_op('state_fusion_bwd', _fusion_bwd_fake)
def _fusion_bwd_op(g_out: torch.Tensor, x: torch.Tensor, kernels: torch.Tensor,
                   alpha: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, channels, height, width = x.shape
    length = height * width
    g_x, S, _ = fusion_backward(g_out.reshape(batch, channels, length),
                                x.reshape(batch, channels, length),
                                fold_tap_weights(kernels, alpha), height, width,
                                gx_dtype=x.dtype)
    g_kernels, g_alpha = kernel_grads(S, kernels, alpha)
    return g_x.view(batch, channels, height, width), g_kernels, g_alpha


class StateFusionTritonFn(torch.autograd.Function):
    """Autograd of the Triton state fusion (forward and backward are custom ops)."""

    @staticmethod
    def forward(ctx, x, kernels, alpha):
        ctx.save_for_backward(x, kernels, alpha)
        return _fusion_fwd_op(x, kernels, alpha)

    @staticmethod
    def backward(ctx, g_out):
        x, kernels, alpha = ctx.saved_tensors
        return _fusion_bwd_op(g_out, x, kernels, alpha)


def state_fusion_triton(x, kernels, alpha):
    """State fusion on Triton kernels; see ``ops.state_fusion.state_fusion_ref``.

    Args:
        x (Tensor): (batch, D, H, W), float32 / bfloat16 / float16.
        kernels (Tensor): (3, D, 3, 3) for dilations 1, 3, 5.  alpha (Tensor): (3,).

    Returns:
        Tensor: (batch, D, H, W) in x's dtype (float32 accumulation).
    """
    check_fusion_args('state_fusion_triton', x, kernels, alpha)
    return StateFusionTritonFn.apply(x, kernels, alpha)
