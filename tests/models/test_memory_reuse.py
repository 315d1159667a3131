"""The backbone's memory layout and buffer reuse: channels-last all the way
through, and in-place steps that give the values of the out-of-place ones."""
import pytest
import torch
import torch.nn.functional as F

from mmspatial.models import SpatialMamba
from mmspatial.models.layers.inplace import add_into, gelu_into, mul_into, silu_into

from .test_spatial_mamba import randomize_, small_backbone


def test_blocks_and_downsampling_get_dense_channels_last_tensors():
    """Every block, LayerNorm and downsampling reads a contiguous (batch, H, W, C)
    tensor: NCHW memory there means strided copies and slower depthwise kernels."""
    model = small_backbone().eval()
    seen = []

    def check(module, args):
        seen.append(type(module).__name__)
        assert args[0].is_contiguous(), f'{type(module).__name__} got strides {args[0].stride()}'

    for module in model.modules():
        if type(module).__name__ in ('SpatialMambaBlock', 'LayerNorm', 'Downsample'):
            module.register_forward_pre_hook(check)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 48))
    assert {'SpatialMambaBlock', 'LayerNorm', 'Downsample'} <= set(seen)
    assert all(out.is_contiguous() for out in outs)  # NCHW outputs, as before


def test_no_grad_forward_matches_the_recorded_one_bit_for_bit():
    """Without autograd the activations run in place; the values must not change."""
    torch.manual_seed(0)
    model = randomize_(small_backbone(drop_path_rate=0.0)).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        in_place = model(x)
    recorded = model(x)
    assert recorded[0].requires_grad
    for a, b in zip(in_place, recorded):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize('fn,ref', [
    (add_into, torch.add), (mul_into, torch.mul),
    (lambda a, b: silu_into(a), lambda a, b: F.silu(a)),
    (lambda a, b: gelu_into(a), lambda a, b: F.gelu(a)),
])
def test_inplace_helpers_match_out_of_place(fn, ref):
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 7, 3), torch.randn(2, 5, 7, 3)
    expected = ref(a, b)
    # under autograd: same values and gradients, and no error from a
    # tensor that backward needs being overwritten
    a_leaf, b_leaf = a.clone().requires_grad_(), b.clone().requires_grad_()
    out = fn(a_leaf * 1, b_leaf)
    assert torch.equal(out.detach(), expected)
    out.pow(2).sum().backward()
    a_ref, b_ref = a.clone().requires_grad_(), b.clone().requires_grad_()
    ref(a_ref, b_ref).pow(2).sum().backward()
    assert torch.equal(a_leaf.grad, a_ref.grad)
    # without autograd: written into the fresh tensor
    fresh = a.clone()
    with torch.no_grad():
        out = fn(fresh, b)
    assert torch.equal(out, expected)
    assert out.data_ptr() == fresh.data_ptr()


def test_inplace_helpers_keep_the_promoted_dtype():
    """A bfloat16 branch plus a float32 residual is float32, as ``x + branch``."""
    fresh, other = torch.randn(3, 4).bfloat16(), torch.randn(3, 4)
    assert add_into(fresh.clone(), other).dtype == torch.float32
    assert torch.equal(add_into(fresh.clone(), other), fresh + other)
    assert torch.equal(mul_into(fresh.clone(), other), fresh * other)


def test_stem_accepts_either_memory_format():
    torch.manual_seed(0)
    model = SpatialMamba(arch=dict(dims=8, depths=[1, 1, 1, 1])).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        channels_last = model(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(plain, channels_last):
        assert torch.equal(a, b)
