"""Spatial-Mamba models; importing this package registers them."""
from .backbones import SpatialMamba, SpatialMambaBlock
from .layers import StateFusion, StructureAwareSSM
from .registration import register_all

register_all()

__all__ = ['SpatialMamba', 'SpatialMambaBlock', 'StateFusion', 'StructureAwareSSM']
