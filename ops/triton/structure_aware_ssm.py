"""Triton structure-aware SSM step: scan, state fusion and readout, forward and backward.

    x = scan(u, delta, A, B)    (states along the row-major flattened H*W sequence)
    y = C * fusion(x) + Dskip * u

Shapes: u, delta (batch, D, H, W); A (D, N); B, C (batch, N, H, W); Dskip (D,);
kernels (3, D, 3, 3); alpha (3,); delta_bias (D,); y (batch, D, H, W) float32.

Design (N = 1, the released models). The fusion reads states up to 5 rows ahead
of the scan position, so one pass would have to hold an 11-row window of states per
(batch, channel) and gather from it at 25 offsets, which Triton cannot index in
registers; it would also have to store the states anyway, because training needs
them in the backward. So the forward is two kernels, and the states written by the
first are exactly the tensor saved for the backward:

1. scan (``selective_scan._scan_fwd_kernel``): reads u, delta; writes x (fp32);
2. fusion + readout (``state_fusion._fusion_fwd_kernel`` with C and Dskip): reads
   x (its +-5-row halo from cache), C, u; writes y.

Backward, two passes (plus a perimeter-sized kernel):

1. fusion backward (``_fusion_bwd_kernel`` + ``_fusion_bwd_ring_kernel``): reads
   g_y, C and x; g_h = g_y C; writes g_x = fusion^T(g_h) (fp32), per-tile sums
   for g_kernels / g_alpha, and per-channel-block partials of
   g_C = sum_d g_y fusion(x) (h is recomputed from the gathers of x that the weight
   sums need anyway, instead of being stored by the forward);
2. adjoint scan (``_scan_bwd_kernel`` with the skip term): reads g_x, x_{t-1}, u,
   delta, g_y; writes g_u (including Dskip g_y), g_delta, partials of g_B, g_A,
   g_bias, g_Dskip.

Memory traffic per element of (batch, D, H, W), s = bytes of the u/delta dtype
(2 for bf16/fp16, 4 for fp32); B and C are (batch, 1, H, W), shared by all
channels, and stay in cache:

    forward   (2s + 4) + (4 + s + 4)                      = 3s + 12   (18 B for bf16)
    backward  (4 + 4 + 4) + (4 + 4 + 2s + 4 + 2s)         = 4s + 24   (32 B for bf16)
              + 4/BLOCK_D twice for the g_C and g_B partials over channel blocks
    saved for backward: the fp32 states (4 B), besides the inputs.

For N > 1 the op composes the unfused autograd functions
(``SelectiveScanTritonFn``, ``StateFusionTritonFn``) with PyTorch for the
C-weighted sum over n.
"""
from typing import Optional, Tuple

import torch

from .._shape_checks import check_ssm_args
from ._common import custom_op
from .selective_scan import SelectiveScanTritonFn, scan_backward, scan_forward
from .state_fusion import StateFusionTritonFn, fold_tap_weights, fusion_backward, \
    fusion_forward, kernel_grads


def _ssm_forward(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias, delta_softplus):
    batch, channels, height, width = u.shape
    length = height * width
    u3 = u.reshape(batch, channels, length)
    states = scan_forward(u3, delta.reshape(batch, channels, length), A,
                          B.reshape(batch, 1, length), delta_bias, delta_softplus)
    y = fusion_forward(states.view(batch, channels, length),
                       fold_tap_weights(kernels, alpha), height, width,
                       C=C.reshape(batch, length), u=u3, Dskip=Dskip,
                       out_dtype=torch.float32)
    return y.view(batch, channels, height, width), \
        states.view(batch, channels, height, width)


