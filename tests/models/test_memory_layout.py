"""The backbone's memory layout: channels-last all the way through."""
import torch

from mmspatial.models import SpatialMamba

from .test_spatial_mamba import small_backbone


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


def test_stem_accepts_either_memory_format():
    torch.manual_seed(0)
    model = SpatialMamba(arch=dict(dims=8, depths=[1, 1, 1, 1])).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        channels_last = model(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(plain, channels_last):
        assert torch.equal(a, b)
