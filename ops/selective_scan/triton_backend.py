"""Triton selective scan, parallel over batch, channels and the sequence.

    x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t,    x_{-1} = 0

Operands are (batch, L, D) views (see ``triton_launch.sequence_view``): u, delta and
the gradients in the caller's layout, states (batch, L, D, N) float32.

Three launches, each parallel over (chunk of BLOCK_L steps, block of BLOCK_D
channels, batch x N):

1. ``_scan_chunk_kernel`` (summary): each program walks its chunk in time
   order, the state of its BLOCK_D channels in registers, and writes only the
   chunk's composition: the decay product and the end state from a zero
   start, (batch*N, chunks, D) each;
2. ``_scan_carry_kernel``: one program per (channel block, batch x n) scans the
   chunk summaries, BLOCK_C chunks per step with ``tl.associative_scan``, into
   the true end state of every chunk (L / BLOCK_L / BLOCK_C steps: 17 at
   detection stage 1);
3. ``_scan_chunk_kernel`` (final): the same walk from the end state of the
   previous chunk, writing the states.

A chunk's loop takes BLOCK_T steps per iteration (``scan_block_t``): a
(BLOCK_T, BLOCK_D) tile, composed along time with ``tl.associative_scan`` and
applied to the carried state. On a GPU BLOCK_T is 1: each step is one vector
load of u and delta per thread (channels-last rows are contiguous), a
broadcast load of B_t and a few instructions per channel; softplus is taken
once per element and pass. The Triton interpreter, whose cost is per
operation, not per element, takes whole chunks by default. A program waits on its steps' loads
in turn; they do not depend on the carried state, so what hides their latency
is the number of programs resident per SM: one-warp programs, many per SM.

The backward is the same three launches on the adjoint recurrence
``lam_t = g_t + a_{t+1} lam_{t+1}``, walked backwards in time. The loop
carries the flow ``mu = a_t lam_t`` into the steps before; within a tile
``_adjoint_combine`` composes steps (g_t, 1, a_t), so no step needs a_{t+1}
(the summaries and carries are flows at chunk starts). Its final pass also
forms every gradient:

    g_u = lam dt B,  g_B = sum_d lam dt u,  g_dt = lam (x_{t-1} A a_t + B u),
    g_A = sum_{b,t} lam x_{t-1} dt a_t,  then softplus' chain rule and g_bias.

In the fused SSM op the launch that computes g_t (the state fusion's input
gradient) also forms the chunk summaries (:class:`AdjointSummaries`,
``triton_launch.adjoint_chunk_summary``), and the summary launch is skipped;
the final pass, which reads the states and g_y anyway, also forms the state
fusion's weight sums and g_C (:class:`AdjointFusionSums`, the fusion's
``weight_sums_step`` at each step's pixel, its row and column carried).
A step (BLOCK_T 1) is its own composition: no ``tl.associative_scan``, whose
reverse form reverses the lanes even for one step.

Reductions over channels (g_B) leave one partial per channel block, reductions
over batch and time (g_A, g_bias, g_Dskip) one per chunk, accumulated in
registers and stored once; PyTorch sums them. No atomics: results are
deterministic. All arithmetic is float32.
"""
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .._library import custom_op, eager_or_op
from .._shape_checks import check_scan_args
from ..state_fusion.triton_backend import (NUM_TAPS, check_image_offsets, per_block,
                                           store_weight_sums, weight_sums_step)
from ..triton_launch import (LOG2E, block, check_launchable, first_order_combine, launch,
                             new_output, row_of, sequence_view, sigmoid, step_size,
                             steps_per_iteration, strides)
from ..triton_launch import _config as config


@triton.jit
def _adjoint_combine(later_g, later_p, later_f, g, p, f):
    """Compose adjoint segments, the later one first. A segment [i, j] maps the
    flow into it, ``mu = a_{j+1} lam_{j+1}``, to ``lam_i = g + p mu``; ``f`` is
    ``a_i``, which the earlier segment needs to take in ``a_i lam_i``. One step
    t is (g_t, 1, a_t)."""
    p_f = p * later_f
    return g + p_f * later_g, p_f * later_p, f


