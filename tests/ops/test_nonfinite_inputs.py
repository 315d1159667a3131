"""NaN and Inf in the inputs: the operators propagate them, like any PyTorch
module, and every implementation yields the same pattern.

A NaN (or an Inf that meets an opposite Inf or a zero) in one element of a
channel reaches the later states of that channel's scan, and the fusion's
dilated stencils carry it to the neighbouring pixels; a ``-inf`` step size
is ``softplus = 0`` (the step neither decays nor takes input) and stays finite.
Checked here: the specification (``*_ref``), the PyTorch backend and the
Triton kernels (on CPU tensors under ``TRITON_INTERPRET=1``) give NaN, +Inf and
-Inf at the same elements, and the same values elsewhere; one known exception,
marked below: the Triton scan turns a NaN step size into a finite one. Shapes
span several scan chunks and kernel blocks.
"""
import pytest
import torch

from mmspatial.ops import (selective_scan, selective_scan_ref, structure_aware_ssm,
                           structure_aware_ssm_ref)

NAN, INF = float('nan'), float('inf')
BATCH, CHANNELS, HEIGHT, WIDTH, STATE_DIM = 2, 4, 12, 20, 1

# (input, value, (batch, channel-or-state, row, column)): early and late in the
# sequence, in the data and in the step size.
CASES = {
    'nan in u, early': ('u', NAN, (0, 1, 1, 2)),
    'nan in u, late': ('u', NAN, (1, 2, 10, 17)),
    '+inf in u': ('u', INF, (0, 0, 6, 9)),
    '-inf in u': ('u', -INF, (1, 3, 3, 15)),
    'nan in delta': ('delta', NAN, (0, 2, 7, 4)),
    '+inf in delta': ('delta', INF, (1, 1, 2, 11)),
    '-inf in delta': ('delta', -INF, (0, 3, 5, 5)),
    'nan in B': ('B', NAN, (1, 0, 8, 8)),
    'inf in C': ('C', INF, (0, 0, 4, 13)),
}


def inputs_with(name, value, index):
    """The fused op's inputs (u, delta (b, D, H, W); A (D, N); B, C (b, N, H, W);
    Dskip (D,); kernels (3, D, 3, 3); alpha (3,); delta_bias (D,)), one
    element of ``name`` set to ``value``."""
    gen = torch.Generator().manual_seed(0)
    tensors = dict(
        u=torch.randn(BATCH, CHANNELS, HEIGHT, WIDTH, generator=gen),
        delta=torch.randn(BATCH, CHANNELS, HEIGHT, WIDTH, generator=gen),
        A=-torch.rand(CHANNELS, STATE_DIM, generator=gen) - 0.1,
        B=torch.randn(BATCH, STATE_DIM, HEIGHT, WIDTH, generator=gen),
        C=torch.randn(BATCH, STATE_DIM, HEIGHT, WIDTH, generator=gen),
        Dskip=torch.randn(CHANNELS, generator=gen),
        kernels=torch.randn(3, CHANNELS, 3, 3, generator=gen) / 3,
        alpha=torch.rand(3, generator=gen),
        delta_bias=torch.randn(CHANNELS, generator=gen) - 2)
    tensors[name][index] = value
    return tensors


def assert_same_pattern(actual, expected, what):
    for name, test in (('NaN', torch.isnan), ('+Inf', torch.isposinf),
                       ('-Inf', torch.isneginf)):
        assert torch.equal(test(actual), test(expected)), f'{what}: {name} elsewhere'
    finite = torch.isfinite(expected)
    torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-4, atol=1e-5,
                               msg=lambda msg: f'{what}: {msg}')


def fused(tensors, **backend):
    return (structure_aware_ssm_ref if not backend else structure_aware_ssm)(
        tensors['u'], tensors['delta'], tensors['A'], tensors['B'], tensors['C'],
        tensors['Dskip'], tensors['kernels'], tensors['alpha'], tensors['delta_bias'],
        True, **backend)


def scan(tensors, **backend):
    def flat(x):
        return x.flatten(2)
    return (selective_scan_ref if not backend else selective_scan)(
        flat(tensors['u']), flat(tensors['delta']), tensors['A'], flat(tensors['B']),
        tensors['delta_bias'], True, **backend)


@pytest.mark.parametrize('case', CASES)
def test_torch_backend_propagates_like_the_reference(case):
    tensors = inputs_with(*CASES[case])
    expected = fused(tensors)
    if case != '-inf in delta':
        assert not torch.isfinite(expected).all(), 'the case should reach the output'
    assert_same_pattern(fused(tensors, backend='torch'), expected, f'fused op, {case}')
    if CASES[case][0] != 'C':  # the scan does not read C
        assert_same_pattern(scan(tensors, backend='torch'), scan(tensors), f'scan, {case}')


@pytest.mark.parametrize('case', list(CASES))
def test_triton_backend_propagates_like_the_torch_backend(case):
    pytest.importorskip('triton')
    if not torch.cuda.is_available():
        from mmspatial.ops.triton_launch import kernels_interpreted
        if not kernels_interpreted():
            pytest.skip('the Triton backends were imported with compiled kernels and '
                        'there is no CUDA (TRITON_INTERPRET=1 is set in '
                        'tests/conftest.py)')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    tensors = {k: v.to(device) for k, v in inputs_with(*CASES[case]).items()}
    expected = fused(tensors, backend='torch')
    assert_same_pattern(fused(tensors, backend='triton'), expected, f'fused op, {case}')
    if CASES[case][0] != 'C':
        assert_same_pattern(scan(tensors, backend='triton'), scan(tensors, backend='torch'),
                            f'scan, {case}')


def test_nan_stays_in_its_channel_and_image():
    """What the model does with a NaN pixel: that image's channel turns NaN from
    the NaN onwards (and around it), the other channels and images do not."""
    name, value, (b, d, row, col) = CASES['nan in u, late']
    y = fused(inputs_with(name, value, (b, d, row, col)), backend='torch')
    nan = torch.isnan(y)
    assert nan[b, d, row, col]
    assert nan.sum() == nan[b, d].sum()  # nowhere but in that image's channel
    assert not nan[b, d, 0, 0]           # the start of the scan stays finite
