from .spatial_mamba import SpatialMamba, SpatialMambaBlock

__all__ = ['SpatialMamba', 'SpatialMambaBlock']