@triton.jit
def _chunk_program(A_ptr, bias_ptr, L, D, N, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's part of a (chunks, channel blocks, batch x N) grid: its
    indices, batch (int64) and state index, first step and number of steps,
    the step index of a (BLOCK_T, BLOCK_D) tile, channel indices and mask, and
    the channels' A[:, n] and delta bias."""
    pid_c = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_bn = tl.program_id(2)
    b = (pid_bn // N).to(tl.int64)
    n = pid_bn % N
    start = pid_c * BLOCK_L
    steps = tl.minimum(L - start, BLOCK_L)
    idx = tl.arange(0, BLOCK_T)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    A = tl.load(A_ptr + offs_d * N + n, mask=mask_d, other=0.0)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)
    return pid_c, pid_d, pid_bn, b, n, start, steps, idx, offs_d, mask_d, A, bias


@triton.jit
def _scan_chunk_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, decay_ptr, end_ptr,
                       x_ptr, L, D, N, n_chunks,
                       su_b, su_l, su_d, sd_b, sd_l, sd_d, sB_b, sB_l, sB_n,
                       sx_b, sx_l, sx_d, sx_n,
                       HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                       FINAL: tl.constexpr, BLOCK_L: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Summary pass (FINAL false): write each chunk's decay product and end
    state from a zero start. Final pass: the states, from the chunk carries
    that ``_scan_carry_kernel`` left in ``end_ptr``. Either walks the chunk in
    time order, BLOCK_T steps at a time, the state carried in registers."""
    pid_c, pid_d, pid_bn, b, n, start, steps, idx, offs_d, mask_d, A, bias = \
        _chunk_program(A_ptr, bias_ptr, L, D, N, HAS_BIAS, BLOCK_L, BLOCK_T, BLOCK_D)
    A_log2 = A * LOG2E                  # a = exp(dt A) = exp2(dt A_log2)
    row = start.to(tl.int64)
    # this tile's pointers, moved on by BLOCK_T steps per iteration
    u_ptrs = u_ptr + b * su_b + row * su_l + (idx * su_l)[:, None] + offs_d[None, :] * su_d
    delta_ptrs = (delta_ptr + b * sd_b + row * sd_l + (idx * sd_l)[:, None]
                  + offs_d[None, :] * sd_d)
    B_ptrs = B_ptr + b * sB_b + n * sB_n + row * sB_l + idx * sB_l
    x_ptrs = (x_ptr + b * sx_b + n * sx_n + row * sx_l + (idx * sx_l)[:, None]
              + offs_d[None, :] * sx_d)
    summary = (pid_bn * n_chunks + pid_c).to(tl.int64) * D + offs_d
    decay = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
    if FINAL:
        x = tl.load(end_ptr + summary - D, mask=mask_d & (pid_c > 0), other=0.0)
    else:
        x = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t in range(0, steps, BLOCK_T):
        mask_t = t + idx < steps
        mask = mask_t[:, None] & mask_d[None, :]
        _, dt = step_size(delta_ptrs, mask, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_ptrs, mask=mask, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptrs, mask=mask_t, other=0.0).to(tl.float32)
        a = tl.where(mask, tl.exp2(dt * A_log2[None, :]), 1.0)
        a, drive = tl.associative_scan((a, dt * u * Bt[:, None]), 0, first_order_combine)
        states = drive + a * x[None, :]
        x = row_of(states, idx, BLOCK_T - 1)
        if FINAL:
            tl.store(x_ptrs, states, mask=mask)
            x_ptrs += BLOCK_T * sx_l
        else:
            decay *= row_of(a, idx, BLOCK_T - 1)
        u_ptrs += BLOCK_T * su_l
        delta_ptrs += BLOCK_T * sd_l
        B_ptrs += BLOCK_T * sB_l
    if not FINAL:
        tl.store(decay_ptr + summary, decay, mask=mask_d)
        tl.store(end_ptr + summary, x, mask=mask_d)


@triton.jit
def _scan_carry_kernel(decay_ptr, end_ptr, D, n_chunks, REVERSE: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """Chunk summaries -> the state at each chunk's end (its start when REVERSE),
    in place of ``end_ptr``: ``end_c += decay_c * end_{c-1}`` in time order."""
    pid_d = tl.program_id(0)
    pid_bn = tl.program_id(1)
    idx = tl.arange(0, BLOCK_C)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    base = pid_bn.to(tl.int64) * n_chunks * D
    carry = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_chunks, BLOCK_C):
        # chunks in the order of the recurrence: backwards in time when REVERSE
        offs_c = start + idx
        if REVERSE:
            offs_c = n_chunks - 1 - offs_c
        mask_c = (offs_c >= 0) & (offs_c < n_chunks)
        mask = mask_c[:, None] & mask_d[None, :]
        offs = base + offs_c.to(tl.int64)[:, None] * D + offs_d[None, :]
        decay = tl.load(decay_ptr + offs, mask=mask, other=1.0)
        end = tl.load(end_ptr + offs, mask=mask, other=0.0)
        decay, end = tl.associative_scan((decay, end), 0, first_order_combine)
        end = end + decay * carry[None, :]
        tl.store(end_ptr + offs, end, mask=mask)
        carry = row_of(end, idx, BLOCK_C - 1)


@triton.jit
def _scan_bwd_chunk_kernel(gx_ptr, x_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr,
                           gy_ptr, dskip_ptr, decay_ptr, start_ptr,
                           gu_ptr, gdelta_ptr, gB_ptr, gA_ptr, gbias_ptr, gdskip_ptr,
                           c_ptr, w_ptr, s_part_ptr, gc_part_ptr,
                           L, D, N, n_chunks, n_dblocks, H, W, w_step,
                           sg_b, sg_l, sg_d, sg_n, sx_b, sx_l, sx_d, sx_n,
                           su_b, su_l, su_d, sd_b, sd_l, sd_d, sB_b, sB_l, sB_n,
                           sy_b, sy_l, sy_d, sgu_b, sgu_l, sgu_d, sgd_b, sgd_l, sgd_d,
                           sc_b, sc_l,
                           HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                           HAS_SKIP: tl.constexpr, FUSION: tl.constexpr, EVEN: tl.constexpr,
                           SX_L: tl.constexpr, FINAL: tl.constexpr, BLOCK_L: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Adjoint scan over one chunk, walked backwards in time BLOCK_T steps at a
    time with the flow ``mu = a_t lam_t`` into the steps before carried in
    registers. Summary pass: the chunk's decay product and its flow at the chunk
    start from a zero carry. Final pass: the adjoints from the carries of
    ``_scan_carry_kernel`` and every gradient; with HAS_SKIP (fused op, N = 1)
    also ``g_u += Dskip g_y`` and partials of ``g_Dskip = sum_t g_y u``; with
    FUSION (and HAS_SKIP) also the state fusion's weight sums, per chunk, and
    g_C partials, per channel block (:class:`AdjointFusionSums`): the states
    (an H x W image, ``x_ptr``) at the 25 taps of each step's pixel, with
    ``g_h = g_y C`` (EVEN: no channel past D, those gathers unmasked). For
    N > 1 ``gu_ptr``/``gdelta_ptr`` hold one float32 slice per n (``pid_bn``
    rows of (batch*N, L, D))."""
    pid_c, pid_d, pid_bn, b, n, start, steps, idx, offs_d, mask_d, A, bias = \
        _chunk_program(A_ptr, bias_ptr, L, D, N, HAS_BIAS, BLOCK_L, BLOCK_T, BLOCK_D)
    A_log2 = A * LOG2E                  # a = exp(dt A) = exp2(dt A_log2)
    # the last tile ends at the chunk's last step; the first may reach before
    # the chunk's start (those steps masked)
    first = start + steps - BLOCK_T
    row = first.to(tl.int64)
    g_ptrs = (gx_ptr + b * sg_b + n * sg_n + row * sg_l + (idx * sg_l)[:, None]
              + offs_d[None, :] * sg_d)
    delta_ptrs = (delta_ptr + b * sd_b + row * sd_l + (idx * sd_l)[:, None]
                  + offs_d[None, :] * sd_d)
    summary = (pid_bn * n_chunks + pid_c).to(tl.int64) * D + offs_d
    decay = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
    if FINAL:
        mu = tl.load(start_ptr + summary + D, mask=mask_d & (pid_c + 1 < n_chunks),
                     other=0.0)
        x_ptrs = (x_ptr + b * sx_b + n * sx_n + (row - 1) * sx_l + (idx * sx_l)[:, None]
                  + offs_d[None, :] * sx_d)
        u_ptrs = (u_ptr + b * su_b + row * su_l + (idx * su_l)[:, None]
                  + offs_d[None, :] * su_d)
        B_ptrs = B_ptr + b * sB_b + n * sB_n + row * sB_l + idx * sB_l
        gy_ptrs = (gy_ptr + b * sy_b + row * sy_l + (idx * sy_l)[:, None]
                   + offs_d[None, :] * sy_d)
        rows = pid_bn.to(tl.int64)      # b, or b * N + n for the per-n slices
        gu_ptrs = (gu_ptr + rows * sgu_b + row * sgu_l + (idx * sgu_l)[:, None]
                   + offs_d[None, :] * sgu_d)
        gdelta_ptrs = (gdelta_ptr + rows * sgd_b + row * sgd_l + (idx * sgd_l)[:, None]
                       + offs_d[None, :] * sgd_d)
        gB_ptrs = gB_ptr + (pid_bn * n_dblocks + pid_d).to(tl.int64) * L + row + idx
        dskip = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_SKIP:
            dskip = tl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0)
        g_A = tl.zeros([BLOCK_D], dtype=tl.float32)
        g_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
        g_dskip = tl.zeros([BLOCK_D], dtype=tl.float32)
        # the state fusion's weight sums (FUSION)
        s0 = tl.zeros([BLOCK_D], dtype=tl.float32)
        s1, s2, s3, s4, s5, s6, s7, s8 = s0, s0, s0, s0, s0, s0, s0, s0
        s9, s10, s11, s12, s13, s14, s15, s16 = s0, s0, s0, s0, s0, s0, s0, s0
        s17, s18, s19, s20, s21, s22, s23, s24 = s0, s0, s0, s0, s0, s0, s0, s0
        if FUSION:
            x_image = x_ptr + b * sx_b + n * sx_n
            c_ptrs = c_ptr + b * sc_b + row * sc_l + idx * sc_l
            gc_ptrs = gc_part_ptr + (pid_bn * n_dblocks + pid_d).to(tl.int64) * L + row + idx
            w_ptr += pid_d * (NUM_TAPS * BLOCK_D) + tl.arange(0, BLOCK_D)
            step_row = first // W       # the last step's pixel
            step_col = first - step_row * W
    else:
        mu = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t in range(0, steps, BLOCK_T):
        pos = first - t + idx
        mask_t = pos >= start
        mask = mask_t[:, None] & mask_d[None, :]
        g = tl.load(g_ptrs, mask=mask, other=0.0).to(tl.float32)
        if FUSION:  # parameters re-read at each step: registers for the fusion's sums
            A = tl.load(A_ptr + offs_d * N + n + t * w_step, mask=mask_d, other=0.0)
            A_log2 = A * LOG2E
            if HAS_BIAS:
                bias = tl.load(bias_ptr + offs_d + t * w_step, mask=mask_d, other=0.0)
            dskip = tl.load(dskip_ptr + offs_d + t * w_step, mask=mask_d, other=0.0)
        z, dt = step_size(delta_ptrs, mask, bias, HAS_BIAS, SOFTPLUS)
        a = tl.where(mask, tl.exp2(dt * A_log2[None, :]), 1.0)
        # (lam - p mu, p, a) of the steps from each step to the tile's end;
        # masked steps (1 for a, 0 for g) only precede the valid ones
        p = tl.full(g.shape, 1.0, tl.float32)
        f = a
        if BLOCK_T > 1:     # (one step is its own composition; a reverse scan of one
                            # step still reverses the lanes, 40 shuffles a step)
            g, p, f = tl.associative_scan((g, p, f), 0, _adjoint_combine, reverse=True)
        lam = g + p * mu[None, :]
        # the flow into the steps before the tile: a lam of its first valid step
        mu = row_of(a * lam, idx, 0)
        if FINAL:
            # x_{t-1}: zero before the sequence's first step
            x_prev = tl.load(x_ptrs, mask=mask & (pos > 0)[:, None], other=0.0)
            u = tl.load(u_ptrs, mask=mask, other=0.0).to(tl.float32)
            Bt = tl.load(B_ptrs, mask=mask_t, other=0.0).to(tl.float32)
            g_decay = lam * x_prev * a                   # d/d(log decay)
            lam_dt = lam * dt
            g_dt = g_decay * A[None, :] + lam * Bt[:, None] * u
            g_u = lam_dt * Bt[:, None]
            g_A += tl.sum(g_decay * dt, axis=0)
            if HAS_SKIP:
                gy = tl.load(gy_ptrs, mask=mask, other=0.0).to(tl.float32)
                g_u += dskip[None, :] * gy
                g_dskip += tl.sum(gy * u, axis=0)
                gy_ptrs -= BLOCK_T * sy_l
            g_z = g_dt
            if SOFTPLUS:
                g_z = g_dt * sigmoid(z)
            g_bias += tl.sum(tl.where(mask, g_z, 0.0), axis=0)
            tl.store(gu_ptrs, g_u, mask=mask)
            tl.store(gdelta_ptrs, g_z, mask=mask)
            tl.store(gB_ptrs, tl.sum(lam_dt * u, axis=1), mask=mask_t)
            if FUSION:      # with HAS_SKIP, which loads g_y
                # g_h = g_y C; S_k += g_h x(clamp(p + off_k)), g_C = sum_d g_y h
                c = tl.load(c_ptrs, mask=mask_t, other=0.0).to(tl.float32)
                gh = gy * c[:, None]
                h = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
                w_here = w_ptr + t * w_step
                if BLOCK_T == 1:    # one pixel: its row and column carried (below)
                    pix_row = step_row
                    pix_col = step_col
                else:
                    pix_row = pos // W
                    pix_col = pos - pix_row * W
                (h, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15,
                 s16, s17, s18, s19, s20, s21, s22, s23, s24) = weight_sums_step(
                    h, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14,
                    s15, s16, s17, s18, s19, s20, s21, s22, s23, s24, gh, x_image, w_here,
                    pix_row, pix_col, H, W, sx_l, sx_d, offs_d, mask, True, EVEN,
                    BLOCK_T == 1, SX_L, BLOCK_D)
                # the step before, in raster order
                step_col -= 1
                step_row = tl.where(step_col < 0, step_row - 1, step_row)
                step_col = tl.where(step_col < 0, W - 1, step_col)
                tl.store(gc_ptrs, tl.sum(gy * h, axis=1), mask=mask_t)
                c_ptrs -= BLOCK_T * sc_l
                gc_ptrs -= BLOCK_T
            x_ptrs -= BLOCK_T * sx_l
            u_ptrs -= BLOCK_T * su_l
            B_ptrs -= BLOCK_T * sB_l
            gu_ptrs -= BLOCK_T * sgu_l
            gdelta_ptrs -= BLOCK_T * sgd_l
            gB_ptrs -= BLOCK_T
        else:
            decay *= row_of(p * f, idx, 0)
        g_ptrs -= BLOCK_T * sg_l
        delta_ptrs -= BLOCK_T * sd_l
    if FINAL:
        tl.store(gA_ptr + summary, g_A, mask=mask_d)
        tl.store(gbias_ptr + summary, g_bias, mask=mask_d)
        if HAS_SKIP:
            tl.store(gdskip_ptr + summary, g_dskip, mask=mask_d)
        if FUSION:
            store_weight_sums(s_part_ptr + (pid_bn * n_chunks + pid_c).to(tl.int64)
                              * (NUM_TAPS * D), s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10,
                              s11, s12, s13, s14, s15, s16, s17, s18, s19, s20, s21, s22, s23,
                              s24, D, offs_d, mask_d)
    else:
        tl.store(decay_ptr + summary, decay, mask=mask_d)
        tl.store(start_ptr + summary, mu, mask=mask_d)


