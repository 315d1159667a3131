"""Spatial-Mamba models; importing this package registers them
(mmspatial/registry.py says where)."""
from .backbones import SpatialMamba, SpatialMambaBlock
from .layers import StateFusion, StructureAwareSSM

__all__ = ['SpatialMamba', 'SpatialMambaBlock', 'StateFusion', 'StructureAwareSSM']
