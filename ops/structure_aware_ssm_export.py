"""The structure-aware SSM in operators that ONNX holds (the ``'export'`` form).

:func:`structure_aware_ssm_export` has the signature and the result of
:func:`~.structure_aware_ssm.structure_aware_ssm_ref`; the dispatcher runs it
while ``torch.onnx.export`` traces the model. It has no in-place update and no
data-dependent control flow, so the traced graph holds only Softplus, Exp,
Mul/Add, Split/Concat, Pad and Conv nodes (ONNX opset >= 13).

The scan ``x_t = d_t x_{t-1} + b_t`` (``d_t = exp(delta_t A)``) is the PyTorch
path's chunked scan (``selective_scan._scan_in_chunks``) in functional form:
the sequence is cut into about sqrt(L) chunks of about sqrt(L) steps;

1. all chunks advance together, one step at a time, from a zero state: the
   local states, and the products of the decays since the chunk's start;
2. the state entering each chunk, one chunk after the other:
   ``entering_c = last_{c-1} + product_{c-1} * entering_{c-1}``;
3. every state at once: ``x = local + product * entering``.

Both loops are unrolled when the graph is traced: about 2 sqrt(L) steps of a
few elementwise nodes over (batch * D * N, sqrt(L)) tensors, O(L) work and
memory. Nothing is divided, so decay products that underflow do no harm.
Shapes are therefore fixed in the graph: an exported model takes inputs of the
size it was exported at.
"""
import math

import torch
import torch.nn.functional as F

from ._library import compute_dtype
from ._shape_checks import check_ssm_args
from .state_fusion import DILATIONS


def export_chunk(length):
    """Steps per chunk for a sequence of ``length``: ceil(sqrt(length)), which
    makes the two unrolled loops equally long."""
    return max(1, math.isqrt(length - 1) + 1) if length > 1 else 1


def linear_scan_export(log_decay, drive, chunk=None):
    """All states of ``x_t = exp(a_t) x_{t-1} + b_t`` along dim 1, ``x_{-1} = 0``.

    Args:
        log_decay (Tensor): (M, L) log-decays ``a``.
        drive (Tensor): (M, L) drives ``b``.
        chunk (int | None): steps per chunk (None: :func:`export_chunk`).

    Returns:
        Tensor: (M, L) states.
    """
    rows, length = drive.shape
    if chunk is not None and chunk < 1:
        raise ValueError(f'linear_scan_export: chunk must be at least 1, got {chunk}')
    steps = min(chunk or export_chunk(length), length)
    chunks = (length + steps - 1) // steps  # (ONNX integer division truncates)
    padding = chunks * steps - length
    if padding:  # steps past the end: decay 1, drive 0 (earlier states unchanged)
        log_decay, drive = F.pad(log_decay, (0, padding)), F.pad(drive, (0, padding))
    decays = log_decay.exp().reshape(rows, chunks, steps).unbind(2)      # (M, C) each
    drives = drive.reshape(rows, chunks, steps).unbind(2)
    local, product = [drives[0]], [decays[0]]
    for t in range(1, steps):
        local.append(decays[t] * local[-1] + drives[t])
        product.append(decays[t] * product[-1])
    lasts, last_products = local[-1].unbind(1), product[-1].unbind(1)   # (M,) each
    entering = [torch.zeros_like(lasts[0])]
    for c in range(1, chunks):
        entering.append(lasts[c - 1] + last_products[c - 1] * entering[-1])
    states = (torch.stack(local, 2)
              + torch.stack(product, 2) * torch.stack(entering, 1)[..., None])
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