# ----------------------------------------------------------------------- launchers

def _params(A, delta_bias, Dskip=None):
    """A (D, N), delta_bias (D,), Dskip (D,) as float32 contiguous (parameter-sized)."""
    def f32(t):
        return t.detach().float().contiguous() if t is not None else None
    return f32(A), f32(delta_bias), f32(Dskip)


def _grid(batch, channels, state_dim, length):
    block_l = block('scan_block_l', length)
    block_t = steps_per_iteration('scan_block_t', block_l, _scan_chunk_kernel)
    block_d = block('scan_block_d', channels)
    n_chunks = triton.cdiv(length, block_l)
    return block_l, block_t, block_d, n_chunks, (n_chunks, triton.cdiv(channels, block_d),
                                                 batch * state_dim)


class AdjointSummaries(NamedTuple):
    """The adjoint scan's chunk summaries when another launch forms them (the
    fused op's input gradient, from the g_x it computes; N = 1), with what
    that launch needs for them: ``delta`` the (batch, L, D) view, ``A``
    (D,) and ``bias`` (D,) or None float32, ``softplus``, ``block_l`` steps
    per chunk, and ``decay`` and ``flow`` (batch, chunks, D) float32 to write:
    per chunk the decay product and the flow into the steps before it from a
    zero flow after it (:func:`triton_launch.adjoint_chunk_summary`)."""
    delta: torch.Tensor
    A: torch.Tensor
    bias: torch.Tensor | None
    softplus: bool
    block_l: int
    decay: torch.Tensor
    flow: torch.Tensor

    @classmethod
    def allocate(cls, delta, A, delta_bias=None, delta_softplus=True):
        """Buffers for the summaries of the adjoint scan over ``delta`` ((batch, L, D)
        view; A (D, 1))."""
        batch, length, channels = delta.shape
        block_l, _, _, n_chunks, _ = _grid(batch, channels, 1, length)
        A, bias, _ = _params(A, delta_bias)
        decay, flow = (new_output((batch, n_chunks, channels), torch.float32, delta.device)
                       for _ in range(2))
        return cls(delta, A[:, 0].contiguous(), bias, bool(delta_softplus), block_l, decay,
                   flow)


