"""Layers of Spatial-Mamba that stand on their own: the structure-aware SSM and
its state fusion, usable in other models (registered in the ``mmspatial`` scope)."""
from .structure_aware_ssm import StateFusion, StructureAwareSSM

__all__ = ['StateFusion', 'StructureAwareSSM']
