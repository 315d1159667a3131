"""The structure-aware SSM in operators that ONNX holds (the ``'export'`` form).

:func:`structure_aware_ssm_export` has the signature and the result of
:func:`~.structure_aware_ssm.structure_aware_ssm_ref`; the dispatcher runs it
while ``torch.onnx.export`` traces the model. It has no Python loop over the
sequence and no in-place update, so the traced graph holds only Softplus, Exp,
CumSum, Where, MatMul, Pad, Conv and elementwise nodes (ONNX opset >= 11).

The scan ``x_t = exp(a_t) x_{t-1} + b_t`` (``a_t = delta_t * A``) runs in
chunks of :data:`EXPORT_CHUNK` steps:

* inside a chunk, every state is a weighted sum of the chunk's drives,
  ``x_i = sum_{j <= i} exp(a_{j+1} + ... + a_i) b_j``: one (T, T) lower-
  triangular matrix per chunk and one matrix product. The exponents are sums of
  log-decays over a segment (<= 0 for a negative A), taken as cumulative sums
  of a masked copy rather than as differences of one cumulative sum, so that no
  decay product is divided by and no cancellation loses digits;
* the state that enters each chunk is the last state of the previous one: the
  chunks' last states obey the same recurrence, one step per chunk (the
  chunk's total log-decay, its last local state), which is solved by the same
  function on a sequence T times shorter, until one chunk is left.

Shapes are fixed when the graph is traced (the chunk layout depends on H*W):
an exported model takes inputs of the size it was exported at. Work and
memory are O(H*W*T) per channel and state; the recursion is log_T(H*W) deep.
"""
import torch
import torch.nn.functional as F

from ._library import compute_dtype
from ._shape_checks import check_ssm_args
from .state_fusion import DILATIONS

EXPORT_CHUNK = 16
"""Steps per chunk of the export form's scan: its (T, T) weight matrices cost
T times the states' memory, and the recursion is log_T(H*W) levels deep."""


def _segment_sums(log_decay):
    """(M, C, T) log-decays -> (M, C, T, T) exponents of the in-chunk weights:
    ``[i, j] = a_{j+1} + ... + a_i`` for i >= j (0 on the diagonal), -inf above
    it (weight 0)."""
    steps = log_decay.shape[-1]
    later = torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device).tril(-1)
    # [k, j] = a_k where k > j: its cumulative sum over k is the segment sum
    terms = log_decay[..., :, None].expand(*log_decay.shape, steps)
    sums = terms.masked_fill(~later, 0.0).cumsum(-2)
    causal = torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device).tril()
    return sums.masked_fill(~causal, float('-inf'))


def linear_scan_export(log_decay, drive, chunk=EXPORT_CHUNK):
    """All states of ``x_t = exp(a_t) x_{t-1} + b_t`` along dim 1, ``x_{-1} = 0``.

    Args:
        log_decay (Tensor): (M, L) log-decays ``a``.
        drive (Tensor): (M, L) drives ``b``.
        chunk (int): steps per chunk (>= 2).

    Returns:
        Tensor: (M, L) states.
    """
    if chunk < 2:
        raise ValueError(f'linear_scan_export: chunk must be at least 2, got {chunk}')
    rows, length = drive.shape
    steps = min(chunk, length)
    chunks = (length + steps - 1) // steps  # (ONNX integer division truncates)
    padding = chunks * steps - length
    if padding:  # steps past the end: decay 1, drive 0 (earlier states unchanged)
        log_decay, drive = F.pad(log_decay, (0, padding)), F.pad(drive, (0, padding))
    log_decay = log_decay.reshape(rows, chunks, steps)
    drive = drive.reshape(rows, chunks, steps)
    weights = _segment_sums(log_decay).exp()                       # (M, C, T, T)
    states = torch.matmul(weights, drive[..., None])[..., 0]       # zero entering state
    if chunks > 1:
        lasts = linear_scan_export(log_decay.sum(-1), states[..., -1], chunk)  # (M, C)
        entering = torch.cat([torch.zeros_like(lasts[:, :1]), lasts[:, :-1]], dim=1)
        states = states + log_decay.cumsum(-1).exp() * entering[..., None]
    states = states.reshape(rows, chunks * steps)
    return states[:, :length] if padding else states


def state_fusion_export(x, kernels, alpha):
    """:func:`~.state_fusion.state_fusion_ref` as one replicate (edge) Pad and
    three dilated depthwise Convs; x (batch, C, H, W), kernels (3, C, 3, 3)."""
    channels = x.shape[1]
    margin = DILATIONS[-1]
    padded = F.pad(x, (margin,) * 4, mode='replicate')
    height, width = padded.shape[2:]
    out = 0
    for i, dilation in enumerate(DILATIONS):
        # replicate padding clamps indices: the wide pad holds every narrower one
        crop = margin - dilation
        view = padded[:, :, crop:height - crop, crop:width - crop]
        weight = (kernels[i] * alpha[i])[:, None]                    # (C, 1, 3, 3)
        out = out + F.conv2d(view, weight, dilation=dilation, groups=channels)
    return out


def structure_aware_ssm_export(u, delta, A, B, C, Dskip, kernels, alpha,
                               delta_bias=None, delta_softplus=True):
    """:func:`~.structure_aware_ssm.structure_aware_ssm_ref` in exportable operators.

    Shapes: u, delta (batch, D, H, W); A (D, N); B, C (batch, N, H, W); Dskip
    (D,); kernels (3, D, 3, 3); alpha (3,); delta_bias (D,) or None. Returns y
    (batch, D, H, W) in float32 (float64 for float64 inputs). Differentiable,
    but meant for inference graphs: the PyTorch backend is faster in eager mode.
    """
    check_ssm_args('structure_aware_ssm_export', u, delta, A, B, C, Dskip, kernels,
                   alpha, delta_bias)
    dtype = compute_dtype(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias)
    batch, channels, height, width = u.shape
    state_dim = A.shape[1]
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None, None]
    if delta_softplus:
        delta = F.softplus(delta)
    log_decay = delta[:, :, None] * A[None, :, :, None, None]           # (b, D, N, H, W)
    drive = (delta * u)[:, :, None] * B[:, None]                        # (b, D, N, H, W)
    states = linear_scan_export(log_decay.reshape(-1, height * width),
                                drive.reshape(-1, height * width))
    per_state = kernels.to(dtype)[:, :, None].expand(3, channels, state_dim, 3, 3)
    fused = state_fusion_export(
        states.reshape(batch, channels * state_dim, height, width),
        per_state.reshape(3, channels * state_dim, 3, 3), alpha.to(dtype))
    y = (fused.reshape(batch, channels, state_dim, height, width) * C[:, None]).sum(2)
    return y + Dskip.to(dtype)[:, None, None] * u