class AdjointFusionSums(NamedTuple):
    """The state fusion's weight sums and g_C when the adjoint scan forms them
    (the fused op, N = 1): its final pass reads g_y and the states anyway, so
    the fusion's weights' launch only writes g_h. ``C`` the (batch, L) view,
    ``weights`` (NUM_TAPS, D) float32 folded
    (``state_fusion.triton_backend.fold_tap_weights``), ``height`` x ``width``
    the image of the states; ``sums`` (batch, chunks, NUM_TAPS, D) per chunk
    and ``g_C`` (batch, channel blocks, L) per channel block, float32, for the
    scan to write."""
    C: torch.Tensor
    weights: torch.Tensor
    height: int
    width: int
    sums: torch.Tensor
    g_C: torch.Tensor

    @classmethod
    def allocate(cls, C, weights, height, width, delta):
        """Buffers for the sums of the adjoint scan over ``delta`` ((batch, L, D)
        view) of an image of ``height`` x ``width``; C (batch, L) view."""
        batch, length, channels = delta.shape
        _, _, _, n_chunks, grid = _grid(batch, channels, 1, length)
        return cls(C, weights, height, width,
                   new_output((batch, n_chunks, NUM_TAPS, channels), torch.float32,
                              delta.device),
                   new_output((batch, grid[1], length), torch.float32, delta.device))

    def reduce(self):
        """(S (NUM_TAPS, D), g_C (batch, L)) float32 from the scan's partials."""
        return self.sums.sum((0, 1)), self.g_C.sum(1)


