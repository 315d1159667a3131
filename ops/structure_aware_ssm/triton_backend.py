"""Triton structure-aware SSM step: scan, state fusion and readout, forward and backward.

    x = scan(u, delta, A, B)    (states along the row-major flattened H*W sequence)
    y = C * fusion(x) + Dskip * u

Shapes: u, delta (batch, D, H, W), any layout (the layer passes channels-last);
A (D, N); B, C (batch, N, H, W); Dskip (D,); kernels (3, D, 3, 3); alpha (3,);
delta_bias (D,); y (batch, D, H, W) float32, channels-last.

Design (N = 1, the released models). The fusion reads states up to 5 rows ahead
of the scan position, so the states are written once (float32, (batch, L, D))
and are also what the backward keeps. Forward launches, all on channels-last
memory, no transposing copy:

1. scan summary, carry pass, scan (``selective_scan``): reads u, delta twice,
   writes the states;
2. fusion + readout (``state_fusion._fusion_fwd_kernel``): reads the states
   (their +-5-row halo from cache), C, u; writes y.

Backward:

1. fusion transpose: g_h (``_fusion_bwd_weights_kernel`` without its sums:
   reads g_y and C, writes g_h = g_y C into a zero-padded float32 buffer), the
   border's terms (``_fusion_bwd_border_kernel``: reads g_h on the five-pixel
   ring, of the left and right sides only from 20 rows) and the input gradient
   (``_fusion_bwd_input_kernel``: reads g_h, the border's terms and delta,
   computes the top and bottom rows' terms from 20 rows, writes g_x =
   fusion^T(g_y C), float32, and the adjoint scan's chunk summaries of it);
2. carry pass, adjoint scan: reads g_x, the states, u, delta, g_y and C;
   writes g_u (with Dskip g_y), g_delta and the partials of g_B, g_A, g_bias,
   g_Dskip, and of the fusion's weight sums (per chunk) and g_C (per channel
   block) (``selective_scan.triton_backend.AdjointFusionSums``): it reads the
   states and g_y anyway, so the weights' sums cost no read of their own.

``tools/gpu_check.py`` prints the bytes per element of each launch
(``triton_launch.record_traffic``); ``tests/ops/test_op_contracts.py`` bounds them.
The out-norm LayerNorm and the ``silu(z)`` gate of the layer are not fused:
they would save the float32 y round trip (a write and a read of 4 bytes per
element) at the price of a LayerNorm backward inside the op and a second
output dtype; to revisit once a GPU shows where the time goes.

For N > 1 the op composes the unfused autograd functions with PyTorch for the
C-weighted sum over n.
"""
import torch

from .._library import custom_op, eager_or_op
from .._shape_checks import check_ssm_args
from ..selective_scan.triton_backend import (AdjointFusionSums, AdjointSummaries,
                                             SelectiveScanTritonFn, scan_backward,
                                             scan_forward)
from ..state_fusion.triton_backend import (StateFusionTritonFn, fold_tap_weights,
                                           fusion_backward, fusion_forward, kernel_grads)
from ..triton_launch import new_output, poison, sequence_view


# ---------------------------------------- launchers, each registered as a custom op
# (``torch.ops.mmspatial.structure_aware_ssm_triton_fwd`` / ``_bwd``); the plain
# functions stay callable for the dry runs of ``record_traffic`` on meta tensors,
# which a custom op would hand to its fake kernel.

def _ssm_fwd_fake(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias, delta_softplus):
    batch, channels, height, width = u.shape
    y = torch.empty(u.shape, dtype=torch.float32, device=u.device,
                    memory_format=torch.channels_last)
    return y, u.new_empty((batch, height * width, channels), dtype=torch.float32)


