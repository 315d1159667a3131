"""The backbone in float16 and bfloat16 (``model.half()``, ``model.bfloat16()``):
inference runs, every output stays in that dtype and close to float32's.

The structure-aware SSM computes in float32 whatever its inputs; its output is
cast back to the layer's dtype before the LayerNorm that follows.
"""
import pytest
import torch

from mmspatial.models import SpatialMamba

# A small Spatial-Mamba: every layer type, one block per stage.
ARCH = dict(dims=16, depths=[1, 1, 1, 1])
# Relative error ||half - fp32|| / ||fp32|| per output: float16 keeps 11 bits,
# bfloat16 8, and each layer rounds its output. Measured with three seeds: at
# most 8e-4 (float16) and 7e-3 (bfloat16); the limits leave 6x and 4x.
TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_backbone_inference_in_half_precision(dtype):
    torch.manual_seed(0)
    model = SpatialMamba(ARCH).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(images)
        outputs = model.to(dtype)(images.to(dtype))
    assert len(outputs) == len(expected) == 4
    for stage, (out, ref) in enumerate(zip(outputs, expected)):
        assert out.dtype == dtype, f'stage {stage}: {out.dtype}'
        assert out.shape == ref.shape
        assert torch.isfinite(out).all(), f'stage {stage}: non-finite'
        error = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
        assert error < TOLERANCE[dtype], f'stage {stage}: relative error {error:.1e}'
