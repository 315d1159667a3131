"""The chunked PyTorch scan against the sequential reference, values and gradients."""
import importlib

import pytest
import torch

from mmspatial.ops._softplus import softplus_log2
from mmspatial.ops.selective_scan import selective_scan, selective_scan_ref
from mmspatial.ops.selective_scan.torch_backend import (_chunking, _linear_scan,
                                                        selective_scan_torch)

from .conftest import DTYPES, GRAD_TOLERANCES, assert_close, make_scan_inputs

# the module (the package's ``selective_scan`` attribute is the function)
scan_module = importlib.import_module('mmspatial.ops.selective_scan.torch_backend')
softplus_module = importlib.import_module('mmspatial.ops._softplus')

# (batch, D, L, N, chunk): L = 1, L below / equal to / not a multiple of the
# chunk, D = 1, N > 1, several carry levels (L / chunk**2 > 1)
SHAPES = [
    (1, 1, 1, 1, 64),
    (2, 3, 7, 1, 4),
    (1, 4, 64, 1, 64),
    (2, 1, 65, 2, 8),
    (3, 5, 130, 1, 16),
    (1, 2, 300, 3, 4),
    (2, 6, 97, 1, 2),
]


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('batch,channels,length,state_dim,chunk', SHAPES)
@pytest.mark.parametrize('softplus', [True, False])
def test_chunked_matches_reference(batch, channels, length, state_dim, chunk, softplus,
                                   dtype, generator):
    inputs = make_scan_inputs(batch, channels, length, state_dim, dtype, generator)
    if not softplus:   # positive step sizes without the softplus
        u, delta, A, B, bias = inputs
        inputs = (u, delta.abs() * 0.1, A, B, bias.abs() * 0.1)
    out = selective_scan_torch(*inputs, delta_softplus=softplus, chunk=chunk)
    assert out.dtype == torch.float32
    assert out.shape == (batch, channels, state_dim, length)
    assert_close(out, selective_scan_ref(*inputs, delta_softplus=softplus))


@pytest.mark.parametrize('length,chunk,state_dim', [(67, 4, 1), (67, 4, 2), (64, 8, 1)])
def test_blocked_preparation(length, chunk, state_dim, monkeypatch, generator):
    """The elementwise work before the scan, run in many small blocks (the last
    one partial, with the padding of a partial last chunk)."""
    monkeypatch.setattr(scan_module, '_BLOCK_ELEMENTS', 40)
    u, delta, A, B, bias = make_scan_inputs(2, 3, length, state_dim, generator=generator)
    assert_close(selective_scan_torch(u, delta, A, B, bias, chunk=chunk),
                 selective_scan_ref(u, delta, A, B, bias))
    inputs = (u, delta.abs() * 0.1, A, B, bias.abs() * 0.1)   # positive without softplus
    assert_close(selective_scan_torch(*inputs, delta_softplus=False, chunk=chunk),
                 selective_scan_ref(*inputs, delta_softplus=False))


@pytest.mark.parametrize('layout', ['channels_last', 'strided', 'expanded'])
def test_non_contiguous_inputs(layout, generator):
    batch, channels, length, state_dim = 2, 5, 40, 2
    u, delta, A, B, bias = make_scan_inputs(batch, channels, 2 * length, state_dim,
                                            generator=generator)
    if layout == 'channels_last':     # (b, L, D) in memory, as a channels-last net passes
        u, delta = (t[..., :length].transpose(1, 2).contiguous().transpose(1, 2)
                    for t in (u, delta))
        B = B[..., :length].transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == 'strided':
        u, delta, B = u[..., ::2], delta[..., ::2], B[..., ::2]
    else:                             # broadcast views: zero strides
        u, delta = u[:1, :, :length].expand(batch, -1, -1), delta[..., :length]
        B = B[:1, :, :length].expand(batch, -1, -1)
    A = A.T.contiguous().T            # (D, N) with column-major strides
    assert not u.is_contiguous()
    out = selective_scan_torch(u, delta, A, B, bias, chunk=8)
    assert_close(out, selective_scan_ref(u, delta, A, B, bias))


def test_long_sequence(generator):
    """L = 16384: four carry levels at chunk 8 and two at the default chunk."""
    inputs = make_scan_inputs(1, 2, 16384, 1, generator=generator)
    expected = selective_scan_ref(*inputs)
    for chunk in (8, 64):
        assert_close(selective_scan_torch(*inputs, chunk=chunk), expected,
                     rtol=1e-4, atol_scale=1e-5)


