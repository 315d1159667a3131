"""Triton selective scan: chunked parallel scan forward, reversed adjoint scan backward.

    x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t,    x_{-1} = 0

Shapes: u, delta (batch, D, L); A (D, N); B (batch, N, L); states (batch, D, N, L) float32.

Kernel design. One program per (batch, block of BLOCK_D channels, state index n)
walks the sequence in chunks of BLOCK_L steps. Inside a chunk the affine maps
x -> a_t x + b_t are composed with ``tl.associative_scan`` (combine
(a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2)); the state carried in from the previous
chunk is then added as ``prefix_decay * carry``. All arithmetic is float32,
whatever the input dtype (u, delta, B are read in their own dtype).

The backward runs the adjoint recurrence in reverse,
``lam_t = g_t + exp(delta_{t+1} A) lam_{t+1}``, with the same scan over chunks
read back to front (a chunk is loaded with descending indices, so the ordinary
forward scan runs backwards in time). From lam and the saved state x_{t-1}:

    g_u = lam delta B,  g_B = sum_d lam delta u,  g_delta = lam (x_{t-1} A a_t + B u),
    g_A = sum_{b,t} lam x_{t-1} delta a_t,  then softplus' chain rule and g_bias.

Reductions over channels (g_B) are summed in registers over the program's
BLOCK_D channels and the per-block partials (batch, D/BLOCK_D, N, L) summed by
PyTorch; reductions over batch and time (g_A, g_bias) leave per-(batch, n)
partials. Nothing uses atomics: results are deterministic.

Memory traffic per element of (batch, D, L), N = 1, s = bytes of the input dtype:
forward reads u, delta (2s) and writes the float32 state (4): 2s + 4 bytes.
Backward reads g_states (4), x_{t-1} (4), u, delta (2s), writes g_u, g_delta (2s)
and 4/BLOCK_D of g_B partials: 8 + 4s (+ 4/BLOCK_D) bytes. B (batch, N, L) is
shared by all channels and stays in cache. The shifted reads (delta_{t+1},
x_{t-1}) hit the lines of the same chunk.

For N > 1 each n gets its own programs; their g_u, g_delta contributions go to
float32 buffers (batch, N, D, L) that PyTorch sums over n.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._shape_checks import check_scan_args
from ._common import (SCAN_BWD_WARPS, SCAN_FWD_WARPS, check_launchable, custom_op,
                      device_guard, first_order_combine, last_along_axis1, new_output,
                      scan_blocks, sigmoid, softplus)


@triton.jit
def _load_delta(delta_ptr, offsets, mask, bias, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr):
    """(z, dt): delta + bias before softplus, and the step size actually used."""
    z = tl.load(delta_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z = z + bias[:, None]
    dt = z
    if SOFTPLUS:
        dt = softplus(z)
    return z, dt


@triton.jit
def _scan_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, x_ptr,
                     D, N, L,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_d = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    idx = tl.arange(0, BLOCK_L)
    in_row = (pid_b * D + offs_d).to(tl.int64) * L                  # u, delta
    b_row = (pid_b * N + pid_n).to(tl.int64) * L                     # B
    x_row = ((pid_b * D + offs_d) * N + pid_n).to(tl.int64) * L      # states
    A = tl.load(A_ptr + offs_d * N + pid_n, mask=mask_d, other=0.0)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)
    carry = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, L, BLOCK_L):
        offs_l = start + idx
        mask_l = offs_l < L
        mask = mask_d[:, None] & mask_l[None, :]
        _, dt = _load_delta(delta_ptr, in_row[:, None] + offs_l[None, :], mask, bias,
                            HAS_BIAS, SOFTPLUS)
        u = tl.load(u_ptr + in_row[:, None] + offs_l[None, :], mask=mask,
                    other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b_row + offs_l, mask=mask_l, other=0.0).to(tl.float32)
        decay = tl.where(mask, tl.exp(dt * A[:, None]), 1.0)
        drive = tl.where(mask, dt * u * Bt[None, :], 0.0)
        decay, x = tl.associative_scan((decay, drive), 1, first_order_combine)
        x = x + decay * carry[:, None]
        tl.store(x_ptr + x_row[:, None] + offs_l[None, :], x, mask=mask)
        carry = last_along_axis1(x, idx, BLOCK_L)


@triton.jit
def _scan_bwd_kernel(gx_ptr, x_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr,
                     gy_ptr, dskip_ptr,
                     gu_ptr, gdelta_ptr, gB_ptr, gA_ptr, gbias_ptr, gdskip_ptr,
                     D, N, L, n_dblocks,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     HAS_SKIP: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """Adjoint scan. With HAS_SKIP (fused op, N = 1) also the ``Dskip * u`` term:
    g_u += Dskip g_y and per-batch partials of g_Dskip = sum_t g_y u."""
    pid_d = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    idx = tl.arange(0, BLOCK_L)
    in_row = (pid_b * D + offs_d).to(tl.int64) * L                  # u, delta, g_y
    b_row = (pid_b * N + pid_n).to(tl.int64) * L                     # B
    x_row = ((pid_b * D + offs_d) * N + pid_n).to(tl.int64) * L      # states, g_states
    g_row = ((pid_b * N + pid_n) * D + offs_d).to(tl.int64) * L      # g_u, g_delta
    gB_row = ((pid_b * n_dblocks + pid_d) * N + pid_n).to(tl.int64) * L
    A = tl.load(A_ptr + offs_d * N + pid_n, mask=mask_d, other=0.0)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)
    dskip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_SKIP:
        dskip = tl.load(dskip_ptr + offs_d, mask=mask_d, other=0.0)
    carry = tl.zeros([BLOCK_D], dtype=tl.float32)
    gA_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    gbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    gdskip_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for chunk in range(0, tl.cdiv(L, BLOCK_L)):
        offs_l = L - 1 - (chunk * BLOCK_L + idx)           # descending time
        mask_l = offs_l >= 0
        mask = mask_d[:, None] & mask_l[None, :]
        offs = in_row[:, None] + offs_l[None, :]
        xoffs = x_row[:, None] + offs_l[None, :]
        g = tl.load(gx_ptr + xoffs, mask=mask, other=0.0).to(tl.float32)
        z, dt = _load_delta(delta_ptr, offs, mask, bias, HAS_BIAS, SOFTPLUS)
        mask_next = mask & (offs_l + 1 < L)[None, :]
        _, dt_next = _load_delta(delta_ptr, offs + 1, mask_next, bias, HAS_BIAS, SOFTPLUS)
        decay_next = tl.where(mask_next, tl.exp(dt_next * A[:, None]), 0.0)
        decay_acc, lam = tl.associative_scan((decay_next, g), 1, first_order_combine)
        lam = lam + decay_acc * carry[:, None]
        carry = last_along_axis1(lam, idx, BLOCK_L)

        x_prev = tl.load(x_ptr + xoffs - 1, mask=mask & (offs_l >= 1)[None, :], other=0.0)
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b_row + offs_l, mask=mask_l, other=0.0).to(tl.float32)
        decay = tl.exp(dt * A[:, None])
        g_decay = lam * x_prev
        g_dt = g_decay * decay * A[:, None] + lam * Bt[None, :] * u
        gA_acc += tl.sum(tl.where(mask, g_decay * decay * dt, 0.0), axis=1)
        g_u = lam * dt * Bt[None, :]
        if HAS_SKIP:
            gy = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g_u += dskip[:, None] * gy
            gdskip_acc += tl.sum(gy * u, axis=1)
        g_z = g_dt
        if SOFTPLUS:
            g_z = g_dt * sigmoid(z)
        g_z = tl.where(mask, g_z, 0.0)
        gbias_acc += tl.sum(g_z, axis=1)
        tl.store(gu_ptr + g_row[:, None] + offs_l[None, :], g_u, mask=mask)
        tl.store(gdelta_ptr + g_row[:, None] + offs_l[None, :], g_z, mask=mask)
        g_B = tl.sum(tl.where(mask, lam * dt * u, 0.0), axis=0)
        tl.store(gB_ptr + gB_row + offs_l, g_B, mask=mask_l)
    part = (pid_b * N + pid_n) * D + offs_d
    tl.store(gA_ptr + part, gA_acc, mask=mask_d)
    tl.store(gbias_ptr + part, gbias_acc, mask=mask_d)
    if HAS_SKIP:
        tl.store(gdskip_ptr + pid_b * D + offs_d, gdskip_acc, mask=mask_d)


def _small(t):
    """Float32 contiguous copy of a parameter-sized tensor (A, bias, Dskip)."""
    return t.detach().float().contiguous()


def scan_forward(u, delta, A, B, delta_bias=None, delta_softplus=True):
    """Launch the forward scan. u, delta (batch, D, L); returns (batch, D, N, L) fp32."""
    device = check_launchable('selective_scan_triton', _scan_fwd_kernel, u, delta, A, B)
    batch, channels, length = u.shape
    state_dim = A.shape[1]
    u, delta, B = u.contiguous(), delta.contiguous(), B.contiguous()
    A = _small(A)
    bias = _small(delta_bias) if delta_bias is not None else A
    states = new_output((batch, channels, state_dim, length), torch.float32, u.device)
    if states.numel() == 0:
        return states.zero_()
    block_d, block_l = scan_blocks(batch, channels, state_dim, length, device)
    grid = (triton.cdiv(channels, block_d), state_dim, batch)
    with device_guard(device):
        _scan_fwd_kernel[grid](
            u, delta, A, B, bias, states, channels, state_dim, length,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
            BLOCK_D=block_d, BLOCK_L=block_l, num_warps=SCAN_FWD_WARPS)
    return states


def scan_backward(g_states, states, u, delta, A, B, delta_bias=None,
                  delta_softplus=True, g_y=None, Dskip=None):
    """Launch the adjoint scan; returns float32/own-dtype gradients.

    Returns (g_u, g_delta, g_A, g_B, g_bias, g_Dskip): g_u, g_delta in the dtypes
    of u, delta and shapes (batch, D, L); g_A (D, N), g_bias (D,), g_Dskip (D,)
    float32 (g_Dskip is None unless ``g_y``/``Dskip`` are given); g_B (batch, N, L)
    float32. ``g_y``, ``Dskip`` (fused op, N = 1): add the ``Dskip * u`` term.
    """
    device = check_launchable('selective_scan_triton', _scan_bwd_kernel,
                              g_states, states, u, delta, A, B)
    batch, channels, length = u.shape
    state_dim = A.shape[1]
    has_skip = g_y is not None
    if has_skip and state_dim != 1:
        raise NotImplementedError('scan_backward: the Dskip term is fused for N = 1 only')
    g_states = g_states.float().contiguous()
    states = states.contiguous()
    u, delta, B = u.contiguous(), delta.contiguous(), B.contiguous()
    A = _small(A)
    bias = _small(delta_bias) if delta_bias is not None else A
    block_d, block_l = scan_blocks(batch, channels, state_dim, length, device)
    n_dblocks = triton.cdiv(channels, block_d)
    dev = u.device
    if state_dim == 1:      # written once each: store in the inputs' dtypes
        g_u = new_output((batch, 1, channels, length), u.dtype, dev)
        g_delta = new_output((batch, 1, channels, length), delta.dtype, dev)
    else:                   # one slice per n, summed below
        g_u = new_output((batch, state_dim, channels, length), torch.float32, dev)
        g_delta = new_output((batch, state_dim, channels, length), torch.float32, dev)
    g_B = new_output((batch, n_dblocks, state_dim, length), torch.float32, dev)
    g_A = new_output((batch, state_dim, channels), torch.float32, dev)
    g_bias = new_output((batch, state_dim, channels), torch.float32, dev)
    g_dskip = new_output((batch, channels), torch.float32, dev) if has_skip else None
    if u.numel() > 0:
        if has_skip:
            gy_arg, dskip_arg = g_y.contiguous(), _small(Dskip)
        else:
            gy_arg = dskip_arg = A
        grid = (n_dblocks, state_dim, batch)
        with device_guard(device):
            _scan_bwd_kernel[grid](
                g_states, states, u, delta, A, B, bias, gy_arg, dskip_arg,
                g_u, g_delta, g_B, g_A, g_bias, g_dskip if has_skip else g_A,
                channels, state_dim, length, n_dblocks,
                HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
                HAS_SKIP=has_skip, BLOCK_D=block_d, BLOCK_L=block_l,
                num_warps=SCAN_BWD_WARPS)
    else:
        for t in (g_u, g_delta, g_B, g_A, g_bias, g_dskip):
            if t is not None:
                t.zero_()
    if state_dim == 1:
        g_u = g_u.view(batch, channels, length)
        g_delta = g_delta.view(batch, channels, length)
    else:
        g_u, g_delta = g_u.sum(1).to(u.dtype), g_delta.sum(1).to(delta.dtype)
    g_B = g_B.sum(1)
    g_A = g_A.sum(0).t()
    g_bias = g_bias.sum((0, 1))
    g_dskip = g_dskip.sum(0) if has_skip else None
    return g_u, g_delta, g_A, g_B, g_bias, g_dskip


# ---------------------------------------------------------------- torch.library ops

def _scan_fwd_fake(u, delta, A, B, delta_bias, delta_softplus):
    return u.new_empty((u.shape[0], u.shape[1], A.shape[1], u.shape[2]),
                       dtype=torch.float32)


@custom_op('selective_scan_fwd', _scan_fwd_fake)
def _scan_fwd_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: Optional[torch.Tensor],
                 delta_softplus: bool) -> torch.Tensor:
    return scan_forward(u, delta, A, B, delta_bias, delta_softplus)


def _scan_bwd_fake(g_states, states, u, delta, A, B, delta_bias, delta_softplus):
    bias_like = delta_bias if delta_bias is not None else A.new_empty(A.shape[0])
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            torch.empty_like(delta, memory_format=torch.contiguous_format),
            torch.empty_like(A, memory_format=torch.contiguous_format),
            torch.empty_like(B, memory_format=torch.contiguous_format),
            torch.empty_like(bias_like, memory_format=torch.contiguous_format))


@custom_op('selective_scan_bwd', _scan_bwd_fake)
def _scan_bwd_op(g_states: torch.Tensor, states: torch.Tensor, u: torch.Tensor,
                 delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: Optional[torch.Tensor], delta_softplus: bool
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor]:
    g_u, g_delta, g_A, g_B, g_bias, _ = scan_backward(
        g_states, states, u, delta, A, B, delta_bias, delta_softplus)
    bias_dtype = delta_bias.dtype if delta_bias is not None else A.dtype
    return (g_u, g_delta, g_A.to(A.dtype), g_B.to(B.dtype), g_bias.to(bias_dtype))


class SelectiveScanTritonFn(torch.autograd.Function):
    """Autograd of the Triton selective scan (forward and backward are custom ops)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, delta_bias, delta_softplus):
        states = _scan_fwd_op(u, delta, A, B, delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.has_bias = delta_bias is not None
        ctx.save_for_backward(states, u, delta, A, B, delta_bias)
        return states

    @staticmethod
    def backward(ctx, g_states):
        states, u, delta, A, B, delta_bias = ctx.saved_tensors
        g_u, g_delta, g_A, g_B, g_bias = _scan_bwd_op(
            g_states, states, u, delta, A, B, delta_bias, ctx.delta_softplus)
        return g_u, g_delta, g_A, g_B, (g_bias if ctx.has_bias else None), None


def selective_scan_triton(u, delta, A, B, delta_bias=None, delta_softplus=True):
    """Selective scan on Triton kernels; see ``ops.selective_scan.selective_scan_ref``.

    Args:
        u, delta (Tensor): (batch, D, L), float32 / bfloat16 / float16.
        A (Tensor): (D, N).  B (Tensor): (batch, N, L).
        delta_bias (Tensor, optional): (D,).  delta_softplus (bool).

    Returns:
        Tensor: (batch, D, N, L) float32 states, differentiable in every input.
    """
    check_scan_args('selective_scan_triton', u, delta, A, B, delta_bias)
    return SelectiveScanTritonFn.apply(u, delta, A, B, delta_bias, bool(delta_softplus))
