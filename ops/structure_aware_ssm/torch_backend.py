"""The ``'torch'`` backend of the structure-aware SSM: the chunked scan, the
channels-last fusion and the readout in one autograd Function.

Same arguments and values as :func:`~.reference.structure_aware_ssm_ref`; the
backward recomputes the states and runs the readout, fusion and scan adjoints.
"""
import torch

from .._library import (compute_dtype, custom_op, eager_or_op, no_autocast,
                        op_or_gradients)
from .._shape_checks import check_ssm_args
from ..selective_scan.torch_backend import (CHUNK, _grads_like, _scan_grads, _scan_states,
                                            resolve_chunk)
from ..state_fusion.torch_backend import fusion_backward, fusion_forward


def _per_state(kernels, state_dim):
    """(3, D, 3, 3) kernels -> (3, D*N, 3, 3): each channel's kernel for all its states."""
    return kernels.repeat_interleave(state_dim, dim=1) if state_dim > 1 else kernels


def _fused_states(u, delta, A, B, kernels, alpha, delta_bias, delta_softplus, chunk):
    """The states and the fused states, (batch, D*N, H, W) each, channels-last, in
    the compute dtype (no autograd): the scan produces (batch, L, D, N), which
    the fusion and the readout then use without a transpose."""
    batch, channels, height, width = u.shape
    state_dim = A.shape[1]
    states = _scan_states(u.flatten(2), delta.flatten(2), A, B.flatten(2), delta_bias,
                          delta_softplus, chunk)
    # (batch, D*N, H, W) view of the (batch, L, D, N) memory, built from that memory
    # so that size-1 dimensions get canonical strides: PyTorch's padding and
    # convolution only take their channels-last kernels for those
    states = states.permute(0, 3, 1, 2).reshape(batch, height, width, channels * state_dim)
    states = states.permute(0, 3, 1, 2)
    return states, fusion_forward(states, _per_state(kernels, state_dim), alpha)


def _readout_(fused, u, C, Dskip):
    """y = sum_n C[n] * fused[n] + Dskip * u, (batch, D, H, W) channels-last in the
    dtype of ``fused``; computed in place of ``fused`` when N = 1 (which it
    then overwrites)."""
    dtype = fused.dtype
    channels, state_dim = u.shape[1], C.shape[1]
    C = C.to(dtype)
    if state_dim == 1 and fused.is_contiguous(memory_format=torch.channels_last):
        out = fused.mul_(C)              # one fresh (batch, D, H, W) buffer fewer
    else:
        out = torch.empty(u.shape, dtype=dtype, device=u.device,
                          memory_format=torch.channels_last)
        if state_dim == 1:
            torch.mul(fused, C, out=out)
        else:
            torch.sum(fused.unflatten(1, (channels, state_dim)) * C[:, None], dim=2,
                      out=out)
    return out.addcmul_(u.to(dtype), Dskip.to(dtype)[:, None, None])


def _ssm_grads(g_y, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
               delta_softplus, chunk):
    """Gradients w.r.t. (u, delta, A, B, C, Dskip, kernels, alpha, delta_bias).

    Recomputes the states (the forward saves only its inputs), then runs the
    readout, fusion and scan adjoints in turn. ``delta_bias``'s entry is None
    when it is None.
    """
    batch, channels, height, width = u.shape
    state_dim = A.shape[1]
    states, fused = _fused_states(u, delta, A, B, kernels, alpha, delta_bias,
                                  delta_softplus, chunk)
    dtype = states.dtype
    g_y = g_y.to(dtype)
    C, Dskip, u_c = C.to(dtype), Dskip.to(dtype), u.to(dtype)
    fused = fused.unflatten(1, (channels, state_dim))
    g_C = (g_y[:, :, None] * fused).sum(1)
    g_Dskip = (g_y * u_c).sum((0, 2, 3))
    g_fused = (g_y[:, :, None] * C[:, None]).flatten(1, 2)
    g_states, g_kernels, g_alpha = fusion_backward(
        g_fused, states, _per_state(kernels, state_dim), alpha)
    g_kernels = g_kernels.unflatten(1, (channels, state_dim)).sum(2)
    g_u, g_delta, g_A, g_B, g_bias = _scan_grads(
        g_states.reshape(batch, channels, state_dim, height * width),
        states.reshape(batch, channels, state_dim, height * width),
        u.flatten(2), delta.flatten(2), A, B.flatten(2), delta_bias, delta_softplus,
        chunk)
    g_u = g_u.view(u.shape).addcmul_(g_y, Dskip[:, None, None])
    return (g_u, g_delta.view(u.shape), g_A, g_B.view(B.shape), g_C,
            g_Dskip, g_kernels, g_alpha, g_bias)


