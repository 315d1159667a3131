from .spatial_mamba import SpatialMamba

__all__ = ['SpatialMamba']
