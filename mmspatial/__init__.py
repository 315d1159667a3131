"""Spatial-Mamba backbones for OpenMMLab.

``import mmspatial`` registers the backbone and the hooks so that every
OpenMMLab scope (mmdet, mmseg, mmpretrain) builds them by name, and the building
blocks in the ``mmspatial`` scope (mmspatial/registry.py). ``mmspatial.ops``
needs only PyTorch (and Triton for the GPU kernels).
"""
from importlib.util import find_spec

from .version import __version__

if find_spec('mmengine') is not None:
    from . import engine, models  # noqa: F401  (registers the hooks and the models)
    from .models import SpatialMamba  # noqa: F401

__all__ = ['__version__']
