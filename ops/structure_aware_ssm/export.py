"""The structure-aware SSM in operators that ONNX holds (the ``'export'`` form).

:func:`structure_aware_ssm_export` has the signature and the result of
:func:`~.reference.structure_aware_ssm_ref`; the dispatcher runs it
while ``torch.onnx.export`` traces the model. The exported graph serves any
image size, and its size does not depend on the size it was traced at.

The scan ``x_t = d_t x_{t-1} + b_t`` (``d_t = exp(delta_t A)``) is the PyTorch
path's chunked scan (``selective_scan.torch_backend._scan_in_chunks``) written as two loops
that TorchScript compiles and the exporter turns into ONNX ``Loop`` nodes. The
sequence is cut into ``T = ceil(sqrt(L))`` chunks of T steps, T computed in
the graph from the input's shape:

1. a Loop over the T steps of a chunk, all chunks at once: the local states
   (zero entering state) and the products of the decays since the chunk's
   start, (M, chunks) per step;
2. a Loop over the chunks: the state entering each chunk,
   ``entering_c = last_{c-1} + product_{c-1} * entering_{c-1}``, (M,) per step;
3. every state at once: ``x = local + product * entering``.

O(L) work and memory in 2 sqrt(L) loop iterations, the same products and sums
as the sequential scan (nothing is divided, so decays whose products underflow
do no harm). Why loops rather than a chunked matrix form (within-chunk states
as a (T x T) matrix of ``exp(segment sums of log-decays)`` applied to the
drives): that form does T times the scan's work and holds a (T x T) matrix per
chunk and channel (at 800x1344, T = 64: 550 M exponentials per layer), and the
carry across a number of chunks that depends on the image still needs a loop
or a (chunks x chunks) matrix. Unrolled loops, the other way to avoid ``Loop``,
make the graph grow with the image and fix its shape.
"""
import warnings
from functools import lru_cache
from typing import List

import torch
import torch.nn.functional as F

from .._library import compute_dtype
from .._shape_checks import check_ssm_args
from ..state_fusion.reference import DILATIONS


def _scan_in_loops(log_decay: torch.Tensor, drive: torch.Tensor,
                   chunk: int) -> torch.Tensor:
    """TorchScript source of :func:`linear_scan_export` (``chunk`` 0: sqrt(L))."""
    rows, length = drive.shape[0], drive.shape[1]
    if chunk > 0:
        steps = min(chunk, length)
    else:  # ceil(sqrt(L)) as graph operators (Python's math would freeze L)
        steps = int(torch.full([1], length, dtype=torch.float32).sqrt().ceil()
                    .to(torch.int64)[0])
    chunks = (length + steps - 1) // steps
    padding = chunks * steps - length
    # steps past the end: decay exp(0) = 1, drive 0 (earlier states unchanged);
    # time-major layout, so that a step of loop 1 reads one contiguous slice
    decays = F.pad(log_decay, [0, padding]).exp().reshape(rows, chunks, steps)
    drives = F.pad(drive, [0, padding]).reshape(rows, chunks, steps)
    decays, drives = decays.permute(2, 0, 1), drives.permute(2, 0, 1)  # (T, M, C)
    local = torch.zeros_like(drives[0])
    product = torch.ones_like(decays[0])
    locals_ = torch.jit.annotate(List[torch.Tensor], [])
    products = torch.jit.annotate(List[torch.Tensor], [])
    for t in range(steps):
        local = decays[t] * local + drives[t]
        product = decays[t] * product
        locals_.append(local)
        products.append(product)
    local_states, decay_products = torch.stack(locals_), torch.stack(products)
    lasts = local_states[steps - 1].t()                                # (C, M)
    last_products = decay_products[steps - 1].t()
    entering = torch.zeros_like(lasts[0])
    enterings = torch.jit.annotate(List[torch.Tensor], [])
    for c in range(chunks):
        enterings.append(entering)
        entering = lasts[c] + last_products[c] * entering
    states = local_states + decay_products * torch.stack(enterings).t()[None]
    return states.permute(1, 2, 0).reshape(rows, chunks * steps)[:, :length]


