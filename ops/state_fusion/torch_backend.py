"""The ``'torch'`` backend of the state fusion: the three replicate-padded
depthwise convolutions, channels-last, with a hand-written backward.

Same arguments and values as :func:`~.reference.state_fusion_ref`.
"""
import torch
import torch.nn.functional as F

from .._library import (compute_dtype, custom_op, eager_or_op, no_autocast,
                        op_or_gradients)
from .._shape_checks import check_fusion_args
from .reference import DILATIONS


def _channels_last(x):
    """x as a channels-last tensor with canonical strides (a view when it is one)."""
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    return nhwc.view(-1).view(nhwc.shape).permute(0, 3, 1, 2)


def fusion_forward(x, kernels, alpha):
    """The fusion in x's dtype, channels-last in memory (no autograd, no checks).

    x (batch, C, H, W); kernels (3, C, 3, 3); alpha (3,). Runs channels-last:
    PyTorch's replicate padding and depthwise convolution are several times
    faster on CPU in that layout. Each alpha is folded into its 3x3 kernel.
    """
    x = _channels_last(x)
    channels = x.shape[1]
    padded = _pad_once(x)
    weights = (kernels.to(x.dtype) * alpha.to(x.dtype)[:, None, None, None]).unsqueeze(2)
    out = None
    for weight, dilation in zip(weights, DILATIONS):
        term = F.conv2d(_cropped(padded, dilation), weight, dilation=dilation,
                        groups=channels)
        out = term if out is None else out.add_(term)
    return out


def _pad_once(x):
    """x replicate-padded by the largest dilation (one buffer for all three)."""
    return F.pad(x, (DILATIONS[-1],) * 4, mode='replicate')


def _cropped(padded, dilation):
    """The view of ``_pad_once(x)`` that is x replicate-padded by ``dilation``
    (replicate padding clamps indices, so a wider pad contains every narrower one)."""
    margin = DILATIONS[-1] - dilation
    return padded[:, :, margin:padded.shape[2] - margin, margin:padded.shape[3] - margin]


def fusion_backward(g_out, x, kernels, alpha):
    """Gradients of :func:`fusion_forward` w.r.t. x, kernels and alpha (no autograd).

    Per dilation d, with w = alpha * k: the input gradient is the zero-padded
    gradient correlated with the flipped kernel (the adjoint of the dilated
    correlation, over the padded image), folded back by the adjoint of the
    replicate padding (border rows and columns summed onto the edge pixels);
    the kernel gradient is one product-sum per tap; g_kernels = alpha * g_weight and
    g_alpha = <g_weight, k>. Several times faster on CPU than the convolution's own
    backward for depthwise kernels.
    """
    x, g_out = _channels_last(x), _channels_last(g_out.to(x.dtype))
    channels, height, width = x.shape[1:]
    padded_max = _pad_once(x)
    g_x, g_kernels, g_alpha = None, [], []
    for i, dilation in enumerate(DILATIONS):
        kernel = kernels[i].to(x.dtype)
        scale = alpha[i].to(x.dtype)
        weight = (kernel * scale).flip(-1, -2).unsqueeze(1)
        g_padded = F.conv2d(F.pad(g_out, (2 * dilation,) * 4), weight, dilation=dilation,
                            groups=channels)
        term = torch.ops.aten.replication_pad2d_backward(g_padded, x, [dilation] * 4)
        g_x = term if g_x is None else g_x.add_(term)
        padded = _cropped(padded_max, dilation)
        g_weight = torch.stack([
            (padded[:, :, row:row + height, col:col + width] * g_out).sum((0, 2, 3))
            for row in range(0, 3 * dilation, dilation)
            for col in range(0, 3 * dilation, dilation)], dim=1).view(channels, 3, 3)
        g_kernels.append(g_weight * scale)
        g_alpha.append((g_weight * kernel).sum())
    return g_x, torch.stack(g_kernels), torch.stack(g_alpha)


def _fusion_fwd_fake(x, kernels, alpha):
    return torch.empty(x.shape, dtype=compute_dtype(x, kernels, alpha), device=x.device,
                       memory_format=torch.channels_last)


@custom_op('state_fusion_torch_fwd', _fusion_fwd_fake)
def _fusion_fwd_op(x: torch.Tensor, kernels: torch.Tensor,
                   alpha: torch.Tensor) -> torch.Tensor:
    with no_autocast(x.device):
        dtype = compute_dtype(x, kernels, alpha)
        out = fusion_forward(x.to(dtype), kernels, alpha)
        return out.contiguous(memory_format=torch.channels_last)


def _fusion_bwd_fake(g_out, x, kernels, alpha):
    return torch.empty_like(x), torch.empty_like(kernels), torch.empty_like(alpha)


def _fusion_grads(g_out, x, kernels, alpha):
    """:func:`fusion_backward` in the compute dtype."""
    return fusion_backward(g_out, x.to(compute_dtype(x, kernels, alpha)), kernels, alpha)


@custom_op('state_fusion_torch_bwd', _fusion_bwd_fake)
def _fusion_bwd_op(g_out: torch.Tensor, x: torch.Tensor, kernels: torch.Tensor,
                   alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with no_autocast(x.device):
        grads = _fusion_grads(g_out, x, kernels, alpha)
        outs = (torch.empty_like(x), torch.empty_like(kernels), torch.empty_like(alpha))
        for out, g in zip(outs, grads):
            out.copy_(g)
    return outs


class StateFusionTorchFn(torch.autograd.Function):
    """The three replicate-padded depthwise convolutions (the ``'torch'`` backend).

    Saves only its inputs.
    """

    @staticmethod
    def forward(ctx, x, kernels, alpha):
        ctx.save_for_backward(x, kernels, alpha)
        return eager_or_op(_fusion_fwd_op)(x, kernels, alpha)

    @staticmethod
    def backward(ctx, g_out):
        return op_or_gradients(_fusion_bwd_op, _fusion_grads, g_out.device)(
            g_out, *ctx.saved_tensors)


def state_fusion_torch(x, kernels, alpha):
    """:func:`state_fusion_ref` in float32 (float64 for float64 inputs), differentiable.

    Also under autocast: the convolutions accumulate and return float32. The
    result is channels-last in memory, whatever the layout of x.
    """
    check_fusion_args('state_fusion_torch', x, kernels, alpha)
    return StateFusionTorchFn.apply(x, kernels, alpha)