def _carry(decay, end, channels, reverse):
    """Launch the carry pass over the chunk summaries (batch*N, chunks, D)."""
    rows, n_chunks, _ = end.shape
    block_d = block('scan_carry_block_d', channels)
    launch(_scan_carry_kernel, (triton.cdiv(channels, block_d), rows),
           decay, end, channels, n_chunks, REVERSE=reverse,
           BLOCK_C=block('scan_block_c', n_chunks), BLOCK_D=block_d,
           reads=(decay, end), writes=(end,), num_warps=config['scan_carry_warps'])


def scan_forward(u, delta, A, B, delta_bias=None, delta_softplus=True):
    """States of the scan. u, delta (batch, L, D) views; B (batch, L, N) view.

    Returns (batch, L, D, N) float32 states, contiguous.
    """
    check_launchable('selective_scan_triton', _scan_chunk_kernel, u, delta, A, B)
    batch, length, channels = u.shape
    state_dim = A.shape[1]
    A, bias, _ = _params(A, delta_bias)
    states = new_output((batch, length, channels, state_dim), torch.float32, u.device)
    block_l, block_t, block_d, n_chunks, grid = _grid(batch, channels, state_dim, length)
    decay = torch.empty((batch * state_dim, n_chunks, channels), dtype=torch.float32,
                        device=u.device)
    end = torch.empty_like(decay)
    args = (u, delta, A, B, bias if bias is not None else A, decay, end, states,
            length, channels, state_dim, n_chunks, *strides(u), *strides(delta),
            *strides(B), *states.stride())
    meta = dict(HAS_BIAS=bias is not None, SOFTPLUS=bool(delta_softplus),
                BLOCK_L=block_l, BLOCK_T=block_t, BLOCK_D=block_d,
                num_warps=config['scan_fwd_warps'])
    launch(_scan_chunk_kernel, grid, *args, FINAL=False, reads=(u, delta, B),
           writes=(decay, end), **meta)
    _carry(decay, end, channels, False)
    launch(_scan_chunk_kernel, grid, *args, FINAL=True, reads=(u, delta, B, end),
           writes=(states,), **meta)
    return states