@pytest.mark.parametrize('regime', ['fast_decay', 'tiny_delta', 'mixed'])
def test_extreme_step_sizes(regime, generator):
    """delta * A = -1e4 (decay underflows to 0), delta = 1e-6 over 16384 steps, and
    delta spanning 1e-6 .. 1e4 with A down to -100 in one sequence.

    Ground truth: the reference in float64. The chunked scan must be about as
    accurate as the sequential float32 loop (both sum 16384 rounded terms, and
    the same rounded decay compounds over all steps).
    """
    length = 16384
    u, _, A, B, _ = make_scan_inputs(1, 3, length, 1, generator=generator)
    if regime == 'fast_decay':
        delta, A = torch.full((1, 3, length), 1e4), -torch.ones(3, 1)
    elif regime == 'tiny_delta':
        delta = torch.full((1, 3, length), 1e-6)
    else:
        delta = 10 ** (torch.rand(1, 3, length, generator=generator) * 10 - 6)
        A = -(10 ** (torch.rand(3, 1, generator=generator) * 4 - 2))
    inputs = (u, delta, A, B)
    exact = selective_scan_ref(*(t.double() for t in inputs), delta_softplus=False)
    sequential = selective_scan_ref(*inputs, delta_softplus=False)
    out = selective_scan_torch(*inputs, delta_softplus=False)
    assert torch.isfinite(out).all()
    error, sequential_error = ((x.double() - exact).abs().max().item()
                               for x in (out, sequential))
    # (the log2 units round each decay and drive differently from the loop's
    # exp(delta * A) and delta * u * B, hence some slack: seen up to 2.2x)
    assert error <= 4 * sequential_error + 1e-7 * exact.abs().max().item(), \
        (error, sequential_error)
    if regime == 'fast_decay':   # no memory at all: each state is its own drive
        assert_close(out, (delta * u * B).unsqueeze(2))


@pytest.mark.parametrize('numpy_log1p', [True, False], ids=['numpy-log1p', 'torch-log1p'])
def test_extreme_softplus_arguments(numpy_log1p, monkeypatch, generator):
    """delta + bias from -60 to 60: softplus from ~1e-26 to 60."""
    if numpy_log1p and not softplus_module.numpy_log1p_is_faster():
        pytest.skip('numpy log1p is used only where torch CPU kernels run AVX-512')
    monkeypatch.setattr(softplus_module, 'numpy_log1p_is_faster', lambda: numpy_log1p)
    u, _, A, B, _ = make_scan_inputs(2, 3, 500, 1, generator=generator)
    delta = torch.linspace(-60, 60, 500).expand(2, 3, 500)
    assert_close(selective_scan_torch(u, delta, A, B),
                 selective_scan_ref(u, delta, A, B), rtol=1e-4)


@pytest.mark.parametrize('numpy_log1p', [True, False], ids=['numpy-log1p', 'torch-log1p'])
def test_softplus_log2_matches_softplus(numpy_log1p, monkeypatch):
    """Both log1p implementations (numpy's where PyTorch's CPU one is scalar)."""
    if numpy_log1p and not softplus_module.numpy_log1p_is_faster():
        pytest.skip('numpy log1p is used only where torch CPU kernels run AVX-512')
    monkeypatch.setattr(softplus_module, 'numpy_log1p_is_faster', lambda: numpy_log1p)
    z = torch.cat([torch.linspace(-80, 80, 100001), torch.randn(10000) * 5,
                   torch.tensor([0.0, 20.0, 20.5, -20.0, 1e-8, -1e-8])])
    expected = torch.nn.functional.softplus(z.double())
    got = softplus_log2(z / 0.6931471805599453).double() * 0.6931471805599453
    # relative error: the rounding of z * log2(e) (about |z| ulps) plus a few ulps
    bound = (z.abs().double() + 4) * 6e-8 * expected
    assert ((got - expected).abs() <= bound).all()


@pytest.mark.parametrize('reverse', [False, True], ids=['forward', 'reverse'])
def test_linear_scan_matches_loop(reverse, generator):
    decay = torch.rand(3, 200, 4, generator=generator)
    drive = torch.randn(3, 200, 4, generator=generator)
    state, expected = torch.zeros(3, 4), [None] * 200
    for t in (reversed(range(200)) if reverse else range(200)):
        state = decay[:, t] * state + drive[:, t]
        expected[t] = state
    for chunk in (2, 7, 64, 256, None):
        assert_close(_linear_scan(decay, drive, chunk, reverse=reverse),
                     torch.stack(expected, 1))


