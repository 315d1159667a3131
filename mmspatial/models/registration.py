"""Registration of the backbone with the OpenMMLab registries.

mmdet, mmseg and mmpretrain registries are children of mmengine's root
``MODELS`` and search their parents, so one entry in the root makes
``type='SpatialMamba'`` resolve from all of them without importing them. A child
registry with scope ``mmspatial`` makes ``type='mmspatial.SpatialMamba'`` resolve
from any scope as well.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmspatial',
                  locations=['mmspatial.models'])


def register_all():
    """Register the models in the root and the ``mmspatial`` registries (idempotent)."""
    from .backbones import SpatialMamba
    for registry in (MMENGINE_MODELS, MODELS):
        registry.register_module(module=SpatialMamba, force=True)