def scan_backward(g_states, states, u, delta, A, B, delta_bias=None,
                  delta_softplus=True, g_y=None, Dskip=None, g_u=None, g_delta=None,
                  summaries=None, fusion=None):
    """Gradients of the scan from the gradient of its states.

    Args:
        g_states, states (Tensor): (batch, L, D, N) views; states float32.
        u, delta (Tensor): (batch, L, D) views;  B (Tensor): (batch, L, N) view.
        g_y, Dskip: the fused op's ``Dskip * u`` term (N = 1): g_u += Dskip g_y.
        g_u, g_delta (Tensor, optional): (batch, L, D) views to write the
            gradients into (N = 1); by default new (batch, L, D) tensors.
        summaries (AdjointSummaries, optional): the chunk summaries, already
            formed from g_states (N = 1): the summary launch is skipped.
        fusion (AdjointFusionSums, optional): the fused op's state fusion
            sums to form in the final pass (with g_y; N = 1).

    Returns:
        (g_u, g_delta, g_A (D, N), g_B (batch, L, N), g_bias (D,), g_Dskip (D,)
        or None), float32 except g_u, g_delta (their buffers' dtypes).
    """
    check_launchable('selective_scan_triton', _scan_bwd_chunk_kernel,
                     g_states, states, u, delta, A, B)
    batch, length, channels = u.shape
    state_dim = A.shape[1]
    has_skip = g_y is not None
    if has_skip and state_dim != 1:
        raise NotImplementedError('scan_backward: the Dskip term is fused for N = 1 only')
    if fusion is not None and not has_skip:
        raise ValueError('scan_backward: the state fusion sums need g_y (the fused op)')
    A, bias, dskip = _params(A, delta_bias, Dskip)
    dev = u.device
    if state_dim == 1:      # written once each, in their final dtype and layout
        g_u = new_output(u.shape, u.dtype, dev) if g_u is None else g_u
        g_delta = new_output(delta.shape, delta.dtype, dev) if g_delta is None else g_delta
        gu_rows, gd_rows = g_u, g_delta
    else:                   # one float32 slice per n, summed below
        gu_rows = new_output((batch * state_dim, length, channels), torch.float32, dev)
        gd_rows = new_output((batch * state_dim, length, channels), torch.float32, dev)
    block_l, block_t, block_d, n_chunks, grid = _grid(batch, channels, state_dim, length)
    n_dblocks = grid[1]
    partial_shape = (batch, state_dim, n_chunks, channels)
    g_A = new_output(partial_shape, torch.float32, dev)
    g_bias = new_output(partial_shape, torch.float32, dev)
    g_dskip = new_output(partial_shape, torch.float32, dev) if has_skip else None
    g_B = new_output((batch, state_dim, n_dblocks, length), torch.float32, dev)
    if summaries is None:
        decay = torch.empty((batch * state_dim, n_chunks, channels), dtype=torch.float32,
                            device=dev)
        start = torch.empty_like(decay)
    else:
        decay, start = summaries.decay, summaries.flow
        if summaries.block_l != block_l or decay.shape != (batch * state_dim, n_chunks,
                                                           channels):
            raise ValueError(f'scan_backward: summaries of chunks of {summaries.block_l} '
                             f'steps, {tuple(decay.shape)}; the scan takes chunks of '
                             f'{block_l}, {(batch * state_dim, n_chunks, channels)}')
    g_y_arg = g_y if has_skip else u
    if fusion is not None:
        check_image_offsets('structure_aware_ssm_triton', fusion.C, states[..., 0])
        fusion_args = (fusion.C, per_block(fusion.weights, block_d), fusion.sums, fusion.g_C)
        image, c_strides = (fusion.height, fusion.width), fusion.C.stride()
    else:
        fusion_args, image, c_strides = (A,) * 4, (1, length), (0, 0)
    # the states' pixel stride, a constant of the fused op's kernel (its taps'
    # offsets; the states are its own, channels contiguous)
    sx_l = states.stride(1) if fusion is not None else 0
    if fusion is not None and states.stride(2) != 1:
        raise ValueError('scan_backward: the state fusion sums need states with '
                         'contiguous channels')
    args = (g_states, states, u, delta, A, B, bias if bias is not None else A,
            g_y_arg, dskip if has_skip else A, decay, start,
            gu_rows, gd_rows, g_B, g_A, g_bias, g_dskip if has_skip else g_A, *fusion_args,
            length, channels, state_dim, n_chunks, n_dblocks, *image, 0,
            *g_states.stride(), *states.stride(), *strides(u), *strides(delta),
            *strides(B), *strides(g_y_arg), *strides(gu_rows), *strides(gd_rows), *c_strides)
    meta = dict(HAS_BIAS=bias is not None, SOFTPLUS=bool(delta_softplus),
                HAS_SKIP=has_skip, FUSION=fusion is not None,
                EVEN=fusion is not None and channels % block_d == 0, SX_L=sx_l,
                BLOCK_L=block_l, BLOCK_T=block_t,
                BLOCK_D=block_d, num_warps=config['scan_bwd_warps'])
    if summaries is None:
        launch(_scan_bwd_chunk_kernel, grid, *args, FINAL=False,
               reads=(g_states, delta), writes=(decay, start), **meta)
    _carry(decay, start, channels, True)
    launch(_scan_bwd_chunk_kernel, grid, *args, FINAL=True,
           reads=(g_states, states, u, delta, B, start, g_y,
                  *((fusion.C,) if fusion is not None else ())),
           writes=(gu_rows, gd_rows, g_B, g_A, g_bias, g_dskip,
                   *((fusion.sums, fusion.g_C) if fusion is not None else ())), **meta)
    if state_dim > 1:
        g_u = gu_rows.view(batch, state_dim, length, channels).sum(1).to(u.dtype)
        g_delta = gd_rows.view(batch, state_dim, length, channels).sum(1).to(delta.dtype)
    return (g_u, g_delta, g_A.sum((0, 2)).t().contiguous(), g_B.sum(2).transpose(1, 2),
            g_bias.sum((0, 1, 2)), g_dskip.sum((0, 1, 2)) if has_skip else None)


