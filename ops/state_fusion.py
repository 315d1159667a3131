"""Structure-aware state fusion (SASF): three dilated depthwise 3x3 stencils.

    h = alpha[0] * dw3x3_dil1(x) + alpha[1] * dw3x3_dil3(x) + alpha[2] * dw3x3_dil5(x)

PyTorch conv2d (cross-correlation) semantics, one kernel per channel, replicate
borders (indices clamped to the image). Shapes: x (batch, D, H, W); kernels
(3, D, 3, 3), one per dilation; alpha (3,); output (batch, D, H, W).
"""
import torch
import torch.nn.functional as F

from ._backend import resolve_backend

DILATIONS = (1, 3, 5)


def _check_fusion_args(x, kernels, alpha):
    if x.dim() != 4:
        raise ValueError(f'state_fusion: x must be (batch, D, H, W), got {tuple(x.shape)}')
    expected = (len(DILATIONS), x.shape[1], 3, 3)
    if tuple(kernels.shape) != expected:
        raise ValueError(f'state_fusion: kernels must be {expected} for x of '
                         f'shape {tuple(x.shape)}, got {tuple(kernels.shape)}')
    if tuple(alpha.shape) != (len(DILATIONS),):
        raise ValueError(f'state_fusion: alpha must be ({len(DILATIONS)},), '
                         f'got {tuple(alpha.shape)}')


def state_fusion_ref(x, kernels, alpha):
    """Sum of the three replicate-padded dilated depthwise convolutions.

    Computed in the promoted dtype of the inputs (float32 for float32 states).
    """
    _check_fusion_args(x, kernels, alpha)
    channels = x.shape[1]
    out = 0
    for i, dilation in enumerate(DILATIONS):
        padded = F.pad(x, (dilation,) * 4, mode='replicate')
        weight = kernels[i].unsqueeze(1).to(x.dtype)                   # (D, 1, 3, 3)
        out = out + alpha[i].to(x.dtype) * F.conv2d(
            padded, weight, dilation=dilation, groups=channels)
    return out


def fold_fusion_kernel(kernels, alpha):
    """The three kernels and alphas as one (D, 11, 11) depthwise kernel.

    Exact, borders included: replicate padding clamps indices, so a folded
    11x11 stencil with replicate padding 5 gives the same sums.
    """
    folded = kernels.new_zeros(kernels.shape[1], 11, 11)
    for i, dilation in enumerate(DILATIONS):
        for ky in range(3):
            for kx in range(3):
                folded[:, 5 + (ky - 1) * dilation, 5 + (kx - 1) * dilation] += \
                    alpha[i] * kernels[i, :, ky, kx]
    return folded


def state_fusion(x, kernels, alpha, *, backend=None):
    """State fusion dispatched to the chosen backend; see :func:`state_fusion_ref`."""
    _check_fusion_args(x, kernels, alpha)
    backend = resolve_backend('state_fusion', backend, x.device)
    return state_fusion_ref(x, kernels, alpha)