@pytest.mark.parametrize('length,chunk,steps', [
    (3136, 64, 64), (784, 64, 56), (196, 64, 49), (49, 64, 49), (1, 64, 1),
    (3137, 64, 64), (11, 2, 2), (7, 4, 4), (49, 16, 7), (3136, 16, 16), (17, 16, 16)])
def test_chunking_prefers_divisors(length, chunk, steps):
    got_steps, chunks = _chunking(length, chunk)
    assert got_steps == steps and chunks == -(-length // steps)


@pytest.mark.parametrize('length,steps', [
    (3136, 56), (784, 28), (196, 14), (49, 7), (12800, 100), (67200, 240), (1, 1),
    (5, 5), (97, 9)])
def test_default_chunking_is_about_sqrt_length(length, steps):
    """The default (chunk=None): ~sqrt(L) steps, a divisor where one is near."""
    got_steps, chunks = _chunking(length, None)
    assert got_steps == steps and chunks == -(-length // steps)


def test_reference_gradcheck():
    inputs = make_scan_inputs(2, 2, 5, 2, torch.float64, torch.Generator().manual_seed(1))
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: selective_scan_ref(*a), inputs)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_ref(*a[:4], delta_softplus=False), inputs[:4])


@pytest.mark.parametrize('length,state_dim,chunk,bias', [
    (9, 1, 4, True), (20, 2, 3, False), (33, 1, 2, True), (1, 1, 64, True)])
def test_chunked_gradcheck(length, state_dim, chunk, bias):
    """The hand-written backward in float64 against finite differences."""
    inputs = make_scan_inputs(2, 3, length, state_dim, torch.float64,
                              torch.Generator().manual_seed(2), bias=bias)
    inputs = [t.requires_grad_() for t in inputs if t is not None]
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_torch(*a, chunk=chunk), inputs)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('channels_last', [False, True])
def test_gradients_match_reference(dtype, channels_last, generator):
    u, delta, A, B, bias = make_scan_inputs(2, 4, 150, 2, dtype, generator)
    if channels_last:
        u, delta = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta))
    inputs = [t.requires_grad_() for t in (u, delta, A, B, bias)]
    grad_out = torch.randn(2, 4, 2, 150, generator=generator)
    expected = torch.autograd.grad(selective_scan_ref(*inputs), inputs, grad_out)
    got = torch.autograd.grad(selective_scan_torch(*inputs, chunk=16), inputs, grad_out)
    rtol, atol_scale = GRAD_TOLERANCES[dtype]
    for name, g, e in zip(['u', 'delta', 'A', 'B', 'delta_bias'], got, expected):
        assert g.dtype == dtype, name
        assert_close(g.float(), e.float(), rtol=rtol, atol_scale=atol_scale)


def test_autocast_keeps_float32(generator):
    inputs = make_scan_inputs(2, 3, 50, 1, generator=generator)
    expected = selective_scan_torch(*inputs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = selective_scan_torch(*inputs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_states_layout(generator):
    """States are a (batch, D, N, L) view of a dense (batch, L, D, N) tensor."""
    out = selective_scan_torch(*make_scan_inputs(2, 3, 10, 2, generator=generator))
    assert out.permute(0, 3, 1, 2).is_contiguous()


def test_dispatch_torch_backend(generator):
    inputs = make_scan_inputs(2, 3, 20, 1, generator=generator)
    torch.testing.assert_close(selective_scan(*inputs, backend='torch'),
                               selective_scan_torch(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize('change,message', [
    (lambda a: (a[0][0], *a[1:]), 'u must be'),
    (lambda a: (a[0], a[1][:, :, :-1], *a[2:]), 'delta must be'),
    (lambda a: (*a[:2], a[2][:-1], *a[3:]), 'A must be'),
    (lambda a: (*a[:3], a[3][:, :, :-1], a[4]), 'B must be'),
    (lambda a: (*a[:4], a[4][:-1]), 'delta_bias must be'),
])
def test_shape_errors(change, message, generator):
    inputs = change(make_scan_inputs(2, 3, 10, 1, generator=generator))
    with pytest.raises(ValueError, match=message):
        selective_scan_torch(*inputs)


def test_chunk_must_be_at_least_two(generator):
    with pytest.raises(ValueError, match='chunk must be at least 2'):
        selective_scan_torch(*make_scan_inputs(1, 1, 4, 1, generator=generator), chunk=1)