def ssm_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, Dskip: torch.Tensor, kernels: torch.Tensor,
                alpha: torch.Tensor, delta_bias: torch.Tensor | None,
                delta_softplus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (batch, D, H, W) float32 channels-last, states (batch, L, D) float32)."""
    height, width = u.shape[2:]
    u_seq = sequence_view(u)
    states = scan_forward(u_seq, sequence_view(delta), A, sequence_view(B), delta_bias,
                          delta_softplus)[..., 0]
    y = poison(torch.empty(u.shape, dtype=torch.float32, device=u.device,
                           memory_format=torch.channels_last))
    fusion_forward(states, fold_tap_weights(kernels, alpha), height, width,
                   sequence_view(y), C=sequence_view(C)[..., 0], u=u_seq, Dskip=Dskip)
    return y, states


_ssm_fwd_op = custom_op('structure_aware_ssm_triton_fwd', _ssm_fwd_fake)(ssm_forward)


def _ssm_bwd_fake(g_y, states, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                  delta_softplus):
    bias_like = delta_bias if delta_bias is not None else A.new_empty(A.shape[0])
    return (torch.empty_like(u), torch.empty_like(delta),
            *(torch.empty_like(t, memory_format=torch.contiguous_format)
              for t in (A, B, C, Dskip, kernels, alpha, bias_like)))


def ssm_backward(g_y: torch.Tensor, states: torch.Tensor, u: torch.Tensor,
                 delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 Dskip: torch.Tensor, kernels: torch.Tensor, alpha: torch.Tensor,
                 delta_bias: torch.Tensor | None, delta_softplus: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor]:
    """Gradients of (u, delta, A, B, C, Dskip, kernels, alpha, delta_bias); u and
    delta's in their layouts and dtypes, the rest contiguous in their dtypes."""
    batch, channels, height, width = u.shape
    g_y_seq = sequence_view(g_y)
    g_x = new_output(states.shape, torch.float32, u.device)
    delta_seq = sequence_view(delta)
    C_seq = sequence_view(C)[..., 0]
    weights = fold_tap_weights(kernels, alpha)
    summaries = AdjointSummaries.allocate(delta_seq, A, delta_bias, delta_softplus)
    fusion_sums = AdjointFusionSums.allocate(C_seq, weights, height, width, delta_seq)
    fusion_backward(g_y_seq, states, weights, height, width, g_x, C=C_seq, adjoint=summaries,
                    weight_sums=False)
    g_u, g_delta = poison(torch.empty_like(u)), poison(torch.empty_like(delta))
    _, _, g_A, g_B, g_bias, g_dskip = scan_backward(
        g_x[..., None], states[..., None], sequence_view(u), delta_seq, A,
        sequence_view(B), delta_bias, delta_softplus, g_y=g_y_seq, Dskip=Dskip,
        g_u=sequence_view(g_u), g_delta=sequence_view(g_delta), summaries=summaries,
        fusion=fusion_sums)
    S, g_C = fusion_sums.reduce()
    g_kernels, g_alpha = kernel_grads(S, kernels, alpha)
    bias_dtype = delta_bias.dtype if delta_bias is not None else A.dtype
    return (g_u, g_delta, g_A.to(A.dtype), g_B.reshape(B.shape).to(B.dtype),
            g_C.reshape(C.shape).to(C.dtype), g_dskip.to(Dskip.dtype),
            g_kernels.contiguous(), g_alpha, g_bias.to(bias_dtype))


_ssm_bwd_op = custom_op('structure_aware_ssm_triton_bwd', _ssm_bwd_fake)(ssm_backward)


class StructureAwareSSMTritonFn(torch.autograd.Function):
    """Autograd of the fused Triton SSM step, N = 1; saves the inputs and the states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                delta_softplus):
        y, states = eager_or_op(_ssm_fwd_op)(u, delta, A, B, C, Dskip, kernels, alpha,
                                             delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(states, u, delta, A, B, C, Dskip, kernels, alpha,
                              delta_bias)
        return y

    @staticmethod
    def backward(ctx, g_y):
        states, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias = ctx.saved_tensors
        grads = eager_or_op(_ssm_bwd_op)(g_y, states, u, delta, A, B, C, Dskip, kernels,
                                         alpha, delta_bias, ctx.delta_softplus)
        return (*grads[:8], grads[8] if delta_bias is not None else None, None)


def structure_aware_ssm_triton(u, delta, A, B, C, Dskip, kernels, alpha,
                               delta_bias=None, delta_softplus=True):
    """The SSM step on Triton kernels; see ``reference.structure_aware_ssm_ref``.

    Returns:
        Tensor: y (batch, D, H, W) float32, channels-last in memory,
        differentiable in every tensor input.
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
    y = (fused.float() * C.float()[:, None]).sum(dim=2)
    return y + Dskip.float()[None, :, None, None] * u.float()
