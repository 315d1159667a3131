"""State fusion: the reference against independent computations, the PyTorch path
against the reference."""
import pytest
import torch
import torch.nn.functional as F

from mmspatial.ops.state_fusion import DILATIONS, state_fusion, state_fusion_ref
from mmspatial.ops.state_fusion.torch_backend import state_fusion_torch

from .conftest import DTYPES, assert_close

# (batch, C, H, W): square, non-square, H = 1, W = 1, smaller than the dilations
SHAPES = [(2, 3, 8, 8), (1, 4, 5, 9), (2, 2, 1, 7), (1, 3, 6, 1), (1, 1, 1, 1),
          (2, 5, 13, 11)]


def fusion_by_taps(x, kernels, alpha):
    """The 27 taps summed one by one, indices clamped to the image (float64)."""
    x, kernels, alpha = x.double(), kernels.double(), alpha.double()
    _, _, height, width = x.shape
    out = torch.zeros_like(x)
    for i, dilation in enumerate(DILATIONS):
        for ky in range(3):
            rows = (torch.arange(height) + (ky - 1) * dilation).clamp(0, height - 1)
            for kx in range(3):
                cols = (torch.arange(width) + (kx - 1) * dilation).clamp(0, width - 1)
                tap = x[:, :, rows][:, :, :, cols]
                out += alpha[i] * kernels[i, :, ky, kx][None, :, None, None] * tap
    return out


def folded_fusion_by_taps(x, folded):
    """One 11x11 stencil with clamped indices (float64)."""
    x, folded = x.double(), folded.double()
    _, _, height, width = x.shape
    out = torch.zeros_like(x)
    for ky in range(11):
        rows = (torch.arange(height) + ky - 5).clamp(0, height - 1)
        for kx in range(11):
            cols = (torch.arange(width) + kx - 5).clamp(0, width - 1)
            out += folded[:, ky, kx][None, :, None, None] * x[:, :, rows][:, :, :, cols]
    return out


def make_fusion_inputs(batch, channels, height, width, generator, dtype=torch.float32):
    x = torch.randn(batch, channels, height, width, generator=generator)
    kernels = torch.randn(3, channels, 3, 3, generator=generator)
    alpha = torch.randn(3, generator=generator)
    return x.to(dtype), kernels.to(dtype), alpha.to(dtype)


@pytest.mark.parametrize('shape', SHAPES)
def test_reference_matches_taps(shape, generator):
    x, kernels, alpha = make_fusion_inputs(*shape, generator)
    assert_close(state_fusion_ref(x, kernels, alpha).double(),
                 fusion_by_taps(x, kernels, alpha))


def fold_fusion_kernel(kernels, alpha):
    """The three kernels and alphas as one (D, 11, 11) depthwise kernel (SPEC 1.2:
    exact, borders included, because replicate padding clamps indices)."""
    folded = kernels.new_zeros(kernels.shape[1], 11, 11)
    for i, dilation in enumerate(DILATIONS):
        for ky in range(3):
            for kx in range(3):
                folded[:, 5 + (ky - 1) * dilation, 5 + (kx - 1) * dilation] += \
                    alpha[i] * kernels[i, :, ky, kx]
    return folded


@pytest.mark.parametrize('shape', SHAPES)
def test_folded_kernel(shape, generator):
    """25 distinct offsets in an 11x11 window, exact at the borders too."""
    x, kernels, alpha = make_fusion_inputs(*shape, generator)
    folded = fold_fusion_kernel(kernels, alpha)
    assert folded.shape == (shape[1], 11, 11)
    assert (folded != 0).sum(dim=(1, 2)).max() == 25
    expected = state_fusion_ref(x, kernels, alpha).double()
    assert_close(folded_fusion_by_taps(x, folded), expected)
    as_conv = F.conv2d(F.pad(x, (5,) * 4, mode='replicate'), folded[:, None],
                       groups=shape[1])
    assert_close(as_conv.double(), expected)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided'])
def test_torch_path_matches_reference(shape, dtype, layout, generator):
    x, kernels, alpha = make_fusion_inputs(*shape, generator, dtype)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == 'strided':
        x = torch.cat([x, x], dim=3)[..., ::2]
    out = state_fusion_torch(x, kernels, alpha)
    assert out.dtype == torch.float32
    expected = state_fusion_ref(x.float(), kernels.float(), alpha.float())
    assert_close(out, expected)
    assert out.permute(0, 2, 3, 1).is_contiguous()


@pytest.mark.parametrize('shape', [(1, 2, 4, 5), (2, 1, 1, 3), (1, 2, 7, 1)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_gradcheck(shape, channels_last, generator):
    x, kernels, alpha = (t.double() for t in make_fusion_inputs(*shape, generator))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = [t.requires_grad_() for t in (x, kernels, alpha)]
    assert torch.autograd.gradcheck(state_fusion_torch, inputs)
    assert torch.autograd.gradcheck(state_fusion_ref, inputs)


def test_gradients_match_reference(generator):
    inputs = [t.requires_grad_() for t in make_fusion_inputs(2, 3, 9, 7, generator)]
    grad_out = torch.randn(2, 3, 9, 7, generator=generator)
    expected = torch.autograd.grad(state_fusion_ref(*inputs), inputs, grad_out)
    got = torch.autograd.grad(state_fusion_torch(*inputs), inputs, grad_out)
    for g, e in zip(got, expected):
        assert_close(g, e, rtol=1e-5, atol_scale=1e-6)


def test_autocast_keeps_float32(generator):
    inputs = make_fusion_inputs(2, 3, 9, 7, generator)
    expected = state_fusion_torch(*inputs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = state_fusion_torch(*inputs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_dispatch_torch_backend(generator):
    inputs = make_fusion_inputs(2, 3, 9, 7, generator)
    torch.testing.assert_close(state_fusion(*inputs, backend='torch'),
                               state_fusion_torch(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize('fusion', [state_fusion_ref, state_fusion_torch])
def test_shape_errors(fusion, generator):
    x, kernels, alpha = make_fusion_inputs(1, 3, 4, 4, generator)
    with pytest.raises(ValueError, match='kernels must be'):
        fusion(x, kernels[:, :2], alpha)
    with pytest.raises(ValueError, match='alpha must be'):
        fusion(x, kernels, alpha[:2])
    with pytest.raises(ValueError, match='x must be'):
        fusion(x[0], kernels, alpha)
