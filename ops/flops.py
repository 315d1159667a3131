"""FLOP counts of the structure-aware SSM operators, and handles for FLOP counters.

Convention: that of mmengine's ``FlopAnalyzer`` (from fvcore): one fused
multiply-add is one flop, elementwise operations are not counted. Per element
of the states, i.e. per (batch, channel d, state n, position l):

- selective scan: 7 flops, the count the Spatial-Mamba reference registers for
  its state scan (``flops_selective_scan_fn`` of VMamba without C, D and z:
  ``7 * B * L * D * N``): discretisation (delta * A, delta * B * u) and the
  state update;
- state fusion: 27 flops, three depthwise 3x3 convolutions counted as mmengine
  counts ``aten::_convolution`` (one per tap); the alpha weighting is
  elementwise;
- fused op (scan, fusion, readout): 7 + 27 = 34; the readout ``C h + D u`` is
  elementwise.

So a model gets the same count whether it calls the fused op or the unfused
reference graph, and the same as the reference implementation (whose FLOP
columns the paper reports: 4.5 GFLOPs for Spatial-Mamba-T at 224x224).

Under ``torch.jit.trace`` (which ``FlopAnalyzer`` uses) each operator is one
node ``prim::PythonOp.<autograd Function name>``; :data:`FLOP_HANDLES` maps
those names, for both backends, to handles::

    from mmengine.analysis import FlopAnalyzer
    from mmspatial.ops.flops import register_flop_handles
    flops = register_flop_handles(FlopAnalyzer(model, inputs)).total()

(``mmengine.analysis.get_model_complexity_info`` builds its own analyzer and
takes no handles: use ``FlopAnalyzer`` as above, and
``mmengine.analysis.complexity_stats_table(flops=analyzer)`` for the table.)
"""
from .state_fusion.reference import DILATIONS

SCAN_FLOPS_PER_STATE = 7
FUSION_FLOPS_PER_STATE = 9 * len(DILATIONS)     # one per tap of each 3x3 kernel


def selective_scan_flops(batch, channels, state_dim, length):
    """FLOPs of the scan of (batch, D, L) inputs with a (D, N) state matrix."""
    return SCAN_FLOPS_PER_STATE * batch * channels * state_dim * length


def state_fusion_flops(batch, channels, height, width):
    """FLOPs of the fusion of (batch, C, H, W) states."""
    return FUSION_FLOPS_PER_STATE * batch * channels * height * width


def structure_aware_ssm_flops(batch, channels, state_dim, height, width):
    """FLOPs of the fused op on (batch, D, H, W) inputs with N states per channel."""
    length = height * width
    return (selective_scan_flops(batch, channels, state_dim, length)
            + state_fusion_flops(batch, channels * state_dim, height, width))


def _shape(value, op, what):
    """Sizes of a traced tensor value; a clear error when the trace lacks them."""
    if not value.isCompleteTensor():
        raise ValueError(f'FLOP handle of {op}: the trace has no complete shape '
                         f'for {what} ({value.type()})')
    return value.type().sizes()


# The handles read tensor inputs by position: u, delta, A, B (, C, ...) for the
# scan and the fused op, x for the fusion. Traced autograd Functions list only
# their tensor arguments, in call order, and these come first in both backends.

def selective_scan_flop_handle(inputs, outputs):
    """``FlopAnalyzer`` handle of the scan (inputs: u, delta, A, B, ...)."""
    batch, channels, length = _shape(inputs[0], 'selective_scan', 'u')
    state_dim = _shape(inputs[2], 'selective_scan', 'A')[1]
    return selective_scan_flops(batch, channels, state_dim, length)


def state_fusion_flop_handle(inputs, outputs):
    """``FlopAnalyzer`` handle of the fusion (inputs: x, kernels, alpha)."""
    return state_fusion_flops(*_shape(inputs[0], 'state_fusion', 'x'))


def structure_aware_ssm_flop_handle(inputs, outputs):
    """``FlopAnalyzer`` handle of the fused op (inputs: u, delta, A, B, C, ...)."""
    batch, channels, height, width = _shape(inputs[0], 'structure_aware_ssm', 'u')
    state_dim = _shape(inputs[2], 'structure_aware_ssm', 'A')[1]
    return structure_aware_ssm_flops(batch, channels, state_dim, height, width)


FLOP_HANDLES = {
    f'prim::PythonOp.{name}': handle
    for names, handle in [
        (('SelectiveScanTorchFn', 'SelectiveScanTritonFn'), selective_scan_flop_handle),
        (('StateFusionTorchFn', 'StateFusionTritonFn'), state_fusion_flop_handle),
        (('StructureAwareSSMTorchFn', 'StructureAwareSSMTritonFn'),
         structure_aware_ssm_flop_handle),
    ]
    for name in names
}
"""Traced op name -> handle, for ``FlopAnalyzer.set_op_handle(**FLOP_HANDLES)``."""


def register_flop_handles(analyzer):
    """Add :data:`FLOP_HANDLES` to an mmengine (or fvcore) jit analyzer; returns it."""
    return analyzer.set_op_handle(**FLOP_HANDLES)

