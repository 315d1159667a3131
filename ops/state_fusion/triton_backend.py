"""Triton structure-aware state fusion: one 25-offset depthwise stencil, and its transpose.

    h = alpha[0] dw3x3_dil1(x) + alpha[1] dw3x3_dil3(x) + alpha[2] dw3x3_dil5(x)

replicate borders (clamped indices), conv2d cross-correlation. Operands are
(batch, L, D) views of (batch, D, H, W) tensors (``triton_launch.sequence_view``);
kernels (3, D, 3, 3), one per dilation of ``DILATIONS``; alpha (3,).

Taps. The 27 taps have 25 distinct offsets (the three centres coincide):
:data:`NUM_TAPS`, from ``DILATIONS``. :func:`fold_tap_weights` folds kernels
and alpha into per-channel weights ``w`` of shape (NUM_TAPS, D): row 0 the
centre (sum of the three centre taps), row ``1 + 8 i + k`` the k-th non-centre
tap of dilation ``DILATIONS[i]``, so the stencil is
``h(p) = sum_k w_k x(clamp(p + off_k))``. The kernels unroll the dilations as
``2 DI + 1`` for DI < 3 and hold the taps in 32 lanes (the border kernel);
importing this module checks that against ``DILATIONS``.

Forward: one program per (BLOCK_P pixels, BLOCK_D channels, batch) tile; each
of the 25 taps is a gather of BLOCK_P rows of BLOCK_D contiguous channels
(vector loads in channels-last memory), optionally followed by the readout
``y = C h + Dskip u`` (fused SSM). The +-5-row halo of a tile is re-read from
L1/L2.

Backward. With ``g_h`` the gradient of h (``g_y C`` in the fused op):
- weights: ``S_k = sum_p g_h(p) x(clamp(p + off_k))`` (the forward's gathers),
  one partial per pixel tile, summed by PyTorch, then ``g_kernels``, ``g_alpha``;
- input: ``g_x(s) = sum_k w_k sum_{p: clamp(p + off_k) = s} g_h(p)``. Replicate
  padding sends extra pixels only to the outermost ring of the image, so the
  main kernel computes the zero-padded transpose ``sum_k w_k g_h(s - off_k)``
  off the ring, and ``_fusion_bwd_ring_kernel`` the ring exactly: for ring pixel
  (i, j) and offset (dy, dx) the preimage is a rectangle of at most
  (|dy| + 1) x (|dx| + 1) pixels; the kernel holds all 25 taps of a tile of
  ring pixels at once and walks the 36 positions of the largest rectangle, so
  its dependent chain is 36 steps at any image size; work proportional to
  the perimeter. No atomics: deterministic.
"""
import torch
import triton
import triton.language as tl

from .._library import custom_op, eager_or_op
from .._shape_checks import check_fusion_args
from ..triton_launch import (block, check_launchable, launch, new_output, sequence_view,
                             strides)
from ..triton_launch import _config as config
from .reference import DILATIONS

NUM_TAPS = 1 + 8 * len(DILATIONS)
"""Distinct offsets of the stencil: the shared centre and 8 others per dilation."""
HALO = DILATIONS[-1]
"""Reach of the stencil in pixels."""
if DILATIONS != tuple(2 * i + 1 for i in range(3)) or NUM_TAPS > 32:
    raise ImportError(f'the Triton state fusion kernels unroll the dilations 2 DI + 1, '
                      f'DI < 3 (25 taps in 32 lanes); DILATIONS is {DILATIONS}')


def fold_tap_weights(kernels, alpha):
    """(NUM_TAPS, D) float32 weights of the distinct offsets (not differentiable).

    Slices and sums on the kernels' device: no index tensor, no host sync.
    """
    taps = (alpha.detach().float()[:, None, None, None] * kernels.detach().float())
    taps = taps.flatten(2).transpose(1, 2)              # (len(DILATIONS), 9, D)
    centre = taps[:, 4].sum(0, keepdim=True)                         # (1, D)
    others = torch.cat([taps[:, :4], taps[:, 5:]], dim=1).flatten(0, 1)  # (NUM_TAPS - 1, D)
    return torch.cat([centre, others]).contiguous()


