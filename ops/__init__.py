"""Operators of the structure-aware SSM (the top-level ``ops/`` folder, installed
as ``mmspatial.ops``).

One package per operator (``selective_scan``, ``state_fusion``,
``structure_aware_ssm``), each with its ``reference.py`` (the ``*_ref`` function
in plain PyTorch that states the math, against which every fast path is
tested), ``torch_backend.py``, ``triton_backend.py`` and, for the fused op,
``export.py``; its ``__init__`` holds the public dispatcher. Which backend runs
is decided in ``_backend.py``, from one table.
"""
from .selective_scan import selective_scan, selective_scan_ref
from .state_fusion import state_fusion, state_fusion_ref
from .structure_aware_ssm import structure_aware_ssm, structure_aware_ssm_ref

__all__ = [
    'selective_scan', 'selective_scan_ref', 'state_fusion', 'state_fusion_ref',
    'structure_aware_ssm', 'structure_aware_ssm_ref',
]