@lru_cache(maxsize=None)
def _scripted_scan():
    """:func:`_scan_in_loops` compiled by TorchScript (once, on first use): its
    loops stay loops in the graph that ``torch.onnx.export`` traces."""
    with warnings.catch_warnings():
        # TorchScript is deprecated with the TorchScript-based exporter that uses it
        warnings.filterwarnings('ignore', category=FutureWarning,
                                message=r'`torch\.jit\.script` is deprecated')
        return torch.jit.script(_scan_in_loops)


def linear_scan_export(log_decay, drive, chunk=None):
    """All states of ``x_t = exp(a_t) x_{t-1} + b_t`` along dim 1, ``x_{-1} = 0``.

    Args:
        log_decay (Tensor): (M, L) log-decays ``a``.
        drive (Tensor): (M, L) drives ``b``.
        chunk (int | None): steps per chunk (None: ceil(sqrt(L)), computed in
            the graph from L).

    Returns:
        Tensor: (M, L) states.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f'linear_scan_export: chunk must be at least 1, got {chunk}')
    return _scripted_scan()(log_decay, drive, chunk or 0)


def state_fusion_export(x, kernels, alpha):
    """:func:`~..state_fusion.reference.state_fusion_ref` as one replicate (edge) Pad and
    three dilated depthwise Convs; x (batch, C, H, W), kernels (3, C, 3, 3)."""
    channels = x.shape[1]
    margin = DILATIONS[-1]
    padded = F.pad(x, (margin,) * 4, mode='replicate')
    out = 0
    for i, dilation in enumerate(DILATIONS):
        # replicate padding clamps indices: the wide pad holds every narrower one
        crop = slice(margin - dilation, dilation - margin or None)
        weight = (kernels[i] * alpha[i])[:, None]                    # (C, 1, 3, 3)
        out = out + F.conv2d(padded[:, :, crop, crop], weight, dilation=dilation,
                             groups=channels)
    return out


def structure_aware_ssm_export(u, delta, A, B, C, Dskip, kernels, alpha,
                               delta_bias=None, delta_softplus=True):
    """:func:`~.reference.structure_aware_ssm_ref` in exportable operators.

    Shapes: u, delta (batch, D, H, W); A (D, N); B, C (batch, N, H, W); Dskip
    (D,); kernels (3, D, 3, 3); alpha (3,); delta_bias (D,) or None. Returns y
    (batch, D, H, W) in float32 (float64 for float64 inputs). Meant for
    inference graphs (the PyTorch backend is faster in eager mode).
    """
    check_ssm_args('structure_aware_ssm_export', u, delta, A, B, C, Dskip, kernels,
                   alpha, delta_bias)
    dtype = compute_dtype(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias)
    channels, state_dim = A.shape
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None, None]
    if delta_softplus:
        delta = F.softplus(delta)
    log_decay = delta[:, :, None] * A[None, :, :, None, None]           # (b, D, N, H, W)
    drive = (delta * u)[:, :, None] * B[:, None]                        # (b, D, N, H, W)
    # sizes taken from the tensors inside the traced graph, never as constants
    states = linear_scan_export(log_decay.flatten(0, 2).flatten(1),
                                drive.flatten(0, 2).flatten(1))
    per_state = kernels.to(dtype)[:, :, None].expand(3, channels, state_dim, 3, 3)
    fused = state_fusion_export(
        states.view_as(drive).flatten(1, 2),
        per_state.reshape(3, channels * state_dim, 3, 3), alpha.to(dtype))
    y = (fused.unflatten(1, (channels, state_dim)) * C[:, None]).sum(2)
    return y + Dskip.to(dtype)[:, None, None] * u
