"""The ``'torch'`` backend of the selective scan: the chunked scan.

All chunks of the sequence advance in lockstep, then one carry per chunk: no
Python loop over L. Same arguments and values as
:func:`~.reference.selective_scan_ref`; the backward is hand-written (the
adjoint scan, same algorithm).

Layout: the states are computed as (batch, L, D, N) in memory (returned as a
(batch, D, N, L) view), so that every step of a chunk updates runs of D*N
contiguous channels. A channels-last network passes such inputs and takes such
outputs without any transpose; other inputs are transposed once, inside the
first elementwise op that reads them.

Units: log2. ``exp2`` is cheaper than ``exp`` in PyTorch's CPU kernels
(benchmarks/RESULTS.md); log2(e) folds into delta and its bias, ln(2) into B.
"""
import math

import torch

from .._library import (compute_dtype, custom_op, eager_or_op, no_autocast,
                        op_or_gradients)
from .._shape_checks import check_scan_args
from .._softplus import LN2, LOG2E, softplus_log2, softplus_log2_

CHUNK = None
"""Default ``chunk`` of :func:`selective_scan_torch`: ``None`` picks
:func:`default_chunk` of the sequence length."""


def default_chunk(length):
    """Steps per chunk for a sequence of ``length``: about sqrt(length), at least 8.

    The chunked scan issues two small PyTorch ops per step of a chunk and one
    per chunk (the carries), so about sqrt(length) balances them; against
    fixed lengths (``tools/analysis/benchmark_ops.py --chunks``):
    benchmarks/RESULTS.md.
    """
    return max(8, math.isqrt(max(length, 1)))


def resolve_chunk(chunk, length):
    """``chunk`` as an int (None: :func:`default_chunk` of ``length``); >= 2."""
    if chunk is None:
        return default_chunk(length)
    if chunk < 2:
        raise ValueError(f'selective_scan: chunk must be at least 2, got {chunk}')
    return int(chunk)


