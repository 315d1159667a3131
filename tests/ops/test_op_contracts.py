"""Contracts of the operators beyond their values: the memory traffic of the
fused Triton op, no layout copies in either backend, no host synchronisation
in the Triton glue, one error for empty inputs on every backend.

The traffic account (``mmspatial.kernel_traffic``) counts, launch by launch, the
bytes of the tensors each kernel reads and writes, in a dry run on ``meta``
tensors: no GPU needed, any size. The bounds below are the design's figures
(bfloat16 u and delta, float32 states, y and g_y) with a little room, so that a
change that adds a pass over memory fails here.
"""
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

pytest.importorskip('triton')

from mmspatial.kernel_traffic import (STAGE_ONE, bytes_per_element,  # noqa: E402
                                      fused_op_traffic, layer_inputs,
                                      minimum_bytes_per_element)
from mmspatial.ops.structure_aware_ssm.torch_backend import (  # noqa: E402
    structure_aware_ssm_torch)
from mmspatial.ops.structure_aware_ssm.triton_backend import (  # noqa: E402
    structure_aware_ssm_triton)
from mmspatial.ops.triton_launch import record_traffic  # noqa: E402

# bytes per element of (batch, D, L): forward = scan summary 4.1 + carries 0.2 +
# scan 8.1 + fusion and readout 10.0; backward = g_h 8.3-9.2 (reads g_y and C;
# writes g_h = g_y C with its zero pad, 4.3 bytes at detection, 5.2 at
# classification, where the pad of 56x56 is 30 % of it) + the border's terms
# (0.2 at detection, 0.9 at classification: the left and right sides' five
# pixels of each of 56 rows) + input gradient 10.4-11.5 (reads the padded g_h
# and delta, writes g_x and the adjoint scan's chunk summaries) + carries 0.2 +
# adjoint scan with every gradient and the fusion's weight sums 21.9 (reads
# g_x, the states, u, delta, g_y and C; writes g_u, g_delta and the partials,
# the weight sums' 1.6: 25 per channel and chunk of 64 steps)
FORWARD_BOUND, BACKWARD_BOUND = 22.6, 43.9


@pytest.mark.parametrize('regime', STAGE_ONE, ids=[r.name for r in STAGE_ONE])
def test_traffic_per_element_is_bounded(regime):
    _, batch, channels, height, width = regime
    traffic = fused_op_traffic(batch, channels, height, width)
    forward = bytes_per_element(traffic['forward'], batch, channels, height, width)
    backward = bytes_per_element(traffic['backward'], batch, channels, height, width)
    low_forward, low_backward = minimum_bytes_per_element()
    assert low_forward <= forward <= FORWARD_BOUND, traffic['forward']
    assert low_backward <= backward <= BACKWARD_BOUND, traffic['backward']
    kernels = [name for name, _, _ in traffic['forward'] + traffic['backward']]
    assert kernels.count('_scan_carry_kernel') == 2
    assert kernels.count('_fusion_bwd_border_kernel') == 1
    assert len(kernels) == 9


def test_launch_records_every_kernel_of_a_real_run():
    """The account is what runs: an interpreted call records the same launches."""
    inputs = layer_inputs(1, 4, 3, 5, torch.float32, device='cpu')
    inputs = [torch.randn(t.shape).to(t.dtype) if t is not None else None for t in inputs]
    inputs[2] = -inputs[2].abs() - 0.5                                   # A < 0
    with record_traffic() as launches:
        y = structure_aware_ssm_triton(*inputs)
    assert torch.isfinite(y).all()
    assert [name for name, _, _ in launches] == [
        '_scan_chunk_kernel', '_scan_carry_kernel', '_scan_chunk_kernel',
        '_fusion_fwd_kernel']


class CopyCounter(TorchDispatchMode):
    """Copies of tensors with at least ``min_numel`` elements, by kind: every copy,
    and those that change the order of the strides (transposing copies)."""

    COPIES = {torch.ops.aten.copy_.default, torch.ops.aten.clone.default,
              torch.ops.aten._to_copy.default}

    def __init__(self, min_numel):
        super().__init__()
        self.min_numel = min_numel
        self.copies, self.transposing = [], []

    @staticmethod
    def _order(t):
        dims = [d for d in range(t.dim()) if t.shape[d] > 1]
        return sorted(dims, key=lambda d: -t.stride(d))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.COPIES:
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            if src.numel() >= self.min_numel:
                self.copies.append(func)
                result = args[0] if func is torch.ops.aten.copy_.default else out
                if self._order(result) != self._order(src):
                    self.transposing.append(func)
        return out


