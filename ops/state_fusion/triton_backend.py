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
``2 DI + 1`` for DI < 3; importing this module checks that against
``DILATIONS``.

Forward: one program per (BLOCK_P pixels, BLOCK_D channels, batch) tile; each
of the 25 taps is a gather of BLOCK_P rows of BLOCK_D contiguous channels
(vector loads in channels-last memory), optionally followed by the readout
``y = C h + Dskip u`` (fused SSM). The +-5-row halo of a tile is re-read from
L1/L2.

Backward, three launches. With ``g_h`` the gradient of h (``g_y C`` in the fused op):
- weights: ``S_k = sum_p g_h(p) x(clamp(p + off_k))`` (the forward's gathers);
- input: ``g_x(s) = sum_k w_k sum_{p: clamp(p + off_k) = s} g_h(p)``.
Per axis, the transpose of a clamped shift is the zero-padded shift plus an
edge term: the pixels that clamp onto the outer pixel besides the one the
shift brings there (rows [0, d) onto row 0 for an offset of -d rows). So g_x
is the zero-padded transpose ``sum_k w_k g_h(s - off_k)`` plus, on the outer
rows and columns only, edge x shift, shift x edge and (corners) edge x edge
terms.

1. ``_fusion_bwd_weights_kernel``: a one-warp program owns BLOCK_W columns x
   ``fusion_bwd_rows`` rows x ``fusion_bwd_block_d`` channels (128: 4 a
   thread) and walks them a pixel at a time (``fusion_bwd_step_w``; several
   under the interpreter) through the 25 gathers of x. A thread holds its
   channels of every pixel of the step, so each S_k grows by multiply-adds in
   its own registers: no reduction across threads, in the loop or at its end;
   PyTorch sums over the programs. With the C of the fused op it also
   recomputes h for g_C. It writes g_h, float32, into a zero-padded buffer per
   channel block of the stencils (:func:`padded_gh`), the pad included, for
   the next two launches. In the fused op it writes only g_h (SUMS false):
   the adjoint scan, which reads the states and g_y anyway, takes the sums and
   g_C in its steps (:func:`weight_sums_step`, one pixel a step).
2. ``_fusion_bwd_border_kernel``: the edge terms per side of the image (left,
   right, and top and bottom for images of fewer than
   ``fusion_row_terms_min_height`` rows) and position along it, into a (batch,
   4, max(H, W), D) buffer: 23 gathers of g_h per position (the centre
   column's rows serve the three dilations), a 5 x 5 block at each corner. It
   reads the five pixels along those sides only.
3. ``_fusion_bwd_input_kernel``: g_x of a chunk of consecutive pixels (raster
   order) x ``fusion_bwd_input_block_d`` channels (128: 4 a thread), walked a
   pixel at a time: the 25 zero-padded gathers of g_h, unmasked (the pad is
   zero), the taps' weights in registers and each row read from one pointer
   (the columns at constant offsets); then, in a loop that only the steps on
   the image's outer rows and columns enter, the border's terms. On taller
   images those on the first and last rows compute the rows' terms themselves,
   from rows of g_h their taps read anyway: a fifth of the border launch's
   bytes at classification's 56x56 tokens, where a row's 23 gathers serve 56
   positions. In the fused op a chunk is one of the adjoint scan's, and the
   walk also forms that scan's chunk summary from the g_x it computes
   (``selective_scan.triton_backend.AdjointSummaries``): the scan then reads
   g_x once, and its summary launch is gone.

Apart, the input gradient and the weights' sums each get a tile and
registers of their own (what that saves: benchmarks/RESULTS.md). No atomics:
deterministic.
"""
import torch
import triton
import triton.language as tl

from .._library import custom_op, eager_or_op
from .._shape_checks import check_fusion_args
from ..triton_launch import (LOG2E, adjoint_chunk_summary, block, check_launchable, launch,
                             new_output, sequence_view, step_size, steps_per_iteration,
                             strides)
from ..triton_launch import _config as config
from .reference import DILATIONS

NUM_TAPS = tl.constexpr(1 + 8 * len(DILATIONS))
"""Distinct offsets of the stencil: the shared centre and 8 others per dilation."""
SIDE_WEIGHTS = tl.constexpr(5 + 2 * len(DILATIONS))
"""Rows of :func:`border_weights` per side: the centre column's 5, then e = -d, +d."""
N_BORDER_WEIGHTS = tl.constexpr(4 * SIDE_WEIGHTS + 4 * len(DILATIONS))
"""Rows of :func:`border_weights`: 4 sides, then one row per dilation for each corner."""
PAD_PIXELS = max(DILATIONS)
PAD = tl.constexpr(PAD_PIXELS)
"""Pad of the backward's g_h buffer, the stencil's reach."""
if DILATIONS != tuple(2 * i + 1 for i in range(3)):
    raise ImportError(f'the Triton state fusion kernels unroll the dilations 2 DI + 1, '
                      f'DI < 3; DILATIONS is {DILATIONS}')


def fold_tap_weights(kernels, alpha):
    """(NUM_TAPS, D) float32 weights of the distinct offsets (not differentiable).

    Slices and sums on the kernels' device: no index tensor, no host sync.
    """
    taps = (alpha.detach().float()[:, None, None, None] * kernels.detach().float())
    taps = taps.flatten(2).transpose(1, 2)              # (len(DILATIONS), 9, D)
    centre = taps[:, 4].sum(0, keepdim=True)                         # (1, D)
    others = torch.cat([taps[:, :4], taps[:, 5:]], dim=1).flatten(0, 1)  # (NUM_TAPS - 1, D)
    return torch.cat([centre, others]).contiguous()


def _tap(dy, dx):
    """Row of the folded weights of offset (dy, dx), a non-centre offset."""
    d = max(abs(dy), abs(dx))
    pos = (dy // d + 1) * 3 + (dx // d + 1)
    return 1 + 8 * DILATIONS.index(d) + pos - (pos > 4)


def border_weights(weights):
    """(N_BORDER_WEIGHTS, D) rows of the folded weights (NUM_TAPS, D) in the
    order the border kernel reads them. Per side (top, bottom, left, right;
    ``-d`` inwards, ``e`` along it): rows 0-4 the centre column's (e = 0)
    weights summed over d > m for m = 0..4, rows 5 + 2i, 6 + 2i the taps e =
    -d, +d of dilation ``DILATIONS[i]``. Then per corner (top-left, top-right,
    bottom-left, bottom-right): its diagonal taps, one row per dilation."""
    rows = []
    for sy, sx, axis in ((-1, 0, 0), (1, 0, 0), (0, -1, 1), (0, 1, 1)):
        def tap(d, e):
            return _tap(sy * d + axis * e, sx * d + (1 - axis) * e)
        rows += [sum(weights[tap(d, 0)] for d in DILATIONS if d > m) for m in range(5)]
        rows += [weights[tap(d, e)] for d in DILATIONS for e in (-d, d)]
    rows += [weights[_tap(sy * d, sx * d)] for sy in (-1, 1) for sx in (-1, 1)
             for d in DILATIONS]
    return torch.stack(rows)


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

@triton.constexpr_function
def _tap_dy(K):
    """Row direction (-1, 0, 1) of non-centre tap K (3x3 position K + K // 4)."""
    return (K + K // 4) // 3 - 1


@triton.constexpr_function
def _tap_dx(K):
    """Column direction (-1, 0, 1) of non-centre tap K (3x3 position K + K // 4)."""
    return (K + K // 4) % 3 - 1


@triton.jit
def _padded_pixels(H, W):
    """Pixels of the padded g_h per image and channel block (:func:`padded_gh`)."""
    return (H + 2 * PAD + 1) * (W + PAD)


@triton.jit
def _padded_index(row, col, W):
    """Index of pixel (row, col) in the padded g_h (:func:`padded_gh`), for rows
    -PAD..H+PAD and columns -PAD..W-1 (columns W.. alias the next row's -PAD..)."""
    return (row + PAD) * (W + PAD) + PAD + col


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
    """(BLOCK_P, BLOCK_D) tile of a (batch, L, D) operand at pixels ``pix``, zero
    where ``mask`` is false; unmasked when ``mask`` is None."""
    ptrs = base + (pix * sl)[:, None] + (offs_d * sd)[None, :]
    if mask is None:
        tile = tl.load(ptrs)
    else:
        tile = tl.load(ptrs, mask=mask, other=0.0)
    return tile.to(tl.float32)


@triton.jit
def _fwd_tap(acc, x_base, sx_l, sx_d, w_ptr, row, col, H, W, D, offs_d, mask_d, mask,
             TAP: tl.constexpr, DY: tl.constexpr, DX: tl.constexpr, BLOCK_D: tl.constexpr):
    src = _clamp(row + DY, H - 1) * W + _clamp(col + DX, W - 1)
    w = tl.load(w_ptr + TAP * BLOCK_D)
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
    w_ptr += pid_d * (NUM_TAPS * BLOCK_D) + tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    acc = _fwd_tap(acc, x_base, sx_l, sx_d, w_ptr, row, col, H, W, D, offs_d, mask_d,
                   mask, 0, 0, 0, BLOCK_D)
    for DI in tl.static_range(3):
        for K in tl.static_range(8):
            acc = _fwd_tap(acc, x_base, sx_l, sx_d, w_ptr, row, col, H, W, D, offs_d,
                           mask_d, mask, 1 + 8 * DI + K, _tap_dy(K) * (2 * DI + 1),
                           _tap_dx(K) * (2 * DI + 1), BLOCK_D)
    if READOUT:
        c = tl.load(c_ptr + b * sc_b + offs_p * sc_l, mask=mask_p,
                    other=0.0).to(tl.float32)
        u = _gather(u_ptr + b * su_b, offs_p, su_l, offs_d, su_d, mask)
        dskip = tl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0)
        acc = acc * c[:, None] + u * dskip[None, :]
    out = out_ptr + b * so_b + (offs_p * so_l)[:, None] + (offs_d * so_d)[None, :]
    tl.store(out, acc, mask=mask)


@triton.jit
def _padded_tile(gh_chan, pix, pmask, GH_BLOCK: tl.constexpr):
    """(pixels, BLOCK_D) tile of the padded g_h at padded pixel indices ``pix``,
    zero where ``pmask`` is false (not read); unmasked when ``pmask`` is None.
    ``gh_chan``: the (BLOCK_D,) pointers of the channels at the image's first
    padded pixel, in their blocks of GH_BLOCK channels (:func:`padded_gh`)."""
    ptrs = gh_chan[None, :] + (pix * GH_BLOCK)[:, None]
    if pmask is None:
        tile = tl.load(ptrs)
    else:
        tile = tl.load(ptrs, mask=pmask[:, None], other=0.0)
    return tile


@triton.jit
def _bwd_tap(acc_h, s_k, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d, mask,
             HAS_C: tl.constexpr, EVEN: tl.constexpr, PIXEL: tl.constexpr,
             SX_L: tl.constexpr, TAP: tl.constexpr, DY: tl.constexpr, DX: tl.constexpr,
             BLOCK_D: tl.constexpr):
    """One tap at the pixels (r, cols): S_k += g_h x(clamp(p + off)) summed over
    the pixels (in the thread: it holds every pixel of its channels), and
    h += w x(...) when HAS_C. PIXEL: one pixel, ``r`` and ``cols`` scalars, x
    with pixel stride SX_L and channel stride 1: the tap's pointer is its
    clamped row's (shared by the taps of that row) moved by its clamped column
    shift, one multiply-add."""
    if PIXEL:
        row_ptrs = x_base + (_clamp(r + DY, H - 1) * W + cols) * SX_L + offs_d
        ptrs = (row_ptrs + (_clamp(cols + DX, W - 1) - cols) * SX_L)[None, :]
        if EVEN:
            xs = tl.load(ptrs)
        else:
            xs = tl.load(ptrs, mask=mask, other=0.0)
        xs = xs.to(tl.float32)
    else:
        src = _clamp(r + DY, H - 1) * W + _clamp(cols + DX, W - 1)
        if EVEN:    # no channel past D
            xs = _gather(x_base, src, sx_l, offs_d, sx_d, None)
        else:
            xs = _gather(x_base, src, sx_l, offs_d, sx_d, mask)
    s_k += tl.sum(gh_own * xs, axis=0)
    if HAS_C:
        acc_h += xs * tl.load(w_ptr + TAP * BLOCK_D)[None, :]
    return acc_h, s_k


@triton.jit
def _bwd_dilation(acc_h, s0, s1, s2, s3, s4, s5, s6, s7, gh_own, x_base, w_ptr, r, cols, H,
                  W, sx_l, sx_d, offs_d, mask, HAS_C: tl.constexpr, EVEN: tl.constexpr,
                  PIXEL: tl.constexpr, SX_L: tl.constexpr, DI: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    """The 8 non-centre taps of dilation 2 DI + 1 (3x3 positions 0-3, 5-8)."""
    T: tl.constexpr = 1 + 8 * DI
    d: tl.constexpr = 2 * DI + 1
    acc_h, s0 = _bwd_tap(acc_h, s0, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T, -d, -d, BLOCK_D)
    acc_h, s1 = _bwd_tap(acc_h, s1, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 1, -d, 0, BLOCK_D)
    acc_h, s2 = _bwd_tap(acc_h, s2, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 2, -d, d, BLOCK_D)
    acc_h, s3 = _bwd_tap(acc_h, s3, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 3, 0, -d, BLOCK_D)
    acc_h, s4 = _bwd_tap(acc_h, s4, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 4, 0, d, BLOCK_D)
    acc_h, s5 = _bwd_tap(acc_h, s5, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 5, d, -d, BLOCK_D)
    acc_h, s6 = _bwd_tap(acc_h, s6, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 6, d, 0, BLOCK_D)
    acc_h, s7 = _bwd_tap(acc_h, s7, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, T + 7, d, d, BLOCK_D)
    return acc_h, s0, s1, s2, s3, s4, s5, s6, s7


@triton.jit
def _store_sums(s_ptr, s0, s1, s2, s3, s4, s5, s6, s7, D, offs_d, mask_d,
                T: tl.constexpr):
    """Taps T..T+7 of this program's weight sums."""
    tl.store(s_ptr + T * D + offs_d, s0, mask=mask_d)
    tl.store(s_ptr + (T + 1) * D + offs_d, s1, mask=mask_d)
    tl.store(s_ptr + (T + 2) * D + offs_d, s2, mask=mask_d)
    tl.store(s_ptr + (T + 3) * D + offs_d, s3, mask=mask_d)
    tl.store(s_ptr + (T + 4) * D + offs_d, s4, mask=mask_d)
    tl.store(s_ptr + (T + 5) * D + offs_d, s5, mask=mask_d)
    tl.store(s_ptr + (T + 6) * D + offs_d, s6, mask=mask_d)
    tl.store(s_ptr + (T + 7) * D + offs_d, s7, mask=mask_d)


@triton.jit
def weight_sums_step(acc_h, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14,
                     s15, s16, s17, s18, s19, s20, s21, s22, s23, s24, gh_own, x_base, w_ptr,
                     r, cols, H, W, sx_l, sx_d, offs_d, mask, HAS_C: tl.constexpr,
                     EVEN: tl.constexpr, PIXEL: tl.constexpr, SX_L: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    """The 25 gathers of x at the pixels (r, cols) ((STEP,) each, or r a scalar):
    each S_k grows by ``g_h x(clamp(p + off_k))`` summed over the pixels, and
    with HAS_C ``acc_h`` (STEP, BLOCK_D) by ``w_k x(...)`` (h, for g_C). ``w_ptr``:
    the channels' tap-0 weights (:func:`per_block`); PIXEL, SX_L: see
    :func:`_bwd_tap`. Returns acc_h, s0..s24."""
    acc_h, s0 = _bwd_tap(acc_h, s0, gh_own, x_base, w_ptr, r, cols, H, W, sx_l, sx_d, offs_d,
                         mask, HAS_C, EVEN, PIXEL, SX_L, 0, 0, 0, BLOCK_D)
    acc_h, s1, s2, s3, s4, s5, s6, s7, s8 = _bwd_dilation(
        acc_h, s1, s2, s3, s4, s5, s6, s7, s8, gh_own, x_base, w_ptr, r, cols, H, W, sx_l,
        sx_d, offs_d, mask, HAS_C, EVEN, PIXEL, SX_L, 0, BLOCK_D)
    acc_h, s9, s10, s11, s12, s13, s14, s15, s16 = _bwd_dilation(
        acc_h, s9, s10, s11, s12, s13, s14, s15, s16, gh_own, x_base, w_ptr, r, cols, H, W,
        sx_l, sx_d, offs_d, mask, HAS_C, EVEN, PIXEL, SX_L, 1, BLOCK_D)
    acc_h, s17, s18, s19, s20, s21, s22, s23, s24 = _bwd_dilation(
        acc_h, s17, s18, s19, s20, s21, s22, s23, s24, gh_own, x_base, w_ptr, r, cols, H, W,
        sx_l, sx_d, offs_d, mask, HAS_C, EVEN, PIXEL, SX_L, 2, BLOCK_D)
    return (acc_h, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16,
            s17, s18, s19, s20, s21, s22, s23, s24)


@triton.jit
def store_weight_sums(s_ptr, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14,
                      s15, s16, s17, s18, s19, s20, s21, s22, s23, s24, D, offs_d, mask_d):
    """A program's 25 sums into ``s_ptr`` (NUM_TAPS, D), its channels only."""
    tl.store(s_ptr + offs_d, s0, mask=mask_d)
    _store_sums(s_ptr, s1, s2, s3, s4, s5, s6, s7, s8, D, offs_d, mask_d, 1)
    _store_sums(s_ptr, s9, s10, s11, s12, s13, s14, s15, s16, D, offs_d, mask_d, 9)
    _store_sums(s_ptr, s17, s18, s19, s20, s21, s22, s23, s24, D, offs_d, mask_d, 17)


@triton.jit
def _weights_tile(w_row, positions):
    """(positions, BLOCK_D) tile of one row of weights (``w_row``: its BLOCK_D
    pointers), loaded in the layout of the side's gathers: no shuffle of a
    (BLOCK_D,) vector through shared memory to broadcast it."""
    return tl.load(w_row[None, :] + 0 * positions[:, None])


@triton.jit
def _side_row_term(acc, gh_chan, w_side, origin, inward, along, t, M,
                   GH_BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """Edge terms of one side at its positions t (each on the side), from its
    M-th row inwards (M < 5): the side's 9 taps (offset -d inwards, e along,
    d in DILATIONS) add ``w g_h(origin + M inward + (t - e) along)`` for M < d.
    The gathers are unmasked: where t - e leaves the side or row M the image,
    they read the pad of g_h, which is zero. The centre column (e = 0) of the
    three dilations shares the row: weight row M of the side is its weights
    summed over d > M."""
    row = origin + M * inward
    acc += (_padded_tile(gh_chan, row + t * along, None, GH_BLOCK)
            * _weights_tile(w_side + M * BLOCK_D, t))
    for DI in tl.static_range(3):
        if M < 2 * DI + 1:
            for SIGN in tl.static_range(2):
                src = t - (2 * SIGN - 1) * (2 * DI + 1)
                acc += (_padded_tile(gh_chan, row + src * along, None, GH_BLOCK)
                        * _weights_tile(w_side + (5 + 2 * DI + SIGN) * BLOCK_D, t))
    return acc


@triton.jit
def _corner_block(gh_chan, w_corner, origin, inward, step, BLOCK_D: tl.constexpr):
    """(BLOCK_D,) corner term: for the corner's diagonal taps (d, d), ``w_d
    sum g_h`` over the d x d block of the corner (clipped to the image: the pad
    of g_h is zero); the blocks nest, so pixel (m, q) of the 5 x 5 block
    weighs w summed over d > max(m, q). ``origin``: the corner pixel;
    ``inward``: the padded step to the next row inwards; ``step``: +1 from a
    left corner, -1 from a right one."""
    pos = tl.arange(0, 32)
    m = pos // 5
    q = pos % 5
    gh = _padded_tile(gh_chan, origin + m * inward + q * step, pos < 25, BLOCK_D)
    reach = tl.maximum(m, q)[:, None]
    weight = (_weights_tile(w_corner + 2 * BLOCK_D, pos)
              + tl.where(reach < 3, _weights_tile(w_corner + BLOCK_D, pos), 0.0)
              + tl.where(reach < 1, _weights_tile(w_corner, pos), 0.0))
    return tl.sum(gh * weight, axis=0)


@triton.jit
def _fusion_bwd_border_kernel(gh_ptr, w_ptr, edge_ptr, D, H, W, n_edge, n_row_segs,
                              n_col_segs, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """What replicate padding adds to the zero-padded transpose, per side of
    the image, into ``edge_ptr`` (batch, 4, n_edge, D) float32, from the padded
    g_h of ``_fusion_bwd_weights_kernel``.

    Programs: segments of BLOCK_P positions of the top and bottom rows
    (``n_row_segs`` each; none when the input gradient takes the rows'
    terms), then of the left and right columns (``n_col_segs`` each). A side
    at position t (a column of a row side, a row of a column side) collects
    its taps' preimage pixels beyond the zero-padded one (:func:`_side_row_term`,
    a row inwards at a time); a column also adds, at its two ends, the taps
    pointing out of both axes (:func:`_corner_block`).
    """
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    is_col = pid >= 2 * n_row_segs
    n_segs = tl.where(is_col, n_col_segs, n_row_segs)
    index = tl.where(is_col, pid - 2 * n_row_segs, pid)
    far = index >= n_segs                                   # bottom or right
    seg = tl.where(far, index - n_segs, index)
    side = 2 * is_col.to(tl.int32) + far.to(tl.int32)
    n_along = tl.where(is_col, H, W)
    # padded pixel steps along the side and inwards, and the side's first pixel
    Wp = W + PAD
    along = tl.where(is_col, Wp, 1)
    inward = tl.where(is_col, 1, Wp)
    inward = tl.where(far, -inward, inward)
    origin = _padded_index(tl.where(far & ~is_col, H - 1, 0), tl.where(far & is_col, W - 1, 0),
                           W)
    t = seg * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_t = t < n_along
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    gh_chan = (gh_ptr + (b * tl.num_programs(1) + pid_d) * (_padded_pixels(H, W) * BLOCK_D)
               + tl.arange(0, BLOCK_D))
    w_block = w_ptr + pid_d * (N_BORDER_WEIGHTS * BLOCK_D) + tl.arange(0, BLOCK_D)
    w_side = w_block + side * (SIDE_WEIGHTS * BLOCK_D)
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    t_on_side = tl.minimum(t, n_along - 1)       # lanes past the side take its end
    for M in tl.static_range(5):
        acc = _side_row_term(acc, gh_chan, w_side, origin, inward, along, t_on_side, M,
                             BLOCK_D, BLOCK_D)
    # a column's corners: in its first segment (t = 0) and its last (t = H - 1)
    n_corners = tl.where(is_col, (seg == 0).to(tl.int32) + (seg == n_segs - 1).to(tl.int32), 0)
    for k in range(0, n_corners):
        bottom = (k > 0) | (seg > 0)
        corner_t = tl.where(bottom, H - 1, 0)
        corner = 2 * bottom.to(tl.int32) + far.to(tl.int32)
        w_corner = w_block + (4 * SIDE_WEIGHTS + 3 * corner) * BLOCK_D
        block = _corner_block(gh_chan, w_corner,
                              _padded_index(corner_t, tl.where(far, W - 1, 0), W),
                              tl.where(bottom, -Wp, Wp), tl.where(far, -1, 1), BLOCK_D)
        acc += tl.where(t[:, None] == corner_t, block[None, :], 0.0)
    out = edge_ptr + ((b * 4 + side) * n_edge + t.to(tl.int64))[:, None] * D + offs_d[None, :]
    tl.store(out, acc, mask=mask_t[:, None] & mask_d[None, :])


@triton.jit
def _dilation_weights(w_ptr, DI: tl.constexpr, BLOCK_D: tl.constexpr):
    """The (BLOCK_D,) weights of the 8 non-centre taps of dilation DI, K order."""
    w = w_ptr + (1 + 8 * DI) * BLOCK_D
    return (tl.load(w), tl.load(w + BLOCK_D), tl.load(w + 2 * BLOCK_D),
            tl.load(w + 3 * BLOCK_D), tl.load(w + 4 * BLOCK_D), tl.load(w + 5 * BLOCK_D),
            tl.load(w + 6 * BLOCK_D), tl.load(w + 7 * BLOCK_D))


@triton.jit
def _walk_dilation(acc, own_ptrs, row_step, w0, w1, w2, w3, w4, w5, w6, w7,
                   d: tl.constexpr, GH_BLOCK: tl.constexpr):
    """acc += the 8 non-centre taps of dilation d: tap K of offset (dy, dx) d
    reads g_h(p - (dy, dx) d) (``_tap_dy``, ``_tap_dx``: K0-K2 dy = -1, K3-K4
    dy = 0, K5-K7 dy = 1). From one pointer per row read, the columns are
    constant offsets (``own_ptrs``: the pixels' own; ``row_step``: one padded
    row down)."""
    below = own_ptrs + d * row_step         # row r + d, read by the taps dy = -1
    above = own_ptrs - d * row_step         # row r - d, read by the taps dy = 1
    acc += tl.load(below + d * GH_BLOCK) * w0[None, :]
    acc += tl.load(below) * w1[None, :]
    acc += tl.load(below - d * GH_BLOCK) * w2[None, :]
    acc += tl.load(own_ptrs + d * GH_BLOCK) * w3[None, :]
    acc += tl.load(own_ptrs - d * GH_BLOCK) * w4[None, :]
    acc += tl.load(above + d * GH_BLOCK) * w5[None, :]
    acc += tl.load(above) * w6[None, :]
    acc += tl.load(above - d * GH_BLOCK) * w7[None, :]
    return acc


@triton.jit
def _fusion_bwd_input_kernel(gh_ptr, w_ptr, side_w_ptr, edge_ptr, gx_ptr, delta_ptr, A_ptr,
                             bias_ptr, decay_ptr, flow_ptr, D, H, W, L, n_edge, ROW_TERMS,
                             sgx_b, sgx_l, sgx_d, sd_b, sd_l, sd_d, SUMMARY: tl.constexpr,
                             HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                             EVEN: tl.constexpr, BLOCK_P: tl.constexpr, STEP: tl.constexpr,
                             BLOCK_D: tl.constexpr, GH_BLOCK: tl.constexpr):
    """g_x of BLOCK_P consecutive pixels (raster order) x BLOCK_D channels,
    walked STEP pixels a step (one on a GPU: a thread holds a few channels of
    the step's pixel): the zero-padded transpose ``sum_k w_k g_h(p - off_k)``,
    read without masks from the padded g_h of ``_fusion_bwd_weights_kernel``
    (channel blocks of GH_BLOCK; the pad is zero), plus what replicate
    padding adds on the image's outer rows and columns: on its first and last
    rows, when ROW_TERMS is 1, from the rows of g_h the taps read anyway
    (:func:`_side_row_term`, side weights ``side_w_ptr`` of
    :func:`border_weights`), else and on its first and last columns the terms
    that ``_fusion_bwd_border_kernel`` left in ``edge_ptr``.

    With SUMMARY (the fused op; the program's pixels are a chunk of the adjoint
    scan) it also writes the chunk's summary of that scan over g_x (its decay
    product and flow, (batch, chunks, D) in ``decay_ptr`` and ``flow_ptr``),
    from the step sizes of ``delta_ptr``, A (D,) and the delta bias: the scan's
    summary launch, without reading g_x back."""
    pid_p = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    start = pid_p * BLOCK_P
    end = tl.minimum(start + BLOCK_P, L)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    Wp = W + PAD
    # the channels' pointers into their blocks of this image's padded g_h
    gh_image = gh_ptr + b * (tl.cdiv(D, GH_BLOCK) * GH_BLOCK * _padded_pixels(H, W))
    gh_chan = (gh_image + (offs_d // GH_BLOCK) * (_padded_pixels(H, W) * GH_BLOCK)
               + offs_d % GH_BLOCK)
    row_step = Wp * GH_BLOCK        # a padded row down, in g_h's elements
    # the weights of the centre and dilations 1 and 3, held in registers for the
    # walk; dilation 5's are read at each step (from L1): with all 25 held they
    # and the gathers in flight took 255 registers, and ptxas 3.8 spilled at D 192
    w_ptr += pid_d * (NUM_TAPS * BLOCK_D) + tl.arange(0, BLOCK_D)
    w_centre = tl.load(w_ptr)
    w1_0, w1_1, w1_2, w1_3, w1_4, w1_5, w1_6, w1_7 = _dilation_weights(w_ptr, 0, BLOCK_D)
    w3_0, w3_1, w3_2, w3_3, w3_4, w3_5, w3_6, w3_7 = _dilation_weights(w_ptr, 1, BLOCK_D)
    w_sides = side_w_ptr + pid_d * (N_BORDER_WEIGHTS * BLOCK_D) + tl.arange(0, BLOCK_D)
    edge = edge_ptr + b * 4 * n_edge * D + offs_d[None, :]
    gx_base = gx_ptr + b * sgx_b + (offs_d * sgx_d)[None, :]
    idx = tl.arange(0, STEP)
    side_rows = tl.minimum(H, 5) * ROW_TERMS
    if SUMMARY:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)
        A_log2 = tl.load(A_ptr + offs_d, mask=mask_d, other=0.0) * LOG2E
        delta_base = delta_ptr + b * sd_b + (offs_d * sd_d)[None, :]
        decay = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
        flow = tl.zeros([BLOCK_D], dtype=tl.float32)
    # channels past D (of delta, the border's terms, g_x): none when EVEN, and
    # their masks then fold away
    mask_c = mask_d if not EVEN else tl.full([BLOCK_D], 1, tl.int1)
    # the step's first pixel, moved on a step at a time: no division in the loop
    row0 = start // W
    col0 = start - row0 * W
    for p0 in range(start, end, STEP):
        pix = p0 + idx
        if STEP == 1:       # the step is one pixel of the chunk
            mask_p = tl.full([STEP], 1, tl.int1)
            row = row0 + idx
            col = col0 + idx
            col0 += 1
            wrap = col0 == W
            row0 = tl.where(wrap, row0 + 1, row0)
            col0 = tl.where(wrap, 0, col0)
        else:               # past the chunk a step's pixels take its first
            mask_p = pix < end
            pix = tl.where(mask_p, pix, p0)
            row = pix // W
            col = pix - row * W
        mask = mask_p[:, None] & mask_c[None, :]
        own = _padded_index(row, col, W)
        own_ptrs = gh_chan[None, :] + (own * GH_BLOCK)[:, None]
        acc = tl.load(own_ptrs) * w_centre[None, :]
        acc = _walk_dilation(acc, own_ptrs, row_step, w1_0, w1_1, w1_2, w1_3, w1_4, w1_5,
                             w1_6, w1_7, 1, GH_BLOCK)
        acc = _walk_dilation(acc, own_ptrs, row_step, w3_0, w3_1, w3_2, w3_3, w3_4, w3_5,
                             w3_6, w3_7, 3, GH_BLOCK)
        w5_0, w5_1, w5_2, w5_3, w5_4, w5_5, w5_6, w5_7 = _dilation_weights(w_ptr, 2, BLOCK_D)
        acc = _walk_dilation(acc, own_ptrs, row_step, w5_0, w5_1, w5_2, w5_3, w5_4, w5_5,
                             w5_6, w5_7, 5, GH_BLOCK)
        # the border: a loop that only the steps holding pixels of the outer rows
        # or columns enter: the first row's terms a row inwards an iteration, then
        # the last row's (with ROW_TERMS), then one iteration for the border
        # launch's terms ((n_edge, D) per side: rows by column, columns by row)
        on_first = tl.max((mask_p & (row == 0)).to(tl.int32), axis=0)
        on_last = tl.max((mask_p & (row == H - 1)).to(tl.int32), axis=0)
        on_edge = tl.max((mask_p & ((col == 0) | (col == W - 1))).to(tl.int32), axis=0)
        if ROW_TERMS == 0:
            on_edge = on_edge | on_first | on_last
        n_first = on_first * side_rows
        n_rows = n_first + on_last * side_rows
        for i in range(0, n_rows + on_edge):
            if i < n_rows:
                last = i >= n_first
                side_row = tl.where(last, H - 1, 0)
                on_side = (mask_p & (row == side_row)).to(tl.float32)[:, None]
                acc += on_side * _side_row_term(
                    tl.zeros([STEP, BLOCK_D], dtype=tl.float32), gh_chan,
                    w_sides + tl.where(last, SIDE_WEIGHTS * BLOCK_D, 0),
                    _padded_index(side_row, 0, W), tl.where(last, -Wp, Wp), 1, col,
                    tl.where(last, i - n_first, i), GH_BLOCK, BLOCK_D)
            else:
                edge_rows = mask & (ROW_TERMS == 0)
                acc += tl.load(edge + (col * D)[:, None],
                               mask=edge_rows & (row == 0)[:, None], other=0.0)
                acc += tl.load(edge + ((n_edge + col) * D)[:, None],
                               mask=edge_rows & (row == H - 1)[:, None], other=0.0)
                acc += tl.load(edge + ((2 * n_edge + row) * D)[:, None],
                               mask=mask & (col == 0)[:, None], other=0.0)
                acc += tl.load(edge + ((3 * n_edge + row) * D)[:, None],
                               mask=mask & (col == W - 1)[:, None], other=0.0)
        tl.store(gx_base + (pix * sgx_l)[:, None], acc, mask=mask)
        if SUMMARY:
            _, dt = step_size(delta_base + (pix * sd_l)[:, None], mask, bias, HAS_BIAS,
                              SOFTPLUS)
            # (the channels past D are never stored: their pixels need no mask)
            step_decay, step_flow = adjoint_chunk_summary(acc, dt, A_log2, mask_p[:, None])
            flow += decay * step_flow
            decay *= step_decay
    if SUMMARY:
        summary = (b * tl.num_programs(0) + pid_p) * D + offs_d
        tl.store(decay_ptr + summary, decay, mask=mask_d)
        tl.store(flow_ptr + summary, flow, mask=mask_d)


# n_strips not specialised: at one strip (images of at most BLOCK_W columns)
# ptxas spills 20-24 bytes of the code specialised to it
@triton.jit(do_not_specialize=['n_strips'])
def _fusion_bwd_weights_kernel(x_ptr, w_ptr, g_ptr, c_ptr, s_part_ptr, gc_part_ptr, gh_ptr,
                               D, H, W, L, ROWS, n_strips, n_tiles, n_dblocks, w_step,
                               sx_b, sx_l, sx_d, sg_b, sg_l, sg_d, sc_b, sc_l,
                               HAS_C: tl.constexpr, SUMS: tl.constexpr,
                               EVEN: tl.constexpr, BLOCK_W: tl.constexpr, STEP_W: tl.constexpr,
                               BLOCK_D: tl.constexpr, GH_BLOCK: tl.constexpr):
    """Per-program weight sums S (and g_C partials when HAS_C), and g_h into
    the padded buffer of the input gradient (:func:`padded_gh`, channel blocks
    of GH_BLOCK), its pad zeroed. Without SUMS (the fused op, whose adjoint
    scan forms S and g_C: ``AdjointFusionSums``) only g_h and its pad.

    Program: BLOCK_W columns x ROWS rows x BLOCK_D channels, walked row by row,
    STEP_W pixels a step; a thread holds a few channels of every pixel of the
    step, so each S_k grows by multiply-adds in the thread, and the program's
    sums need no reduction across threads. g_ptr is g_out, or g_y of the fused
    op (then g_h = g_y C and g_C = sum_d g_y h). ``w_step`` is 0: the weights
    are re-read at each step from an address the compiler cannot prove the
    same, which keeps it from hoisting them (NUM_TAPS x 4 registers a thread
    at BLOCK_D 128, beside as many for the sums) out of the loop and spilling.
    """
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    strip = pid % n_strips
    col0 = strip * BLOCK_W
    col_end = tl.minimum(col0 + BLOCK_W, W)
    row0 = (pid // n_strips) * ROWS
    row_end = tl.minimum(row0 + ROWS, H)
    # the strip's columns, those past the image taking its last (their pad
    # pixels are written twice, with the same zero)
    cols = tl.minimum(col0 + tl.arange(0, BLOCK_W), W - 1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    x_base = x_ptr + b * sx_b
    g_base = g_ptr + b * sg_b
    c_base = c_ptr + b * sc_b
    w_ptr += pid_d * (NUM_TAPS * BLOCK_D) + tl.arange(0, BLOCK_D)
    gc_base = gc_part_ptr + (b * n_dblocks + pid_d) * L
    # padded g_h: this image's channel blocks of GH_BLOCK; offsets of the
    # program's channels, and from a row's first pad pixel of its columns and
    # (from the first strip) of the PAD pads
    gh_image = gh_ptr + b * (tl.cdiv(D, GH_BLOCK) * GH_BLOCK * _padded_pixels(H, W))
    gh_chan = (offs_d // GH_BLOCK) * (_padded_pixels(H, W) * GH_BLOCK) + offs_d % GH_BLOCK
    gh_cols = ((cols + PAD) * GH_BLOCK)[:, None] + gh_chan[None, :]
    pad_cols = tl.arange(0, 8)
    pad_mask = (pad_cols < PAD)[:, None] & (strip == 0) & mask_d[None, :]
    pad_tile = (pad_cols * GH_BLOCK)[:, None] + gh_chan[None, :]
    pad_zero = tl.zeros([8, BLOCK_D], dtype=tl.float32)
    # the pad rows above (from the first band of rows) and below (the last)
    for M in tl.static_range(2 * PAD + 1):
        pad_row = gh_image + _padded_index(tl.where(M < PAD, M - PAD, H + M - PAD), -PAD,
                                           W) * GH_BLOCK
        pad_here = tl.where(M < PAD, row0 == 0, row_end == H)
        tl.store(pad_row + gh_cols, tl.zeros([BLOCK_W, BLOCK_D], dtype=tl.float32),
                 mask=mask_d[None, :] & pad_here)
        tl.store(pad_row + pad_tile, pad_zero, mask=pad_mask & pad_here)
    s0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    s1, s2, s3, s4, s5, s6, s7, s8 = s0, s0, s0, s0, s0, s0, s0, s0
    s9, s10, s11, s12, s13, s14, s15, s16 = s0, s0, s0, s0, s0, s0, s0, s0
    s17, s18, s19, s20, s21, s22, s23, s24 = s0, s0, s0, s0, s0, s0, s0, s0
    for r in range(row0, row_end):
        gh_row = gh_image + _padded_index(r, 0, W) * GH_BLOCK
        tl.store(gh_row - PAD * GH_BLOCK + pad_tile, pad_zero, mask=pad_mask)  # strip 0
        for c in range(col0, col_end, STEP_W):
            w_here = w_ptr + c * w_step
            step_cols = c + tl.arange(0, STEP_W)
            mask_c = step_cols < col_end
            mask = mask_c[:, None] & mask_d[None, :]
            if STEP_W > 1:
                # past the strip a step's pixels take its first: every read is in
                # the image, and their g is zero
                step_cols = tl.where(mask_c, step_cols, c)
            pix = r * W + step_cols
            if EVEN and STEP_W == 1:
                g_own = _gather(g_base, pix, sg_l, offs_d, sg_d, None)
            else:
                g_own = _gather(g_base, pix, sg_l, offs_d, sg_d, mask)
            gh_own = g_own
            if HAS_C:
                gh_own = g_own * tl.load(c_base + pix * sc_l).to(tl.float32)[:, None]
            tl.store(gh_row + (step_cols * GH_BLOCK)[:, None] + gh_chan[None, :], gh_own,
                     mask=mask)
            if SUMS:
                acc_h = tl.zeros([STEP_W, BLOCK_D], dtype=tl.float32)
                (acc_h, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15,
                 s16, s17, s18, s19, s20, s21, s22, s23, s24) = weight_sums_step(
                    acc_h, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14,
                    s15, s16, s17, s18, s19, s20, s21, s22, s23, s24, gh_own, x_base, w_here, r,
                    step_cols, H, W, sx_l, sx_d, offs_d, mask, HAS_C, EVEN, False, 0, BLOCK_D)
                if HAS_C:
                    tl.store(gc_base + pix, tl.sum(g_own * acc_h, axis=1), mask=mask_c)
    if SUMS:
        store_weight_sums(s_part_ptr + (b * n_tiles + pid) * (NUM_TAPS * D), s0, s1, s2, s3,
                          s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16, s17, s18,
                          s19, s20, s21, s22, s23, s24, D, offs_d, mask_d)


# ----------------------------------------------------------------------- launchers

def per_block(weights, block_d):
    """(25, D) weights as (channel blocks, 25, block_d), zero-padded: a program
    finds tap k's weights at a constant offset from its block's."""
    taps, channels = weights.shape
    n_blocks = triton.cdiv(channels, block_d)
    padded = weights.new_zeros(taps, n_blocks * block_d)
    padded[:, :channels] = weights
    return padded.view(taps, n_blocks, block_d).transpose(0, 1).contiguous()


def padded_gh(batch, channels, height, width, block_d, device, read_block_d=None):
    """(batch, channel blocks, padded pixels, block_d) float32 buffer of g_h for
    the input gradient: per image and channel block, H + 2 PAD + 1 rows of W + PAD
    pixels, image row r at row r + PAD after PAD pad pixels. The pad pixels left
    of a row also serve as the right pad of the row before, so every tap of the
    zero-padded transpose reads within the buffer and finds zero outside the
    image. ``_fusion_bwd_weights_kernel`` writes all of it. Programs reading
    ``read_block_d`` channels at a time read the channels past D (those of the
    next image's first blocks) without masks: the buffer extends past the last
    image by the blocks its last program's channels reach (never written)."""
    pixels = (height + 2 * PAD + 1) * (width + PAD)
    n_blocks = triton.cdiv(channels, block_d)
    reach = triton.cdiv(channels, read_block_d or block_d) * (read_block_d or block_d)
    tail = triton.cdiv(reach, block_d) - n_blocks
    if (n_blocks + tail) * pixels * block_d >= 2 ** 31:
        raise ValueError(f'state_fusion_triton: the padded g_h of an image of {channels} '
                         f'channels and {height}x{width} pixels spans 2**31 elements or '
                         f'more; the Triton kernels index it in int32')
    flat = new_output((batch * n_blocks + tail, pixels, block_d), torch.float32, device)
    return flat[:batch * n_blocks].view(batch, n_blocks, pixels, block_d)


def check_image_offsets(op_name, *views):
    """The kernels index within one image in int32 (the batch offset is int64):
    raise when an image of a (batch, L[, D]) view spans 2**31 elements or more."""
    for t in views:
        if t is not None and sum((n - 1) * abs(st) for n, st in
                                 zip(t.shape[1:], t.stride()[1:])) >= 2 ** 31:
            raise ValueError(f'{op_name}: an image of {tuple(t.shape)} spans 2**31 '
                             f'elements or more; the Triton kernels index it in int32')


def fusion_forward(x, weights, height, width, out, C=None, u=None, Dskip=None):
    """Stencil of x ((batch, L, D) view) with folded weights (NUM_TAPS, D) float32, into
    ``out`` ((batch, L, D) view). With C ((batch, L) view), u ((batch, L, D)) and
    Dskip (D,): the fused SSM readout ``C * stencil(x) + Dskip * u``."""
    check_launchable('state_fusion_triton', _fusion_fwd_kernel, x, weights)
    check_image_offsets('state_fusion_triton', x, out, C, u)
    batch, length, channels = x.shape
    block_p = block('fusion_block_p', length)
    block_d = block('fusion_block_d', channels)
    readout = C is not None
    c_arg = C if readout else weights
    u_arg = u if readout else x
    dskip = Dskip.detach().float().contiguous() if readout else weights
    grid = (triton.cdiv(length, block_p), triton.cdiv(channels, block_d), batch)
    launch(_fusion_fwd_kernel, grid, x, per_block(weights, block_d), c_arg, u_arg, dskip, out,
           channels, height, width, length, *strides(x),
           c_arg.stride(0) if readout else 0, c_arg.stride(1) if readout else 0,
           *strides(u_arg), *strides(out), READOUT=readout, BLOCK_P=block_p,
           BLOCK_D=block_d, num_warps=config['fusion_fwd_warps'],
           reads=(x, C, u), writes=(out,))
    return out


def fusion_backward(g, x, weights, height, width, g_x, C=None, adjoint=None,
                    weight_sums=True):
    """Transpose of :func:`fusion_forward` (without the skip term).

    Args:
        g (Tensor): (batch, L, D) view, gradient of the output (of y when C).
        x (Tensor): (batch, L, D) view, the stencil's input.
        weights (Tensor): (NUM_TAPS, D) float32 folded weights.
        g_x (Tensor): (batch, L, D) view to write the input gradient into.
        C (Tensor, optional): (batch, L) view, the fused readout's C.
        adjoint (selective_scan.triton_backend.AdjointSummaries, optional): the
            fused op's adjoint scan over g_x, whose chunk summaries the input
            gradient's programs (one chunk each) then write.
        weight_sums (bool): form S and g_C here; False for the fused op, whose
            adjoint scan forms them (``selective_scan.triton_backend.AdjointFusionSums``);
            x is then not read.

    Returns:
        (S (NUM_TAPS, D) float32 weight sums, g_C (batch, L) float32 or None),
        or None without ``weight_sums``.
    """
    check_launchable('state_fusion_triton', _fusion_bwd_weights_kernel, g, x, weights)
    check_image_offsets('state_fusion_triton', g, x, g_x, C)
    batch, length, channels = x.shape
    block_w = block('fusion_bwd_block_p', width)
    block_wd = block('fusion_bwd_block_d', channels)        # the weights' channels
    block_d = block('fusion_block_d', channels)             # g_h's and the stencils'
    rows = max(1, min(config['fusion_bwd_rows'], height))
    n_strips, n_dblocks = triton.cdiv(width, block_w), triton.cdiv(channels, block_d)
    n_wdblocks = triton.cdiv(channels, block_wd)
    n_tiles = n_strips * triton.cdiv(height, rows)
    has_c = C is not None
    if not (weight_sums or has_c):
        raise ValueError('fusion_backward: without weight_sums it only forms g_h = g_y C, '
                         'which needs C')
    dev = x.device
    c_arg = C if has_c else weights
    c_strides = (C.stride(0), C.stride(1)) if has_c else (0, 0)
    # the weights' sums (or, without weight_sums, g_h only), writing the padded
    # g_h the next two launches read
    s_part = (new_output((batch, n_tiles, NUM_TAPS, channels), torch.float32, dev)
              if weight_sums else None)
    gc_part = (new_output((batch, n_wdblocks, length), torch.float32, dev)
               if has_c and weight_sums else None)
    block_id = block('fusion_bwd_input_block_d', channels)  # the input gradient's
    gh = padded_gh(batch, channels, height, width, block_d, dev, block_id)
    step_w = steps_per_iteration('fusion_bwd_step_w', block_w, _fusion_bwd_weights_kernel)
    unused = gh     # a pointer argument the kernel does not touch
    launch(_fusion_bwd_weights_kernel, (n_tiles, n_wdblocks, batch),
           x, per_block(weights, block_wd), g, c_arg,
           s_part if weight_sums else unused, gc_part if gc_part is not None else unused,
           gh, channels, height, width, length, rows, n_strips, n_tiles, n_wdblocks, 0,
           *strides(x), *strides(g), *c_strides,
           HAS_C=has_c, SUMS=weight_sums, EVEN=channels % block_wd == 0, BLOCK_W=block_w,
           STEP_W=step_w, BLOCK_D=block_wd, GH_BLOCK=block_d,
           num_warps=config['fusion_bwd_warps'],
           reads=(x if weight_sums else None, g, C), writes=(s_part, gc_part, gh))
    # what replicate padding adds on the outer rows and columns: the border
    # launch's terms per side, for the input gradient to add; its walk takes
    # the rows' terms itself when the steps on those rows are few
    # (``fusion_row_terms_min_height`` rows or more)
    border = border_weights(weights)
    side_weights = per_block(border, block_d)
    row_terms = int(height >= config['fusion_row_terms_min_height'])
    n_edge = max(height, width)
    edge = new_output((batch, 4, n_edge, channels), torch.float32, dev)
    block_e = block('fusion_border_block_p', n_edge)
    n_row_segs = 0 if row_terms else triton.cdiv(width, block_e)
    n_col_segs = triton.cdiv(height, block_e)
    ring = (length - max(height - 2 * PAD_PIXELS, 0) * max(width - 2 * PAD_PIXELS, 0)
            if not row_terms else height * min(width, 2 * PAD_PIXELS))   # pixels it may read
    launch(_fusion_bwd_border_kernel, (2 * (n_row_segs + n_col_segs), n_dblocks, batch),
           gh, side_weights, edge, channels, height, width, n_edge, n_row_segs, n_col_segs,
           BLOCK_P=block_e, BLOCK_D=block_d, num_warps=config['fusion_border_warps'],
           reads=(gh[:, :, :ring],), writes=(edge[:, 2 * row_terms:],))
    summary = adjoint is not None
    block_p = adjoint.block_l if summary else block('fusion_bwd_input_block_p', length)
    delta = adjoint.delta if summary else g_x
    launch(_fusion_bwd_input_kernel,
           (triton.cdiv(length, block_p), triton.cdiv(channels, block_id), batch),
           gh, per_block(weights, block_id), per_block(border, block_id),
           edge, g_x, delta,
           *((adjoint.A, adjoint.bias if adjoint.bias is not None else adjoint.A,
              adjoint.decay, adjoint.flow) if summary else (g_x,) * 4),
           channels, height, width, length, n_edge, row_terms, *strides(g_x), *strides(delta),
           SUMMARY=summary, HAS_BIAS=summary and adjoint.bias is not None,
           SOFTPLUS=summary and adjoint.softplus, EVEN=channels % block_id == 0,
           BLOCK_P=block_p,
           STEP=steps_per_iteration('fusion_bwd_input_step', block_p, _fusion_bwd_input_kernel),
           BLOCK_D=block_id, GH_BLOCK=block_d, num_warps=config['fusion_bwd_input_warps'],
           reads=(gh, edge[:, 2 * row_terms:], *((delta,) if summary else ())),
           writes=(g_x, *((adjoint.decay, adjoint.flow) if summary else ())))
    if not weight_sums:
        return None
    return s_part.sum((0, 1)), (gc_part.sum(1) if has_c else None)


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