def _ssm_fwd_fake(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias, delta_softplus,
                  chunk):
    dtype = compute_dtype(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias)
    return torch.empty(u.shape, dtype=dtype, device=u.device,
                       memory_format=torch.channels_last)


@custom_op('structure_aware_ssm_torch_fwd', _ssm_fwd_fake)
def _ssm_fwd_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, Dskip: torch.Tensor, kernels: torch.Tensor,
                alpha: torch.Tensor, delta_bias: torch.Tensor | None,
                delta_softplus: bool, chunk: int) -> torch.Tensor:
    with no_autocast(u.device):
        _, fused = _fused_states(u, delta, A, B, kernels, alpha, delta_bias,
                                 delta_softplus, chunk)
        return _readout_(fused, u, C, Dskip)


def _ssm_bwd_fake(g_y, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias,
                  delta_softplus, chunk):
    return _grads_like((u, delta, A, B, C, Dskip, kernels, alpha, delta_bias))


@custom_op('structure_aware_ssm_torch_bwd', _ssm_bwd_fake)
def _ssm_bwd_op(g_y: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                B: torch.Tensor, C: torch.Tensor, Dskip: torch.Tensor,
                kernels: torch.Tensor, alpha: torch.Tensor,
                delta_bias: torch.Tensor | None, delta_softplus: bool,
                chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                     torch.Tensor, torch.Tensor, torch.Tensor,
                                     torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients like the inputs (dtype, strides); g_bias empty when delta_bias is None."""
    inputs = (u, delta, A, B, C, Dskip, kernels, alpha, delta_bias)
    with no_autocast(u.device):
        grads = _ssm_grads(g_y, *inputs, delta_softplus, chunk)
        outs = _grads_like(inputs)
        for out, g in zip(outs, grads):
            if g is not None:
                out.copy_(g)
    return outs


class StructureAwareSSMTorchFn(torch.autograd.Function):
    """Scan, fusion and readout in one op (the ``'torch'`` backend).

    Saves only its inputs: the backward recomputes the states (one more forward
    scan) instead of holding (batch, D, N, H, W) float32 states per layer.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias, delta_softplus,
                chunk):
        ctx.save_for_backward(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias)
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        return eager_or_op(_ssm_fwd_op)(u, delta, A, B, C, Dskip, kernels, alpha,
                                        delta_bias, delta_softplus, chunk)

    @staticmethod
    def backward(ctx, g_y):
        inputs = ctx.saved_tensors
        grads = op_or_gradients(_ssm_bwd_op, _ssm_grads, g_y.device)(
            g_y, *inputs, ctx.delta_softplus, ctx.chunk)
        g_bias = grads[8] if inputs[8] is not None else None
        return (*grads[:8], g_bias, None, None)


def structure_aware_ssm_torch(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias=None,
                              delta_softplus=True, *, chunk=CHUNK):
    """:func:`structure_aware_ssm_ref` with the chunked scan, differentiable.

    y (batch, D, H, W) float32 (float64 for float64 inputs), channels-last in
    memory (``y.permute(0, 2, 3, 1)`` is contiguous). ``chunk``: target steps per
    scan chunk (>= 2; None: about sqrt(H*W), see
    ``selective_scan.torch_backend.default_chunk``).
    """
    check_ssm_args('structure_aware_ssm_torch', u, delta, A, B, C, Dskip, kernels, alpha,
                   delta_bias)
    chunk = resolve_chunk(chunk, u.shape[2] * u.shape[3])
    return StructureAwareSSMTorchFn.apply(u, delta, A, B, C, Dskip, kernels, alpha,
                                          delta_bias, bool(delta_softplus), chunk)
