"""Operators of the structure-aware SSM (importable as ``mmspatial.ops``).

Each operator has a ``*_ref`` twin in plain PyTorch that states the math and is
the reference every fast path is tested against.
"""
from .selective_scan import selective_scan, selective_scan_ref
from .state_fusion import state_fusion, state_fusion_ref
from .structure_aware_ssm import structure_aware_ssm, structure_aware_ssm_ref

__all__ = [
    'selective_scan', 'selective_scan_ref', 'state_fusion', 'state_fusion_ref',
    'structure_aware_ssm', 'structure_aware_ssm_ref',
]
