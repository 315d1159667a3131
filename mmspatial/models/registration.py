"""Registration of the backbone and its building blocks with the OpenMMLab registries.

mmdet, mmseg and mmpretrain registries are children of mmengine's root
``MODELS`` and search their parents, so one entry in the root makes
``type='SpatialMamba'`` resolve from all of them without importing them. A child
registry with scope ``mmspatial`` makes ``type='mmspatial.SpatialMamba'`` resolve
from any scope as well.

The building blocks (``StructureAwareSSM``, ``StateFusion``,
``SpatialMambaBlock``) are registered in the ``mmspatial`` scope only, where
their general names cannot clash with another library's:
``dict(type='mmspatial.StructureAwareSSM', dim=96)`` builds from any registry.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmspatial',
                  locations=['mmspatial.models'])


def register_all():
    """Register the models in the root and the ``mmspatial`` registries (idempotent)."""
    from .backbones import SpatialMamba, SpatialMambaBlock
    from .layers import StateFusion, StructureAwareSSM
    for registry in (MMENGINE_MODELS, MODELS):
        registry.register_module(module=SpatialMamba, force=True)
    for block in (StructureAwareSSM, StateFusion, SpatialMambaBlock):
        MODELS.register_module(module=block, force=True)