def kernel_grads(S, kernels, alpha):
    """g_kernels (3, D, 3, 3), g_alpha (3,) from S (NUM_TAPS, D) = sum g_h * shifted x."""
    dilations = len(DILATIONS)
    others = S[1:].view(dilations, 8, -1)
    S27 = torch.cat([others[:, :4], S[:1].expand(dilations, 1, -1), others[:, 4:]], dim=1)
    S27 = S27.transpose(1, 2).unflatten(2, (3, 3))                   # (3, D, 3, 3)
    g_kernels = alpha.detach().float()[:, None, None, None] * S27
    g_alpha = (kernels.detach().float() * S27).sum((1, 2, 3))
    return g_kernels.to(kernels.dtype), g_alpha.to(alpha.dtype)


# ------------------------------------------------------------------------- kernels

@triton.jit
def _clamp(v, hi):
    return tl.minimum(tl.maximum(v, 0), hi)


@triton.jit
def _pixel_tile(D, W, L, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's tile of a (pixel tiles, channel blocks, batch) grid: its
    indices, pixel and channel indices, their masks, each pixel's row and column
    and the batch index (int64)."""
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_p = offs_p < L
    mask_d = offs_d < D
    mask = mask_p[:, None] & mask_d[None, :]
    row = offs_p // W
    col = offs_p - row * W
    return pid_p, pid_d, b, offs_p, offs_d, mask_p, mask_d, mask, row, col


@triton.jit
def _gather(base, pix, sl, offs_d, sd, mask):
    """(BLOCK_P, BLOCK_D) tile of a (batch, L, D) operand at pixels ``pix``."""
    return tl.load(base + pix.to(tl.int64)[:, None] * sl + offs_d[None, :] * sd,
                   mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _fwd_tap(acc, x_base, sx_l, sx_d, w_ptr, row, col, H, W, D, offs_d, mask_d, mask,
             TAP: tl.constexpr, DY: tl.constexpr, DX: tl.constexpr):
    src = _clamp(row + DY, H - 1) * W + _clamp(col + DX, W - 1)
    w = tl.load(w_ptr + TAP * D + offs_d, mask=mask_d, other=0.0)
    return acc + _gather(x_base, src, sx_l, offs_d, sx_d, mask) * w[None, :]


@triton.jit
def _fusion_fwd_kernel(x_ptr, w_ptr, c_ptr, u_ptr, dskip_ptr, out_ptr, D, H, W, L,
                       sx_b, sx_l, sx_d, sc_b, sc_l, su_b, su_l, su_d, so_b, so_l, so_d,
                       READOUT: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """out = stencil(x), or with READOUT ``C * stencil(x) + Dskip * u``."""
    pid_p, pid_d, b, offs_p, offs_d, mask_p, mask_d, mask, row, col = _pixel_tile(
        D, W, L, BLOCK_P, BLOCK_D)
    x_base = x_ptr + b * sx_b
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    acc = _fwd_tap(acc, x_base, sx_l, sx_d, w_ptr, row, col, H, W, D, offs_d, mask_d,
                   mask, 0, 0, 0)
    for DI in tl.static_range(3):
        for K in tl.static_range(8):
            # non-centre tap K of dilation 2 DI + 1: 3x3 position K + K // 4
            acc = _fwd_tap(acc, x_base, sx_l, sx_d, w_ptr, row, col, H, W, D, offs_d,
                           mask_d, mask, 1 + 8 * DI + K,
                           ((K + K // 4) // 3 - 1) * (2 * DI + 1),
                           ((K + K // 4) % 3 - 1) * (2 * DI + 1))
    if READOUT:
        c = tl.load(c_ptr + b * sc_b + offs_p.to(tl.int64) * sc_l, mask=mask_p,
                    other=0.0).to(tl.float32)
        u = _gather(u_ptr + b * su_b, offs_p, su_l, offs_d, su_d, mask)
        dskip = tl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0)
        acc = acc * c[:, None] + u * dskip[None, :]
    out = out_ptr + b * so_b + offs_p.to(tl.int64)[:, None] * so_l + offs_d[None, :] * so_d
    tl.store(out, acc, mask=mask)


@triton.jit
def _bwd_tap(acc_h, acc_gx, gh_own, x_base, g_base, c_base, w_ptr, s_ptr,
             sx_l, sx_d, sg_l, sg_d, sc_l, row, col, offs_p, H, W, D, offs_d, mask_d,
             mask_p, mask, HAS_C: tl.constexpr, TAP: tl.constexpr, DY: tl.constexpr,
             DX: tl.constexpr):
    w = tl.load(w_ptr + TAP * D + offs_d, mask=mask_d, other=0.0)
    # weights and (fused op) h: gather x at the clamped source of this tap
    src = _clamp(row + DY, H - 1) * W + _clamp(col + DX, W - 1)
    xs = _gather(x_base, src, sx_l, offs_d, sx_d, mask)
    tl.store(s_ptr + TAP * D + offs_d, tl.sum(gh_own * xs, axis=0), mask=mask_d)
    if HAS_C:
        acc_h += xs * w[None, :]
    # input, zero-padded transpose: the pixel whose tap lands here, if it exists
    r = row - DY
    c = col - DX
    valid = mask_p & (r >= 0) & (r < H) & (c >= 0) & (c < W)
    dst = offs_p - (DY * W + DX)
    gs = _gather(g_base, dst, sg_l, offs_d, sg_d, valid[:, None] & mask_d[None, :])
    if HAS_C:
        gs *= tl.load(c_base + dst.to(tl.int64) * sc_l, mask=valid,
                      other=0.0).to(tl.float32)[:, None]
    acc_gx += gs * w[None, :]
    return acc_h, acc_gx


@triton.jit
def _fusion_bwd_kernel(x_ptr, w_ptr, g_ptr, c_ptr, gx_ptr, s_part_ptr, gc_part_ptr,
                       D, H, W, L, n_ptiles, n_dblocks,
                       sx_b, sx_l, sx_d, sg_b, sg_l, sg_d, sc_b, sc_l, sgx_b, sgx_l, sgx_d,
                       HAS_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """g_x off the border ring; per-tile partials of S (and of g_C when HAS_C).

    g_ptr is g_out, or g_y of the fused op (then g_h = g_y C and g_C = sum_d g_y h).
    """
    pid_p, pid_d, b, offs_p, offs_d, mask_p, mask_d, mask, row, col = _pixel_tile(
        D, W, L, BLOCK_P, BLOCK_D)
    x_base = x_ptr + b * sx_b
    g_base = g_ptr + b * sg_b
    c_base = c_ptr + b * sc_b
    g_own = _gather(g_base, offs_p, sg_l, offs_d, sg_d, mask)
    gh_own = g_own
    if HAS_C:
        c_own = tl.load(c_base + offs_p.to(tl.int64) * sc_l, mask=mask_p,
                        other=0.0).to(tl.float32)
        gh_own = g_own * c_own[:, None]
    s_ptr = s_part_ptr + (b * n_ptiles + pid_p) * (25 * D)
    acc_h = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    acc_gx = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    acc_h, acc_gx = _bwd_tap(acc_h, acc_gx, gh_own, x_base, g_base, c_base, w_ptr, s_ptr,
                             sx_l, sx_d, sg_l, sg_d, sc_l, row, col, offs_p, H, W, D,
                             offs_d, mask_d, mask_p, mask, HAS_C, 0, 0, 0)
    for DI in tl.static_range(3):
        for K in tl.static_range(8):
            acc_h, acc_gx = _bwd_tap(acc_h, acc_gx, gh_own, x_base, g_base, c_base,
                                     w_ptr, s_ptr, sx_l, sx_d, sg_l, sg_d, sc_l, row,
                                     col, offs_p, H, W, D, offs_d, mask_d, mask_p, mask,
                                     HAS_C, 1 + 8 * DI + K,
                                     ((K + K // 4) // 3 - 1) * (2 * DI + 1),
                                     ((K + K // 4) % 3 - 1) * (2 * DI + 1))
    inner = (row > 0) & (row < H - 1) & (col > 0) & (col < W - 1)   # not on the ring
    tl.store(gx_ptr + b * sgx_b + offs_p.to(tl.int64)[:, None] * sgx_l
             + offs_d[None, :] * sgx_d, acc_gx, mask=mask & inner[:, None])
    if HAS_C:
        gc = tl.sum(g_own * acc_h, axis=1)
        tl.store(gc_part_ptr + (b * n_dblocks + pid_d) * L + offs_p, gc, mask=mask_p)


@triton.jit
def _fusion_bwd_ring_kernel(w_ptr, g_ptr, c_ptr, gx_ptr, D, H, W, R,
                            sg_b, sg_l, sg_d, sc_b, sc_l, sgx_b, sgx_l, sgx_d,
                            HAS_C: tl.constexpr,
                            BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """g_x on the border ring, exactly. Ring index r < R = 2W + 2H enumerates the
    top row, bottom row, left column, right column (corners twice: same value).

    All 25 taps at once, on a (BLOCK_R, 32, BLOCK_D) tile (taps 25..31
    masked): for ring pixel (p, q) and tap offset (dy, dx), the pixels whose
    tap lands on (p, q) are the rectangle rows [lo_i, hi_i] x columns
    [lo_j, hi_j], at most 6 x 6; the loop walks its 36 positions.
    """
    pid_r = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    top = offs_r < W
    bottom = (offs_r >= W) & (offs_r < 2 * W)
    left = (offs_r >= 2 * W) & (offs_r < 2 * W + H)
    p = tl.where(top, 0, tl.where(bottom, H - 1,
                                  tl.where(left, offs_r - 2 * W, offs_r - 2 * W - H)))
    q = tl.where(top, offs_r, tl.where(bottom, offs_r - W, tl.where(left, 0, W - 1)))
    p = _clamp(p, H - 1)[:, None]
    q = _clamp(q, W - 1)[:, None]
    # the folded tap order: 0 = centre, 1 + 8 i + k = k-th non-centre position
    # (0..8 without 4) of dilation 2 i + 1
    tap = tl.arange(0, 32)
    valid_tap = tap < 25
    not_centre = tl.minimum(tap, 1)
    t = tap - not_centre
    dilation = (2 * (t // 8) + 1) * not_centre
    pos = t % 8 + (t % 8) // 4
    dy = ((pos // 3 - 1) * dilation)[None, :]
    dx = ((pos % 3 - 1) * dilation)[None, :]
    lo_i = tl.maximum(tl.where(p == 0, 0, p - dy), 0)           # (BLOCK_R, 32)
    hi_i = tl.minimum(tl.where(p == H - 1, H - 1, p - dy), H - 1)
    lo_j = tl.maximum(tl.where(q == 0, 0, q - dx), 0)
    hi_j = tl.minimum(tl.where(q == W - 1, W - 1, q - dx), W - 1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    live = mask_r[:, None] & valid_tap[None, :]
    g_base = g_ptr + b * sg_b
    c_base = c_ptr + b * sc_b
    total = tl.zeros([BLOCK_R, 32, BLOCK_D], dtype=tl.float32)
    for ei in range(0, 6):
        i = lo_i + ei
        for ej in range(0, 6):
            j = lo_j + ej
            m = live & (i <= hi_i) & (j <= hi_j)
            src = (i * W + j).to(tl.int64)
            v = tl.load(g_base + src[:, :, None] * sg_l + offs_d[None, None, :] * sg_d,
                        mask=m[:, :, None] & mask_d[None, None, :], other=0.0)
            v = v.to(tl.float32)
            if HAS_C:
                v *= tl.load(c_base + src * sc_l, mask=m, other=0.0).to(tl.float32)[:, :, None]
            total += v
    w = tl.load(w_ptr + tap[:, None] * D + offs_d[None, :],
                mask=valid_tap[:, None] & mask_d[None, :], other=0.0)
    acc = tl.sum(total * w[None, :, :], axis=1)
    out = gx_ptr + b * sgx_b + (p * W + q).to(tl.int64) * sgx_l + offs_d[None, :] * sgx_d
    tl.store(out, acc, mask=mask_r[:, None] & mask_d[None, :])


# ----------------------------------------------------------------------- launchers

def fusion_forward(x, weights, height, width, out, C=None, u=None, Dskip=None):
    """Stencil of x ((batch, L, D) view) with folded weights (NUM_TAPS, D) float32, into
    ``out`` ((batch, L, D) view). With C ((batch, L) view), u ((batch, L, D)) and
    Dskip (D,): the fused SSM readout ``C * stencil(x) + Dskip * u``."""
    check_launchable('state_fusion_triton', _fusion_fwd_kernel, x, weights)
    batch, length, channels = x.shape
    block_p = block('fusion_block_p', length)
    block_d = block('fusion_block_d', channels)
    readout = C is not None
    c_arg = C if readout else weights
    u_arg = u if readout else x
    dskip = Dskip.detach().float().contiguous() if readout else weights
    grid = (triton.cdiv(length, block_p), triton.cdiv(channels, block_d), batch)
    launch(_fusion_fwd_kernel, grid, x, weights, c_arg, u_arg, dskip, out,
           channels, height, width, length, *strides(x),
           c_arg.stride(0) if readout else 0, c_arg.stride(1) if readout else 0,
           *strides(u_arg), *strides(out), READOUT=readout, BLOCK_P=block_p,
           BLOCK_D=block_d, num_warps=config['fusion_fwd_warps'],
           reads=(x, C, u), writes=(out,))
    return out


def fusion_backward(g, x, weights, height, width, g_x, C=None):
    """Transpose of :func:`fusion_forward` (without the skip term).

    Args:
        g (Tensor): (batch, L, D) view, gradient of the output (of y when C).
        x (Tensor): (batch, L, D) view, the stencil's input.
        weights (Tensor): (NUM_TAPS, D) float32 folded weights.
        g_x (Tensor): (batch, L, D) view to write the input gradient into.
        C (Tensor, optional): (batch, L) view, the fused readout's C.

    Returns:
        (S (NUM_TAPS, D) float32 weight sums, g_C (batch, L) float32 or None).
    """
    check_launchable('state_fusion_triton', _fusion_bwd_kernel, g, x, weights)
    batch, length, channels = x.shape
    block_p = block('fusion_bwd_block_p', length)
    block_d = block('fusion_block_d', channels)
    n_ptiles, n_dblocks = triton.cdiv(length, block_p), triton.cdiv(channels, block_d)
    has_c = C is not None
    dev = x.device
    s_part = new_output((batch, n_ptiles, NUM_TAPS, channels), torch.float32, dev)
    gc_part = new_output((batch, n_dblocks, length), torch.float32, dev) if has_c else None
    c_arg = C if has_c else weights
    c_strides = (C.stride(0), C.stride(1)) if has_c else (0, 0)
    launch(_fusion_bwd_kernel, (n_ptiles, n_dblocks, batch),
           x, weights, g, c_arg, g_x, s_part, gc_part if has_c else s_part,
           channels, height, width, length, n_ptiles, n_dblocks,
           *strides(x), *strides(g), *c_strides, *strides(g_x),
           HAS_C=has_c, BLOCK_P=block_p, BLOCK_D=block_d,
           num_warps=config['fusion_bwd_warps'],
           reads=(x, g, C), writes=(g_x, s_part, gc_part))
    ring_length = 2 * (height + width)
    ring_r = block('ring_block_r', ring_length)
    ring_d = block('ring_block_d', channels)
    # after the main kernel (same stream): both write g_x, on disjoint pixels
    launch(_fusion_bwd_ring_kernel,
           (triton.cdiv(ring_length, ring_r), triton.cdiv(channels, ring_d), batch),
           weights, g, c_arg, g_x, channels, height, width, ring_length,
           *strides(g), *c_strides, *strides(g_x),
           HAS_C=has_c, BLOCK_R=ring_r, BLOCK_D=ring_d, num_warps=config['ring_warps'],
           reads=_border_band(g, height, width, HALO + 1) + (
               _border_band(C, height, width, HALO + 1) if has_c else ()),
           writes=_border_band(g_x, height, width, 1))
    return s_part.sum((0, 1)), (gc_part.sum(1) if has_c else None)


def _border_band(t, height, width, depth):
    """Views of the pixels of ``t`` ((batch, L, ...) view) within ``depth`` rows or
    columns of the image border, each pixel once (the border kernel's traffic)."""
    image = t.unflatten(1, (height, width))
    top, left = min(depth, height), min(depth, width)
    bottom, right = max(top, height - depth), max(left, width - depth)
    return (image[:, :top], image[:, bottom:], image[:, top:bottom, :left],
            image[:, top:bottom, right:])


# ------------------------------------------------------------ op and autograd glue

def _fusion_fwd_fake(x, kernels, alpha):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


@custom_op('state_fusion_triton_fwd', _fusion_fwd_fake)
def _fusion_fwd_op(x: torch.Tensor, kernels: torch.Tensor,
                   alpha: torch.Tensor) -> torch.Tensor:
    """The fusion in x's dtype, channels-last in memory."""
    out = _fusion_fwd_fake(x, kernels, alpha)
    height, width = x.shape[2:]
    fusion_forward(sequence_view(x), fold_tap_weights(kernels, alpha), height, width,
                   sequence_view(out))
    return out


def _fusion_bwd_fake(g_out, x, kernels, alpha):
    return (torch.empty_like(x), torch.empty_like(kernels, memory_format=torch.contiguous_format),
            torch.empty_like(alpha, memory_format=torch.contiguous_format))


@custom_op('state_fusion_triton_bwd', _fusion_bwd_fake)
def _fusion_bwd_op(g_out: torch.Tensor, x: torch.Tensor, kernels: torch.Tensor,
                   alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g_x = torch.empty_like(x)
    height, width = x.shape[2:]
    S, _ = fusion_backward(sequence_view(g_out), sequence_view(x),
                           fold_tap_weights(kernels, alpha), height, width,
                           sequence_view(g_x))
    g_kernels, g_alpha = kernel_grads(S, kernels, alpha)
    return g_x, g_kernels.contiguous(), g_alpha


class StateFusionTritonFn(torch.autograd.Function):
    """Autograd of the Triton state fusion; saves its inputs."""

    @staticmethod
    def forward(ctx, x, kernels, alpha):
        ctx.save_for_backward(x, kernels, alpha)
        return eager_or_op(_fusion_fwd_op)(x, kernels, alpha)

    @staticmethod
    def backward(ctx, g_out):
        return eager_or_op(_fusion_bwd_op)(g_out, *ctx.saved_tensors)


def state_fusion_triton(x, kernels, alpha):
    """State fusion on Triton kernels; see ``reference.state_fusion_ref``.

    Args:
        x (Tensor): (batch, D, H, W), float32 / bfloat16 / float16, any layout.
        kernels (Tensor): (3, D, 3, 3), one per dilation of ``DILATIONS``.
        alpha (Tensor): (3,).

    Returns:
        Tensor: (batch, D, H, W) in x's dtype (float32 accumulation), channels-last.
    """
    check_fusion_args('state_fusion_triton', x, kernels, alpha)
    return StateFusionTritonFn.apply(x, kernels, alpha)
