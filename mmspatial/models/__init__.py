"""Spatial-Mamba models; importing this package registers them."""
from .backbones import SpatialMamba
from .registration import register_all

register_all()

__all__ = ['SpatialMamba']
