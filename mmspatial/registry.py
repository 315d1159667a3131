"""The registries that mmspatial's classes register with.

mmspatial has no default scope of its own: its configs run with mmdet's, mmseg's
or mmpretrain's. Those libraries' registries are children of mmengine's root
registries and search their parents, so a class registered in the root
(``ROOT_MODELS``, ``ROOT_HOOKS``) resolves by its plain name from every scope:
``type='SpatialMamba'``, ``type='AtomicCheckpointHook'``. The child registries
with scope ``mmspatial`` (``MODELS``, ``HOOKS``) make ``type='mmspatial.NAME'``
resolve from any scope as well.

The backbone and the hooks register in both. The building blocks
(``StructureAwareSSM``, ``StateFusion``, ``SpatialMambaBlock``) register in the
``mmspatial`` scope only, where their general names cannot clash with another
library's: ``dict(type='mmspatial.StructureAwareSSM', dim=96)``.
"""
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=ROOT_MODELS, scope='mmspatial',
                  locations=['mmspatial.models'])
HOOKS = Registry('hook', parent=ROOT_HOOKS, scope='mmspatial',
                 locations=['mmspatial.engine.hooks'])

__all__ = ['HOOKS', 'MODELS', 'ROOT_HOOKS', 'ROOT_MODELS']