# ------------------------------------------------------------ op and autograd glue

def _scan_fwd_fake(u, delta, A, B, delta_bias, delta_softplus):
    batch, channels, length = u.shape
    return u.new_empty((batch, length, channels, A.shape[1]),
                       dtype=torch.float32).permute(0, 2, 3, 1)


@custom_op('selective_scan_triton_fwd', _scan_fwd_fake)
def _scan_fwd_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """(batch, D, N, L) states, a view of (batch, L, D, N) memory."""
    states = scan_forward(sequence_view(u), sequence_view(delta), A, sequence_view(B),
                          delta_bias, delta_softplus)
    return states.permute(0, 2, 3, 1)


def _scan_bwd_fake(g_states, states, u, delta, A, B, delta_bias, delta_softplus):
    bias_like = delta_bias if delta_bias is not None else A.new_empty(A.shape[0])
    return (torch.empty_like(u), torch.empty_like(delta),
            torch.empty_like(A, memory_format=torch.contiguous_format),
            torch.empty_like(B, memory_format=torch.contiguous_format),
            torch.empty_like(bias_like, memory_format=torch.contiguous_format))


@custom_op('selective_scan_triton_bwd', _scan_bwd_fake)
def _scan_bwd_op(g_states: torch.Tensor, states: torch.Tensor, u: torch.Tensor,
                 delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: torch.Tensor | None, delta_softplus: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor]:
    """Gradients in the layouts of the inputs (u, delta) or contiguous (the rest)."""
    g_u, g_delta = torch.empty_like(u), torch.empty_like(delta)
    one_state = A.shape[1] == 1
    g_u_seq, g_delta_seq, g_A, g_B, g_bias, _ = scan_backward(
        g_states.permute(0, 3, 1, 2), states.permute(0, 3, 1, 2), sequence_view(u),
        sequence_view(delta), A, sequence_view(B), delta_bias, delta_softplus,
        g_u=sequence_view(g_u) if one_state else None,
        g_delta=sequence_view(g_delta) if one_state else None)
    if not one_state:
        sequence_view(g_u).copy_(g_u_seq)
        sequence_view(g_delta).copy_(g_delta_seq)
    bias_dtype = delta_bias.dtype if delta_bias is not None else A.dtype
    return (g_u, g_delta, g_A.to(A.dtype), g_B.transpose(1, 2).contiguous().to(B.dtype),
            g_bias.to(bias_dtype))