def _forward_backward(op, inputs):
    y = op(*inputs)
    torch.autograd.grad(y, [t for t in inputs if t.requires_grad],
                        torch.ones_like(y).contiguous(memory_format=torch.channels_last))


def test_triton_backend_copies_nothing_of_activation_size():
    """Forward and backward of the layer's call, glue only (a dry run on meta
    tensors): no copy at all of a (batch, D, L)-sized tensor."""
    batch, channels, height, width = 2, 16, 7, 9
    inputs = [t.requires_grad_() for t in layer_inputs(batch, channels, height, width,
                                                        torch.bfloat16)]
    with record_traffic(dry_run=True), CopyCounter(batch * channels * height * width) as counter:
        _forward_backward(structure_aware_ssm_triton, inputs)
    assert counter.copies == []


def test_torch_backend_makes_no_transposing_copy():
    batch, channels, height, width = 2, 16, 7, 9
    inputs = layer_inputs(batch, channels, height, width, torch.float32, device='cpu')
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(t.shape, generator=generator) for t in inputs]
    inputs[:2] = [t.contiguous(memory_format=torch.channels_last) for t in inputs[:2]]
    inputs[2] = -inputs[2].abs() - 0.5
    # B and C: channel slices of one channels-last projection, as the layer has them
    x_dbl = torch.randn(batch, 3, height, width, generator=generator).contiguous(
        memory_format=torch.channels_last)
    inputs[3], inputs[4] = x_dbl[:, 1:2], x_dbl[:, 2:]
    inputs = [t.detach().requires_grad_() for t in inputs]
    with CopyCounter(batch * channels * height * width) as counter:
        _forward_backward(structure_aware_ssm_torch, inputs)
    assert counter.transposing == []


class HostTouches(TorchDispatchMode):
    """Ops that touch a tensor off the ``meta`` device, or read a value to the host."""

    def __init__(self):
        super().__init__()
        self.touches = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs or {}))
                   if isinstance(a, torch.Tensor)]
        if func is torch.ops.aten._local_scalar_dense.default or any(
                t.device.type != 'meta' for t in tensors):
            self.touches.append(func)
        return func(*args, **(kwargs or {}))


def test_triton_glue_never_synchronises():
    """On meta tensors any read of a value fails and any host-made tensor shows:
    the forward and backward glue do neither (so they neither wait for the
    device nor break CUDA-graph capture)."""
    inputs = [t.requires_grad_() for t in layer_inputs(1, 8, 5, 6, torch.float16)]
    with record_traffic(dry_run=True), HostTouches() as mode:
        _forward_backward(structure_aware_ssm_triton, inputs)
    assert mode.touches == []


@pytest.mark.parametrize('empty', ['batch', 'D', 'H', 'W'])
def test_empty_inputs_get_the_same_error_on_every_backend(empty):
    """Batch 0 or a sequence length of 0: one clear error, the same for the
    reference, the PyTorch and the Triton entry points (no ZeroDivisionError
    from the chunked scan)."""
    from mmspatial.ops import selective_scan, state_fusion, structure_aware_ssm_ref
    from mmspatial.ops.structure_aware_ssm import structure_aware_ssm
    sizes = dict(batch=2, D=3, H=4, W=5)
    sizes[empty] = 0
    inputs = layer_inputs(sizes['batch'], sizes['D'], sizes['H'], sizes['W'],
                          torch.float32, device='cpu')
    inputs = [torch.zeros(t.shape) for t in inputs]
    messages = []
    for name, call in [('ref', lambda: structure_aware_ssm_ref(*inputs)),
                       ('torch', lambda: structure_aware_ssm(*inputs, backend='torch')),
                       ('triton', lambda: structure_aware_ssm(*inputs, backend='triton'))]:
        with pytest.raises(ValueError, match=r'u of shape .* is empty; batch, D, H and W '
                                             r'must all be at least 1') as error:
            call()
        messages.append(str(error.value).split(': ', 1)[1])
    assert len(set(messages)) == 1, messages
    u, delta, A, B = inputs[:4]
    with pytest.raises(ValueError, match='is empty'):
        selective_scan(u.flatten(2), delta.flatten(2), A, B.flatten(2), backend='torch')
    with pytest.raises(ValueError, match='is empty'):
        state_fusion(u, inputs[6], inputs[7], backend='triton')
