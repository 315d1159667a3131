"""The fused op (scan, fusion, readout): PyTorch path against the reference and the
composition of the public ops; backend selection; torch.compile."""
import logging

import pytest
import torch

from mmspatial.ops import _backend
from mmspatial.ops.selective_scan import selective_scan
from mmspatial.ops.state_fusion import state_fusion
from mmspatial.ops.structure_aware_ssm import structure_aware_ssm, structure_aware_ssm_ref
from mmspatial.ops.structure_aware_ssm.torch_backend import structure_aware_ssm_torch

from .conftest import DTYPES, GRAD_TOLERANCES, assert_close

# (batch, D, H, W, N, chunk): one pixel, non-square, H = 1, W = 1, N = 2, and an
# image of several scan chunks (the end of each row flows into the next row)
SHAPES = [(1, 1, 1, 1, 1, 64), (2, 3, 5, 7, 1, 4), (1, 4, 1, 9, 1, 4), (2, 2, 6, 1, 2, 4),
          (1, 3, 12, 10, 1, 16), (2, 4, 8, 8, 1, 64)]


def make_ssm_inputs(batch, channels, height, width, state_dim, generator,
                    dtype=torch.float32, channels_last=False):
    """u, delta, A, B, C, Dskip, kernels, alpha, delta_bias."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    u, delta = randn(batch, channels, height, width), randn(batch, channels, height, width)
    if channels_last:
        u, delta = (t.contiguous(memory_format=torch.channels_last) for t in (u, delta))
    inputs = (u, delta, -torch.rand(channels, state_dim, generator=generator) - 0.1,
              randn(batch, state_dim, height, width), randn(batch, state_dim, height, width),
              randn(channels), randn(3, channels, 3, 3), randn(3), randn(channels) - 2)
    return tuple(t.to(dtype) for t in inputs)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('batch,channels,height,width,state_dim,chunk', SHAPES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_matches_reference(batch, channels, height, width, state_dim, chunk, dtype,
                           channels_last, generator):
    inputs = make_ssm_inputs(batch, channels, height, width, state_dim, generator, dtype,
                             channels_last)
    out = structure_aware_ssm_torch(*inputs, chunk=chunk)
    assert out.dtype == torch.float32 and out.shape == (batch, channels, height, width)
    assert out.permute(0, 2, 3, 1).is_contiguous()          # channels-last result
    assert_close(out, structure_aware_ssm_ref(*inputs))


def test_matches_composition_of_public_ops(generator):
    """Fused == scan, then fusion of the states, then C h + D u (torch backend)."""
    u, delta, A, B, C, Dskip, kernels, alpha, bias = make_ssm_inputs(
        2, 3, 6, 5, 2, generator)
    states = selective_scan(u.flatten(2), delta.flatten(2), A, B.flatten(2), bias,
                            backend='torch')                           # (b, D, N, L)
    fused = state_fusion(states.reshape(2, 6, 6, 5), kernels.repeat_interleave(2, 1),
                         alpha, backend='torch').view(2, 3, 2, 6, 5)
    composed = (fused * C[:, None]).sum(2) + Dskip[:, None, None] * u
    assert_close(structure_aware_ssm(u, delta, A, B, C, Dskip, kernels, alpha, bias,
                                     backend='torch'), composed)


@pytest.mark.parametrize('batch,channels,height,width,state_dim', [
    (1, 2, 3, 4, 1), (2, 1, 1, 5, 2), (1, 2, 4, 1, 1)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_gradcheck(batch, channels, height, width, state_dim, channels_last, generator):
    inputs = make_ssm_inputs(batch, channels, height, width, state_dim, generator,
                             torch.float64, channels_last)
    inputs = [t.requires_grad_() for t in inputs]
    # fast mode: Jacobian-vector products with random vectors (the full Jacobian
    # of nine inputs costs hundreds of calls)
    assert torch.autograd.gradcheck(
        lambda *a: structure_aware_ssm_torch(*a, chunk=2), inputs, fast_mode=True)
    assert torch.autograd.gradcheck(structure_aware_ssm_ref, inputs, fast_mode=True)


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_gradients_match_reference(dtype, generator):
    inputs = [t.requires_grad_()
              for t in make_ssm_inputs(2, 3, 7, 6, 1, generator, dtype, channels_last=True)]
    grad_out = torch.randn(2, 3, 7, 6, generator=generator)
    expected = torch.autograd.grad(structure_aware_ssm_ref(*inputs), inputs, grad_out)
    got = torch.autograd.grad(structure_aware_ssm_torch(*inputs, chunk=4), inputs, grad_out)
    rtol, atol_scale = GRAD_TOLERANCES[dtype]
    names = ['u', 'delta', 'A', 'B', 'C', 'Dskip', 'kernels', 'alpha', 'delta_bias']
    for name, g, e in zip(names, got, expected):
        assert g.dtype == dtype, name
        assert_close(g.float(), e.float(), rtol=rtol, atol_scale=atol_scale)


def test_no_delta_bias_and_no_softplus(generator):
    u, delta, *rest, _ = make_ssm_inputs(2, 3, 4, 5, 1, generator)
    delta = delta.abs() * 0.1
    inputs = [t.requires_grad_() for t in (u, delta, *rest)]
    out = structure_aware_ssm_torch(*inputs, delta_softplus=False)
    assert_close(out, structure_aware_ssm_ref(*inputs, delta_softplus=False))
    grads = torch.autograd.grad(out.sum(), inputs)
    expected = torch.autograd.grad(
        structure_aware_ssm_ref(*inputs, delta_softplus=False).sum(), inputs)
    for g, e in zip(grads, expected):
        assert_close(g, e, rtol=1e-4)


def test_autocast_keeps_float32(generator):
    inputs = make_ssm_inputs(2, 3, 5, 6, 1, generator)
    expected = structure_aware_ssm_torch(*inputs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = structure_aware_ssm_torch(*inputs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_compile(generator):
    """torch.compile (inductor, whole graph) through forward and backward."""
    inputs = [t.requires_grad_() for t in make_ssm_inputs(2, 3, 4, 5, 1, generator)]

    def loss(*args):
        return structure_aware_ssm_torch(torch.sin(args[0]), *args[1:]).square().sum()

    compiled = torch.compile(loss, backend='inductor', fullgraph=True)
    expected = loss(*inputs)
    got = compiled(*inputs)
    assert_close(got, expected)
    for g, e in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(expected, inputs)):
        assert_close(g, e, rtol=1e-4)


# ------------------------------------------------------------------ backend selection

class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def backend_log(monkeypatch):
    """Messages of ``_backend.log_once`` (mmengine's current logger, or ``logging``)."""
    monkeypatch.setattr(_backend, '_logged', set())
    records = _Records()
    loggers = [logging.getLogger('mmspatial.ops')]
    try:
        from mmengine.logging import MMLogger
    except ImportError:
        pass        # log_once then logs through ``logging`` only
    else:
        loggers.append(MMLogger.get_current_instance())
    for logger in loggers:
        logger.addHandler(records)
    yield records.messages
    for logger in loggers:
        logger.removeHandler(records)


def test_backend_from_environment(monkeypatch, backend_log, generator):
    monkeypatch.setenv('MMSPATIAL_OPS_BACKEND', 'torch')
    inputs = make_ssm_inputs(1, 2, 3, 4, 1, generator)
    torch.testing.assert_close(structure_aware_ssm(*inputs),
                               structure_aware_ssm_torch(*inputs), rtol=0, atol=0)
    assert backend_log == ['mmspatial.ops.structure_aware_ssm: using the torch backend '
                           '(requested by MMSPATIAL_OPS_BACKEND)']
    structure_aware_ssm(*inputs)
    assert len(backend_log) == 1            # once per (operator, backend)


def test_automatic_backend_on_cpu(monkeypatch, backend_log, generator):
    monkeypatch.delenv('MMSPATIAL_OPS_BACKEND', raising=False)
    structure_aware_ssm(*make_ssm_inputs(1, 2, 3, 4, 1, generator))
    assert backend_log == ['mmspatial.ops.structure_aware_ssm: using the torch backend '
                           '(cpu tensors)']


@pytest.mark.parametrize('op', ['selective_scan', 'state_fusion', 'structure_aware_ssm'])
def test_invalid_backend_from_environment(op, monkeypatch, generator):
    monkeypatch.setenv('MMSPATIAL_OPS_BACKEND', 'cuda')
    u, delta, A, B, C, Dskip, kernels, alpha, bias = make_ssm_inputs(1, 2, 3, 4, 1, generator)
    call = {'selective_scan': lambda: selective_scan(u.flatten(2), delta.flatten(2), A,
                                                     B.flatten(2)),
            'state_fusion': lambda: state_fusion(u, kernels, alpha),
            'structure_aware_ssm': lambda: structure_aware_ssm(
                u, delta, A, B, C, Dskip, kernels, alpha)}[op]
    with pytest.raises(ValueError, match=rf"{op}: unknown backend 'cuda' \(from "
                                         r"MMSPATIAL_OPS_BACKEND\); choose one of"):
        call()


def test_invalid_backend_argument(generator):
    with pytest.raises(ValueError, match="unknown backend 'pytorch' \\(from backend= "):
        structure_aware_ssm(*make_ssm_inputs(1, 2, 3, 4, 1, generator), backend='pytorch')


def test_triton_backend_refuses_cpu_tensors(monkeypatch, generator):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(_backend, 'triton_import_error', lambda: None)
    with pytest.raises(RuntimeError, match='for cpu tensors; Triton runs CUDA tensors'):
        structure_aware_ssm(*make_ssm_inputs(1, 2, 3, 4, 1, generator), backend='triton')


def test_shape_errors(generator):
    u, delta, A, B, C, Dskip, kernels, alpha, bias = make_ssm_inputs(1, 2, 3, 4, 1, generator)
    with pytest.raises(ValueError, match='C must be'):
        structure_aware_ssm_torch(u, delta, A, B, C[..., :-1], Dskip, kernels, alpha)
    with pytest.raises(ValueError, match='kernels must be'):
        structure_aware_ssm_torch(u, delta, A, B, C, Dskip, kernels[:, :1], alpha)
    with pytest.raises(ValueError, match='delta_bias must be'):
        structure_aware_ssm_torch(u, delta, A, B, C, Dskip, kernels, alpha, bias[:1])


def test_shape_errors_name_the_entry_point(generator):
    """The dispatcher leaves the check to the backend it picks; the message names
    that backend's entry point, the argument and the shape it must have."""
    u, delta, A, B, C, Dskip, kernels, alpha, bias = make_ssm_inputs(1, 2, 3, 4, 1, generator)
    with pytest.raises(ValueError, match=r'^structure_aware_ssm_torch: Dskip must be \(2,\) '
                                         r'for u of shape \(1, 2, 3, 4\), got \(3,\)$'):
        structure_aware_ssm(u, delta, A, B, C, torch.ones(3), kernels, alpha)
    with pytest.raises(ValueError, match=r'^structure_aware_ssm_ref: A must be \(D, N\) = '
                                         r'\(2, N\), got \(2,\)$'):
        structure_aware_ssm_ref(u, delta, A[:, 0], B, C, Dskip, kernels, alpha)
    with pytest.raises(ValueError, match=r'^structure_aware_ssm_torch: u must be '
                                         r'\(batch, D, H, W\), got \(2, 3, 4\)$'):
        structure_aware_ssm(u[0], delta, A, B, C, Dskip, kernels, alpha)