def _chunking(length, chunk):
    """(steps, chunks): steps per chunk and number of chunks covering ``length``.

    ``chunk``: target steps per chunk (None: :func:`default_chunk`). Prefers a
    divisor of ``length`` in [chunk / 3, chunk] (7 for 7x7 images, 56 for 56x56
    ones) so that no step is padded; otherwise ``chunk`` steps and a padded
    last chunk.
    """
    steps = min(default_chunk(length) if chunk is None else chunk, length)
    for candidate in range(steps, max(2, -(-steps // 3)) - 1, -1):
        if length % candidate == 0:
            return candidate, length // candidate
    return steps, -(-length // steps)


def _scan_in_chunks(local, decay_product, steps, reverse=False):
    """States of ``x_t = decay_t * x_{t-1} + drive_t`` along dim 1 of (M, L, K) data
    (``reverse``: backwards in time, ``x_t = decay_t * x_{t+1} + drive_t``).

    Args:
        local (Tensor): (M, Lp, K) drives, Lp >= L a multiple of ``steps``
            (drives 0 past L); the states on return (in place).
        decay_product (Tensor): (M, Lp, K) decays (past L: 1; any finite value
            when ``reverse``); overwritten.
        steps (int): steps per chunk.

    Three phases, two PyTorch ops per step and one per chunk, no allocation
    ("first" and "last" in the direction of time):

    1. all chunks advance together, one step at a time, each op over all
       chunks and channels: the local states (zero entering state), then the
       decay products of every chunk, in place of the decays;
    2. the chunks' last steps, one chunk after the other: the last state of a
       chunk is exact once the previous chunk's is
       (``last_c += product_c * last_{c-1}``);
    3. every other step at once: ``x = local + decay_product * last state of
       the previous chunk``.

    Exact like the sequential loop: the same products and sums, in the same
    order inside a chunk; nothing is divided, so no decay can overflow.
    """
    rows, padded_length, cols = local.shape
    chunks = padded_length // steps
    states = local
    local = local.view(rows, chunks, steps, cols)
    decay_product = decay_product.view(rows, chunks, steps, cols)
    ahead = -1 if reverse else 1                   # index step in the direction of time
    local_steps, product_steps = local.unbind(2), decay_product.unbind(2)  # views
    for t in range(steps)[::ahead][1:]:
        local_steps[t].addcmul_(product_steps[t], local_steps[t - ahead])
        product_steps[t].mul_(product_steps[t - ahead])
    last = 0 if reverse else steps - 1
    lasts, last_products = local[:, :, last].unbind(1), decay_product[:, :, last].unbind(1)
    for c in range(chunks)[::ahead][1:]:
        lasts[c].addcmul_(last_products[c], lasts[c - ahead])
    if chunks > 1:
        # the chunks that have a previous one, and those previous chunks; each
        # chunk's steps but its last
        later, earlier = ((slice(0, -1), slice(1, None)) if reverse
                          else (slice(1, None), slice(0, -1)))
        not_last = slice(1, None) if reverse else slice(0, -1)
        local[:, later, not_last].addcmul_(decay_product[:, later, not_last],
                                           local[:, earlier, last:last + 1])
    return states


def _padded_operands(shape, steps, dtype, device):
    """Drive and decay buffers for :func:`_scan_in_chunks`: (M, Lp, ...) each,
    Lp = L (``shape[1]``) rounded up to ``steps``, set past L (drives 0, decays
    1), empty elsewhere. Two allocations: the drives' becomes the states, which
    must not keep the decays' memory alive."""
    length = shape[1]
    padded_shape = (shape[0], -(-length // steps) * steps, *shape[2:])
    drive = torch.empty(padded_shape, dtype=dtype, device=device)
    decay = torch.empty(padded_shape, dtype=dtype, device=device)
    drive[:, length:] = 0
    decay[:, length:] = 1
    return drive, decay


def _linear_scan(decay, drive, chunk=CHUNK, reverse=False):
    """All states of ``x_t = decay_t * x_{t-1} + drive_t`` along dim 1, ``x_{-1} = 0``
    (``reverse``: ``x_t = decay_t * x_{t+1} + drive_t``, ``x_L = 0``).

    decay, drive: (M, L, K); returns (M, L, K) (a view of a padded buffer when
    no divisor of L is near the chunk length). ``chunk``: target steps per
    chunk, >= 2 (None: :func:`default_chunk`).
    """
    rows, length, cols = drive.shape
    steps, _ = _chunking(length, chunk)
    local, products = _padded_operands(drive.shape, steps, drive.dtype, drive.device)
    local[:, :length] = drive
    products[:, :length] = decay
    return _scan_in_chunks(local, products, steps, reverse)[:, :length]


def _scaled_delta(delta, delta_bias, dtype, out):
    """(delta + bias) * log2(e) as (batch, L, D), written into ``out``."""
    delta_t = delta.to(dtype).transpose(1, 2)
    if delta_bias is None:
        return torch.mul(delta_t, LOG2E, out=out)
    return torch.add(delta_bias.to(dtype) * LOG2E, delta_t, alpha=LOG2E, out=out)


def _new_states(u, A, dtype):
    """Empty (batch, D, N, L) states: a view of a (batch, L, D, N) tensor."""
    batch, channels, length = u.shape
    return u.new_empty((batch, length, channels, A.shape[1]),
                       dtype=dtype).permute(0, 2, 3, 1)


# Elements of (batch, positions, D) per block of the elementwise work before the
# scan, which bounds the scratch buffer of N > 1 to 4 MB in float32. Smaller,
# cache-sized blocks were slower (more Python-level op calls):
# benchmarks/RESULTS.md.
_BLOCK_ELEMENTS = 1 << 20


def _fill_scan_operands(u, delta, A, B, delta_bias, delta_softplus, drives, decays):
    """Drives and decays of the scan into ``drives`` and ``decays`` ((batch, Lp, D,
    N) each, Lp >= L; positions past L are left alone), block by block over the
    positions.

    Until a block's results are written, the block's part of the two buffers
    serves as scratch, so that N = 1 needs no other buffer (on CPU each fresh
    buffer costs page faults and cache misses on first touch).
    """
    dtype = drives.dtype
    batch, channels, length = u.shape
    state_dim = A.shape[1]
    block = max(1, _BLOCK_ELEMENTS // (batch * channels))
    B2 = (B.to(dtype) * LN2).transpose(1, 2)                        # (b, L, N)
    A2 = A.to(dtype)
    for start in range(0, length, block):
        stop = min(start + block, length)
        drive, decay = drives[:, start:stop], decays[:, start:stop]     # (b, n, D, N)
        # (b, n, D): (delta + bias) * log2(e), then its softplus, in the decays' part
        dt2 = decay[..., 0]
        _scaled_delta(delta[:, :, start:stop], delta_bias, dtype, out=dt2)
        if delta_softplus:
            softplus_log2_(dt2, scratch=drive[..., 0])
        u_t = u[:, :, start:stop].to(dtype).transpose(1, 2)
        if state_dim == 1:
            torch.mul(dt2, u_t, out=drive[..., 0]).mul_(B2[:, start:stop])
            decay.mul_(A2).exp2_()                        # in place of dt2
        else:
            dt2 = dt2.clone()
            torch.mul(torch.mul(dt2, u_t)[:, :, :, None], B2[:, start:stop, None, :],
                      out=drive)
            torch.mul(dt2[:, :, :, None], A2, out=decay).exp2_()


def _scan_fwd_fake(u, delta, A, B, delta_bias, delta_softplus, chunk):
    return _new_states(u, A, compute_dtype(u, delta, A, B, delta_bias))


def _scan_states(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: torch.Tensor | None, delta_softplus: bool,
                 chunk: int) -> torch.Tensor:
    """(batch, D, N, L) states of the chunked scan, a view of a contiguous
    (batch, L, D, N) tensor (as :func:`_new_states` makes); autocast off."""
    dtype = compute_dtype(u, delta, A, B, delta_bias)
    batch, channels, length = u.shape
    state_dim = A.shape[1]
    steps, _ = _chunking(length, chunk)
    drives, decays = _padded_operands((batch, length, channels, state_dim), steps, dtype,
                                      u.device)
    with no_autocast(u.device):
        _fill_scan_operands(u, delta, A, B, delta_bias, delta_softplus, drives, decays)
        padded, cols = drives.shape[1], channels * state_dim
        _scan_in_chunks(drives.view(batch, padded, cols),
                        decays.view(batch, padded, cols), steps)
    states = drives if padded == length else drives[:, :length].contiguous()
    return states.permute(0, 2, 3, 1)


_scan_fwd_op = custom_op('selective_scan_torch_fwd', _scan_fwd_fake)(_scan_states)


def _scan_grads(g_states, states, u, delta, A, B, delta_bias, delta_softplus, chunk):
    """Gradients of the scan from the gradient of its states (no autograd).

    Args:
        g_states (Tensor): (batch, D, N, L) gradient w.r.t. the states.
        states (Tensor): (batch, D, N, L) states from the forward.

    Returns:
        tuple: (g_u, g_delta, g_A, g_B, g_bias or None), (batch, D, L) ones as
        views of (batch, L, D) tensors, in the compute dtype.

    The adjoint state ``lam_t = d loss / d drive_t`` obeys the same recurrence
    backwards in time, ``lam_t = g_t + decay_{t+1} * lam_{t+1}``: the chunked
    scan runs in reverse on decays shifted one step back. Mostly in-place ops
    on a few (batch, L, D, N) buffers: on CPU every fresh buffer costs first-
    touch misses and page faults.
    """
    dtype = compute_dtype(u, delta, A, B, delta_bias)
    batch, channels, length = u.shape
    state_dim = A.shape[1]
    steps, _ = _chunking(length, chunk)
    A2, B_t = A.to(dtype), B.to(dtype).transpose(1, 2)              # B_t: (b, L, N)
    z2 = _scaled_delta(delta, delta_bias, dtype,
                       out=u.new_empty((batch, length, channels), dtype=dtype))
    dt2 = softplus_log2(z2) if delta_softplus else z2.clone()        # (b, L, D)
    g_states = g_states.to(dtype).permute(0, 3, 1, 2)                        # (b, L, D, N)
    states = states.to(dtype).permute(0, 3, 1, 2)
    lam, shifted_decay = _padded_operands((batch, length, channels, state_dim), steps,
                                          dtype, u.device)
    lam[:, :length] = g_states
    # shifted_decay_t = decay_{t+1}; zero at L - 1 (nothing flows back from past L)
    torch.mul(dt2[:, 1:, :, None], A2, out=shifted_decay[:, :length - 1]).exp2_()
    shifted_decay[:, length - 1] = 0
    # d loss / d (delta*A)_t = lam_t * decay_t * x_{t-1}: the last two factors
    # before the reverse scan turns the decays into products
    g_log_decay = torch.empty_like(states)
    g_log_decay[:, 0] = 0
    torch.mul(shifted_decay[:, :length - 1], states[:, :-1], out=g_log_decay[:, 1:])
    cols, padded = channels * state_dim, lam.shape[1]
    _scan_in_chunks(lam.view(batch, padded, cols), shifted_decay.view(batch, padded, cols),
                    steps, reverse=True)
    lam = lam[:, :length]
    g_log_decay.mul_(lam)
    u_t = u.to(dtype).transpose(1, 2)                                # (b, L, D)
    dt = dt2.mul_(LN2)                                              # natural units
    dt_u = torch.mul(dt, u_t)
    if state_dim == 1:                    # (b, L, D) views, no size-1 reductions
        lam, g_log_decay = lam[..., 0], g_log_decay[..., 0]
        g_B = torch.mul(lam, dt_u).sum(2, keepdim=True).transpose(1, 2)
        g_A = torch.mul(g_log_decay, dt, out=dt_u).sum((0, 1))[:, None]
        lam_b = lam.mul_(B_t)
        g_dt = g_log_decay.mul_(A2[:, 0]).addcmul_(lam_b, u_t)
    else:
        g_B = (lam * dt_u[:, :, :, None]).sum(2).transpose(1, 2)
        g_A = (g_log_decay * dt[:, :, :, None]).sum((0, 1))
        lam_b = (lam * B_t[:, :, None, :]).sum(3)                    # (b, L, D)
        g_dt = (g_log_decay * A2).sum(3).addcmul_(lam_b, u_t)
    g_u = lam_b.mul_(dt)
    if delta_softplus:
        g_dt.mul_(z2.mul_(LN2).sigmoid_())
    g_bias = g_dt.sum((0, 1)) if delta_bias is not None else None
    return (g_u.transpose(1, 2), g_dt.transpose(1, 2), g_A, g_B, g_bias)


def _grads_like(inputs):
    """Empty gradients shaped, typed and strided like ``inputs`` (None: empty (0,))."""
    return tuple(torch.empty_like(x) if x is not None else inputs[0].new_empty(0)
                 for x in inputs)


def _scan_bwd_fake(g_states, states, u, delta, A, B, delta_bias, delta_softplus, chunk):
    return _grads_like((u, delta, A, B, delta_bias))


@custom_op('selective_scan_torch_bwd', _scan_bwd_fake)
def _scan_bwd_op(g_states: torch.Tensor, states: torch.Tensor, u: torch.Tensor,
                 delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: torch.Tensor | None, delta_softplus: bool,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor]:
    """Gradients like the inputs (dtype, strides); g_bias empty when delta_bias is None."""
    with no_autocast(u.device):
        grads = _scan_grads(g_states, states, u, delta, A, B, delta_bias, delta_softplus,
                            chunk)
        outs = _grads_like((u, delta, A, B, delta_bias))
        for out, g in zip(outs, grads):
            if g is not None:
                out.copy_(g)
    return outs


class SelectiveScanTorchFn(torch.autograd.Function):
    """The chunked scan with its hand-written backward (the ``'torch'`` backend).

    Saves the inputs and the returned states, nothing else.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, delta_bias, delta_softplus, chunk):
        states = eager_or_op(_scan_fwd_op)(u, delta, A, B, delta_bias, delta_softplus,
                                           chunk)
        ctx.save_for_backward(u, delta, A, B, delta_bias, states)
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        return states

    @staticmethod
    def backward(ctx, g_states):
        u, delta, A, B, delta_bias, states = ctx.saved_tensors
        backward = op_or_gradients(_scan_bwd_op, _scan_grads, u.device)
        g_u, g_delta, g_A, g_B, g_bias = backward(
            g_states, states, u, delta, A, B, delta_bias, ctx.delta_softplus, ctx.chunk)
        g_bias = g_bias if delta_bias is not None else None
        return g_u, g_delta, g_A, g_B, g_bias, None, None


def selective_scan_torch(u, delta, A, B, delta_bias=None, delta_softplus=True, *,
                         chunk=CHUNK):
    """The scan of :func:`selective_scan_ref`, chunked: no Python loop over L.

    Same arguments and values (float32 states, float64 for float64 inputs), as a
    (batch, D, N, L) view of a (batch, L, D, N) tensor; ``chunk``: target steps
    per chunk (>= 2; None: :func:`default_chunk` of L). Differentiable, with a
    hand-written backward (the adjoint scan, same algorithm). Runs on any device
    (CPU: the ``'torch'`` backend).
    """
    check_scan_args('selective_scan_torch', u, delta, A, B, delta_bias)
    chunk = resolve_chunk(chunk, u.shape[-1])
    return SelectiveScanTorchFn.apply(u, delta, A, B, delta_bias, bool(delta_softplus),
                                      chunk)
