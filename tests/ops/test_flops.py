"""FLOP counting: the formulas, and mmengine's FlopAnalyzer seeing the operators."""
import pytest
import torch
import torch.nn as nn

from mmspatial.ops import selective_scan, state_fusion, structure_aware_ssm
from mmspatial.ops.flops import (FLOP_HANDLES, register_flop_handles, selective_scan_flops,
                                 state_fusion_flops, structure_aware_ssm_flops)

analysis = pytest.importorskip('mmengine.analysis', reason='FlopAnalyzer is mmengine\'s')


def test_formulas():
    assert selective_scan_flops(2, 3, 4, 5) == 7 * 2 * 3 * 4 * 5
    assert state_fusion_flops(2, 3, 4, 5) == 27 * 2 * 3 * 4 * 5
    assert structure_aware_ssm_flops(2, 3, 1, 4, 5) == 34 * 2 * 3 * 4 * 5
    assert structure_aware_ssm_flops(1, 3, 2, 4, 5) == 34 * 3 * 2 * 4 * 5


def test_spatial_mamba_t_count():
    """Scan + fusion of Spatial-Mamba-T at 224x224: d_inner = 128 * 2**i on
    56 / 2**i pixels square, blocks 2, 4, 8, 4 (about 2% of its 4.5 GFLOPs)."""
    total = sum(blocks * structure_aware_ssm_flops(1, 128 * 2 ** i, 1, 56 >> i, 56 >> i)
                for i, blocks in enumerate([2, 4, 8, 4]))
    assert total == 34 * 2609152


def test_handle_names_cover_both_backends():
    for name in ['SelectiveScan', 'StateFusion', 'StructureAwareSSM']:
        for backend in ['Torch', 'Triton']:
            assert f'prim::PythonOp.{name}{backend}Fn' in FLOP_HANDLES


class _Ops(nn.Module):
    """The three public ops on (batch, D, H, W) features, PyTorch backend."""

    def __init__(self, channels, state_dim):
        super().__init__()
        self.A = nn.Parameter(-torch.ones(channels, state_dim))
        self.Dskip = nn.Parameter(torch.ones(channels))
        self.kernels = nn.Parameter(torch.ones(3, channels, 3, 3))
        self.alpha = nn.Parameter(torch.ones(3))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, u):
        batch, channels, height, width = u.shape
        state_dim = self.A.shape[1]
        B = u[:, :state_dim]
        y = structure_aware_ssm(u, u, self.A, B, B, self.Dskip, self.kernels, self.alpha,
                                self.bias, backend='torch')
        states = selective_scan(u.flatten(2), u.flatten(2), self.A, B.flatten(2),
                                backend='torch')
        fused = state_fusion(u, self.kernels, self.alpha, backend='torch')
        return y, states, fused


@pytest.mark.parametrize('state_dim', [1, 2])
def test_flop_analyzer_counts_the_ops(state_dim):
    batch, channels, height, width = 2, 4, 5, 6
    model, inputs = _Ops(channels, state_dim), (torch.randn(batch, channels, height, width),)
    expected = {
        'PythonOp.StructureAwareSSMTorchFn':
            structure_aware_ssm_flops(batch, channels, state_dim, height, width),
        'PythonOp.SelectiveScanTorchFn':
            selective_scan_flops(batch, channels, state_dim, height * width),
        'PythonOp.StateFusionTorchFn': state_fusion_flops(batch, channels, height, width),
    }
    bare = analysis.FlopAnalyzer(model, inputs)
    assert bare.total() == 0
    assert {f'prim::{name}' for name in expected} <= set(bare.unsupported_ops())
    counted = register_flop_handles(analysis.FlopAnalyzer(model, inputs))
    assert dict(counted.by_operator()) == expected
    assert counted.total() == sum(expected.values())
