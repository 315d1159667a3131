"""The backend table: every entry runs, takes the reference's arguments in the
reference's order, and is what the dispatcher calls; the Triton stencil's taps
come from ``DILATIONS``."""
import importlib
import inspect
import os

import pytest
import torch

from mmspatial.ops import _backend
from mmspatial.ops.state_fusion import DILATIONS, state_fusion_ref

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

OPS = importlib.import_module('mmspatial.ops')


def entries():
    return [(op, backend) for op, table in _backend.IMPLEMENTATIONS.items()
            for backend in table]


def load(op, backend):
    if backend == 'triton':
        pytest.importorskip('triton')
    module, name = _backend.IMPLEMENTATIONS[op][backend].split(':')
    return getattr(importlib.import_module(f'mmspatial.ops.{module}'), name)


def positional(fn):
    """(name, default) of the parameters a caller may pass by position."""
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD]


def test_every_operator_has_a_torch_and_a_triton_backend():
    assert set(_backend.IMPLEMENTATIONS) == {'selective_scan', 'state_fusion',
                                             'structure_aware_ssm'}
    for op, table in _backend.IMPLEMENTATIONS.items():
        assert {'torch', 'triton'} <= set(table) <= set(_backend.BACKENDS), op
    assert _backend.EXPORTABLE == ('structure_aware_ssm',)


@pytest.mark.parametrize('op,backend', entries())
def test_backend_takes_the_reference_arguments_in_order(op, backend):
    """Same names, order and defaults as ``<op>_ref``; anything more is keyword-only."""
    fn = load(op, backend)
    reference = getattr(OPS, f'{op}_ref')
    assert fn.__name__ == f'{op}_{backend}'
    assert positional(fn) == positional(reference)
    extra = [p for p in inspect.signature(fn).parameters.values()
             if p.kind is not p.POSITIONAL_OR_KEYWORD]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extra)


@pytest.mark.parametrize('op', ['selective_scan', 'state_fusion', 'structure_aware_ssm'])
def test_dispatcher_takes_the_reference_arguments_and_backend(op):
    dispatcher, reference = getattr(OPS, op), getattr(OPS, f'{op}_ref')
    assert positional(dispatcher) == positional(reference)
    keyword = [p.name for p in inspect.signature(dispatcher).parameters.values()
               if p.kind is p.KEYWORD_ONLY]
    assert keyword == ['backend']


def test_dispatcher_calls_the_table_entry(monkeypatch):
    """The dispatcher runs the function the table names for the chosen backend."""
    calls = []
    monkeypatch.setitem(_backend._loaded, ('state_fusion', 'torch'),
                        lambda *args: calls.append(args) or 'from the table')
    x, kernels, alpha = torch.zeros(1, 2, 3, 3), torch.zeros(3, 2, 3, 3), torch.zeros(3)
    assert OPS.state_fusion(x, kernels, alpha, backend='torch') == 'from the table'
    assert calls == [(x, kernels, alpha)]
    assert _backend.implementation('selective_scan', 'torch', x.device) is \
        load('selective_scan', 'torch')


def test_folded_taps_are_the_offsets_of_dilations(generator):
    """The Triton stencil's folded weights (row 0 the centre, row 1 + 8 i + k the
    k-th non-centre tap of ``DILATIONS[i]``) reproduce the reference."""
    pytest.importorskip('triton')
    from mmspatial.ops.state_fusion.triton_backend import NUM_TAPS, fold_tap_weights
    x = torch.randn(2, 3, 7, 12, generator=generator)
    kernels = torch.randn(3, 3, 3, 3, generator=generator)
    alpha = torch.randn(3, generator=generator)
    around = [(row, col) for row in (-1, 0, 1) for col in (-1, 0, 1) if (row, col) != (0, 0)]
    offsets = [(0, 0)] + [(row * d, col * d) for d in DILATIONS for row, col in around]
    weights = fold_tap_weights(kernels, alpha)
    assert NUM_TAPS == len(offsets) == weights.shape[0] == 25
    height, width = x.shape[2:]
    out = torch.zeros_like(x)
    for (dy, dx), w in zip(offsets, weights):
        rows = (torch.arange(height) + dy).clamp(0, height - 1)
        cols = (torch.arange(width) + dx).clamp(0, width - 1)
        out += w[None, :, None, None] * x[:, :, rows][:, :, :, cols]
    torch.testing.assert_close(out, state_fusion_ref(x, kernels, alpha), rtol=1e-5,
                               atol=1e-5)
