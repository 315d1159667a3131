"""Triton kernels of the structure-aware SSM operators (``backend='triton'``).

Each operator is a ``torch.autograd.Function`` (stable class names for FLOP
counters: ``SelectiveScanTritonFn``, ``StateFusionTritonFn``,
``StructureAwareSSMTritonFn``) whose forward and backward are ``torch.library``
custom ops (``torch.ops.mmspatial.<op>_triton_fwd`` / ``_bwd``) with fake
kernels, so ``torch.compile`` traces through them without graph breaks; outside
compilation the functions run directly. No call synchronises with the host, so
the ops can be captured in CUDA graphs.

Kernels run CUDA tensors; CPU tensors run under the Triton interpreter when
``TRITON_INTERPRET=1`` was in the environment when this package was imported
(Triton reads it when a ``@triton.jit`` function is defined): slow, for tests.
"""
from ._common import config, override_config, record_traffic
from .selective_scan import SelectiveScanTritonFn, selective_scan_triton
from .state_fusion import StateFusionTritonFn, state_fusion_triton
from .structure_aware_ssm import StructureAwareSSMTritonFn, structure_aware_ssm_triton


def kernels_interpreted():
    """True when the kernels were built for the Triton interpreter (CPU tensors)."""
    from ._common import is_interpreted
    from .selective_scan import _scan_chunk_kernel
    return is_interpreted(_scan_chunk_kernel)


__all__ = [
    'selective_scan_triton', 'state_fusion_triton', 'structure_aware_ssm_triton',
    'SelectiveScanTritonFn', 'StateFusionTritonFn', 'StructureAwareSSMTritonFn',
    'config', 'override_config', 'record_traffic', 'kernels_interpreted',
]
