"""The exportable form of the structure-aware SSM: equal to the reference, and
held by ONNX (run with onnxruntime on the CPU)."""
import io

import pytest
import torch

from mmspatial.ops.structure_aware_ssm import structure_aware_ssm, structure_aware_ssm_ref
from mmspatial.ops.structure_aware_ssm.export import (linear_scan_export,
                                                      structure_aware_ssm_export)

from ..ops.conftest import assert_close
from ..ops.test_structure_aware_ssm import make_ssm_inputs

# (batch, D, H, W, N): one pixel, H = 1, W = 1, odd sizes, N = 2; H*W a square
# (no padding) or not (the last chunk padded); batch 1 and 2
SHAPES = [(1, 1, 1, 1, 1), (1, 4, 1, 9, 1), (2, 2, 17, 1, 2), (2, 3, 5, 7, 1),
          (1, 3, 23, 19, 1), (1, 2, 9, 31, 2), (1, 2, 16, 16, 1)]


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize('batch,channels,height,width,state_dim', SHAPES)
def test_matches_reference(batch, channels, height, width, state_dim, generator):
    inputs = make_ssm_inputs(batch, channels, height, width, state_dim, generator)
    out = structure_aware_ssm_export(*inputs)
    assert out.dtype == torch.float32 and out.shape == (batch, channels, height, width)
    assert_close(out, structure_aware_ssm_ref(*inputs))


def test_without_bias_and_softplus(generator):
    u, delta, A, B, C, Dskip, kernels, alpha, _ = make_ssm_inputs(1, 3, 6, 11, 1,
                                                                  generator)
    delta = delta.abs()
    args = (u, delta, A, B, C, Dskip, kernels, alpha)
    assert_close(structure_aware_ssm_export(*args, None, False),
                 structure_aware_ssm_ref(*args, None, False))


def test_float64_and_half_inputs(generator):
    inputs = make_ssm_inputs(1, 2, 7, 5, 1, generator, dtype=torch.float64)
    out = structure_aware_ssm_export(*inputs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, structure_aware_ssm_ref(*inputs), rtol=1e-12,
                               atol=1e-12)
    half = tuple(t.half() for t in inputs)
    out = structure_aware_ssm_export(*half)
    assert out.dtype == torch.float32
    assert_close(out, structure_aware_ssm_ref(*half))


@pytest.mark.parametrize('chunk', [1, 2, 7, 300, 1000])
def test_scan_any_chunk_length(chunk, generator):
    log_decay = -torch.rand(3, 300, generator=generator)
    drive = torch.randn(3, 300, generator=generator)
    expected = linear_scan_export(log_decay.double(), drive.double(), chunk=1)
    torch.testing.assert_close(linear_scan_export(log_decay, drive, chunk),
                               expected.float(), rtol=1e-5, atol=1e-5)


def test_strong_decays_stay_finite():
    """Products of decays that underflow float32 (exp(-1e4)) are never divided by."""
    length = 300
    log_decay = torch.full((2, length), -50.0)
    log_decay[1, ::7] = 0.0
    drive = torch.randn(2, length, generator=torch.Generator().manual_seed(1))
    states = linear_scan_export(log_decay, drive)
    expected, state = [], torch.zeros(2)
    for t in range(length):
        state = log_decay[:, t].exp() * state + drive[:, t]
        expected.append(state)
    assert torch.isfinite(states).all()
    torch.testing.assert_close(states, torch.stack(expected, 1))


def test_bad_arguments(generator):
    inputs = list(make_ssm_inputs(1, 2, 4, 4, 1, generator))
    inputs[4] = inputs[4][..., :3]
    with pytest.raises(ValueError, match='structure_aware_ssm_export: C must be'):
        structure_aware_ssm_export(*inputs)
    with pytest.raises(ValueError, match='chunk must be at least 1'):
        linear_scan_export(torch.zeros(1, 4), torch.zeros(1, 4), chunk=0)


class _SSM(torch.nn.Module):
    """The dispatcher with fixed parameters; u, delta, B, C are the graph inputs."""

    def __init__(self, parameters):
        super().__init__()
        for name, value in parameters.items():
            self.register_buffer(name, value)

    def forward(self, u, delta, B, C):
        return structure_aware_ssm(u, delta, self.A, B, C, self.Dskip, self.kernels,
                                   self.alpha, self.delta_bias)


def test_dispatcher_exports_to_onnx(generator):
    """While torch.onnx.export traces, the dispatcher runs the export form; the
    graph onnxruntime runs equals the reference at sizes other than the traced
    one (batch, H, W named dimensions), and holds the scan as two Loops."""
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    u, delta, A, B, C, Dskip, kernels, alpha, bias = make_ssm_inputs(
        1, 3, 9, 20, 2, generator)
    model = _SSM(dict(A=A, Dskip=Dskip, kernels=kernels, alpha=alpha, delta_bias=bias))
    buffer = io.BytesIO()
    names = ['u', 'delta', 'B', 'C']
    torch.onnx.export(model, (u, delta, B, C), buffer, dynamo=False, opset_version=17,
                      input_names=names,
                      dynamic_axes={name: {0: 'batch', 2: 'height', 3: 'width'}
                                    for name in names})
    graph = onnx.load_from_string(buffer.getvalue()).graph
    assert [node.op_type for node in graph.node].count('Loop') == 2
    session = ort.InferenceSession(buffer.getvalue(),
                                   providers=['CPUExecutionProvider'])
    # the traced size; one pixel; a column; a row; non-square, not a multiple of 32
    for batch, height, width in [(1, 9, 20), (1, 1, 1), (2, 17, 1), (1, 1, 37),
                                 (2, 33, 40)]:
        u, delta, _, B, C, *_ = make_ssm_inputs(batch, 3, height, width, 2, generator)
        feeds = dict(u=u.numpy(), delta=delta.numpy(), B=B.numpy(), C=C.numpy())
        out = torch.from_numpy(session.run(None, feeds)[0])
        assert_close(out, structure_aware_ssm_ref(u, delta, A, B, C, Dskip, kernels,
                                                  alpha, bias))