class SelectiveScanTritonFn(torch.autograd.Function):
    """Autograd of the Triton selective scan; saves the inputs and the states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, delta_bias, delta_softplus):
        states = eager_or_op(_scan_fwd_op)(u, delta, A, B, delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(states, u, delta, A, B, delta_bias)
        return states

    @staticmethod
    def backward(ctx, g_states):
        states, u, delta, A, B, delta_bias = ctx.saved_tensors
        g_u, g_delta, g_A, g_B, g_bias = eager_or_op(_scan_bwd_op)(
            g_states, states, u, delta, A, B, delta_bias, ctx.delta_softplus)
        return g_u, g_delta, g_A, g_B, (g_bias if delta_bias is not None else None), None


def selective_scan_triton(u, delta, A, B, delta_bias=None, delta_softplus=True):
    """Selective scan on Triton kernels; see ``reference.selective_scan_ref``.

    Args:
        u, delta (Tensor): (batch, D, L), float32 / bfloat16 / float16, any strides.
        A (Tensor): (D, N).  B (Tensor): (batch, N, L).
        delta_bias (Tensor, optional): (D,).  delta_softplus (bool).

    Returns:
        Tensor: (batch, D, N, L) float32 states (a view of (batch, L, D, N)
        memory), differentiable in every input.
    """
    check_scan_args('selective_scan_triton', u, delta, A, B, delta_bias)
    return SelectiveScanTritonFn.apply(u, delta, A, B, delta_bias, bool(delta_softplus))
