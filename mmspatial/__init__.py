"""Spatial-Mamba backbones for OpenMMLab.

``import mmspatial`` registers ``SpatialMamba`` with the registries of mmengine
and of whichever of mmdet, mmseg and mmpretrain are installed. ``mmspatial.ops``
needs only PyTorch (and Triton for the GPU kernels).
"""
from importlib.util import find_spec

from .version import __version__

if find_spec('mmengine') is not None:
    from . import engine, models  # noqa: F401  (registers the hook and the backbone)
    from .models import SpatialMamba  # noqa: F401

__all__ = ['__version__']
