"""Structure-aware state fusion (SASF) as written: the specification.

    h = alpha[0] * dw3x3_dil1(x) + alpha[1] * dw3x3_dil3(x) + alpha[2] * dw3x3_dil5(x)

PyTorch conv2d (cross-correlation) semantics, one kernel per channel, replicate
borders (indices clamped to the image). Shapes: x (batch, D, H, W); kernels
(3, D, 3, 3), one per dilation of :data:`DILATIONS`; alpha (3,); output
(batch, D, H, W).
"""
import torch.nn.functional as F

from .._shape_checks import check_fusion_args

DILATIONS = (1, 3, 5)
"""The dilations of the three 3x3 stencils; every backend reads them here."""


def state_fusion_ref(x, kernels, alpha):
    """Sum of the three replicate-padded dilated depthwise convolutions.

    Computed in the promoted dtype of the inputs (float32 for float32 states).
    """
    check_fusion_args('state_fusion_ref', x, kernels, alpha)
    channels = x.shape[1]
    out = 0
    for i, dilation in enumerate(DILATIONS):
        padded = F.pad(x, (dilation,) * 4, mode='replicate')
        weight = kernels[i].unsqueeze(1).to(x.dtype)                   # (D, 1, 3, 3)
        out = out + alpha[i].to(x.dtype) * F.conv2d(
            padded, weight, dilation=dilation, groups=channels)
    return out