def _ssm_backward(g_y, states, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                  delta_softplus):
    batch, channels, height, width = u.shape
    length = height * width
    g_y3 = g_y.reshape(batch, channels, length)
    states3 = states.reshape(batch, channels, length)
    g_x, S, g_C = fusion_backward(g_y3, states3, fold_tap_weights(kernels, alpha),
                                  height, width, C=C.reshape(batch, length))
    g_u, g_delta, g_A, g_B, g_bias, g_dskip = scan_backward(
        g_x.view(batch, channels, 1, length), states3.view(batch, channels, 1, length),
        u.reshape(batch, channels, length), delta.reshape(batch, channels, length), A,
        B.reshape(batch, 1, length), delta_bias, delta_softplus, g_y=g_y3, Dskip=Dskip)
    g_kernels, g_alpha = kernel_grads(S, kernels, alpha)
    bias_dtype = delta_bias.dtype if delta_bias is not None else A.dtype
    shape = (batch, channels, height, width)
    return (g_u.view(shape), g_delta.view(shape), g_A.to(A.dtype),
            g_B.view(B.shape).to(B.dtype), g_C.view(C.shape).to(C.dtype),
            g_dskip.to(Dskip.dtype), g_kernels, g_alpha, g_bias.to(bias_dtype))


# ---------------------------------------------------------------- torch.library ops

def _ssm_fwd_fake(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias, delta_softplus):
    y = u.new_empty(u.shape, dtype=torch.float32)
    return y, u.new_empty(u.shape, dtype=torch.float32)


@custom_op('structure_aware_ssm_fwd', _ssm_fwd_fake)
def _ssm_fwd_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, Dskip: torch.Tensor, kernels: torch.Tensor,
                alpha: torch.Tensor, delta_bias: Optional[torch.Tensor],
                delta_softplus: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    return _ssm_forward(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                        delta_softplus)


def _ssm_bwd_fake(g_y, states, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                  delta_softplus):
    bias_like = delta_bias if delta_bias is not None else A.new_empty(A.shape[0])
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in (u, delta, A, B, C, Dskip, kernels, alpha, bias_like))


@custom_op('structure_aware_ssm_bwd', _ssm_bwd_fake)
def _ssm_bwd_op(g_y: torch.Tensor, states: torch.Tensor, u: torch.Tensor,
                delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                Dskip: torch.Tensor, kernels: torch.Tensor, alpha: torch.Tensor,
                delta_bias: Optional[torch.Tensor], delta_softplus: bool
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                           torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                           torch.Tensor]:
    return _ssm_backward(g_y, states, u, delta, A, B, C, Dskip, kernels, alpha,
                         delta_bias, delta_softplus)


class StructureAwareSSMTritonFn(torch.autograd.Function):
    """Autograd of the fused Triton SSM step, N = 1 (forward/backward are custom ops)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                delta_softplus):
        y, states = _ssm_fwd_op(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                                delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.has_bias = delta_bias is not None
        ctx.save_for_backward(states, u, delta, A, B, C, Dskip, kernels, alpha,
                              delta_bias)
        return y

    @staticmethod
    def backward(ctx, g_y):
        states, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias = ctx.saved_tensors
        grads = _ssm_bwd_op(g_y, states, u, delta, A, B, C, Dskip, kernels, alpha,
                            delta_bias, ctx.delta_softplus)
        return (*grads[:8], grads[8] if ctx.has_bias else None, None)


def structure_aware_ssm_triton(u, delta, A, B, C, Dskip, kernels, alpha,
                               delta_bias=None, delta_softplus=True):
    """The SSM step on Triton kernels; see
    ``ops.structure_aware_ssm.structure_aware_ssm_ref``.

    Returns:
        Tensor: y (batch, D, H, W) float32, differentiable in every tensor input.
    """
    check_ssm_args('structure_aware_ssm_triton', u, delta, A, B, C, Dskip, kernels, alpha,
                   delta_bias)
    delta_softplus = bool(delta_softplus)
    if A.shape[1] == 1:
        return StructureAwareSSMTritonFn.apply(u, delta, A, B, C, Dskip, kernels, alpha,
                                               delta_bias, delta_softplus)
    # N > 1 (no released model uses it): compose the unfused kernels.
    batch, channels, height, width = u.shape
    state_dim = A.shape[1]
    states = SelectiveScanTritonFn.apply(
        u.flatten(2), delta.flatten(2), A, B.flatten(2), delta_bias, delta_softplus)
    fused = StateFusionTritonFn.apply(
        states.reshape(batch, channels * state_dim, height, width),
        kernels.repeat_interleave(state_dim, dim=1), alpha)
    fused = fused.view(batch, channels, state_dim, height, width)
    y = (fused * C.float()[:, None]).sum(dim=2)
    return y + Dskip.float()[None, :, None, None] * u.float()
