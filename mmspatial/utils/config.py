"""Configs of the tools: loading, input checks before anything is built, and
the models and runners built from them.

Each check turns a mistake that would otherwise surface deep inside the Runner
into one :class:`~mmspatial.errors.InputError` that names the file or path at
fault and what to do about it.
"""
import os.path as osp

from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, RUNNERS, init_default_scope
from mmengine.runner import Runner

from ..errors import InputError, MissingFileError
from ..models.checkpoint import (check_model_checkpoint, checkpoint_filter_fn,
                                 load_checkpoint_file)
from .resume import check_training_state

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def load_config(path, cfg_options=None, require_model=False):
    """``Config.fromfile(path)`` with ``cfg_options`` merged; the config must
    exist, define a ``model`` when ``require_model``, and name one of mmdet,
    mmseg, mmpretrain as its ``default_scope``."""
    if not osp.isfile(path):
        raise MissingFileError(f'config file not found: {path!r} (the shipped ones '
                               'are under configs/detection, configs/segmentation '
                               'and configs/classification)')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if require_model and not isinstance(cfg.get('model'), dict):
        raise InputError(f'config {path!r} defines no model (a `model = dict(...)` '
                         'entry); give a classification, segmentation or detection '
                         'config, e.g. configs/detection/maskrcnn_spatialmamba_t.py')
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise InputError(f'{path}: default_scope {scope!r} is none of {SCOPES}')
    return cfg


def backbone_cfg(cfg):
    """The backbone's config in ``cfg.model`` (inside a TTA wrapper too), or None."""
    model = cfg.model
    if 'module' in model and 'backbone' not in model:  # a TTA wrapper
        model = model.module
    return model.get('backbone')


def pretrained_checkpoint(cfg):
    """The local file of the backbone's ``Pretrained`` init_cfg, or None."""
    init_cfg = (backbone_cfg(cfg) or {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        return None
    path = init_cfg.get('checkpoint')
    return path if path and '://' not in path else None


def check_checkpoints(cfg, config_path):
    """Read every checkpoint a training run of ``cfg`` will load (``load_from``,
    the backbone's pretrained one) and check it against the config's backbone;
    one to resume from must also hold the training state."""
    load_from, pretrained = cfg.get('load_from'), pretrained_checkpoint(cfg)
    checkpoints = {path: load_checkpoint_file(path) for path in (load_from, pretrained)
                   if path}
    if checkpoints and backbone_cfg(cfg) is not None:
        backbone = build_model(cfg, backbone_only=True)
        if load_from:
            check_model_checkpoint(checkpoints[load_from], backbone,
                                   f'checkpoint {load_from!r} (for {config_path})')
        if pretrained:
            checkpoint_filter_fn(checkpoints[pretrained], backbone,
                                 f'pretrained checkpoint {pretrained!r} (for {config_path})')
    if load_from and cfg.get('resume'):
        check_training_state(checkpoints[load_from], load_from)


def build_model(cfg, backbone_only=False):
    """The config's model (or its backbone) without pretrained weights, with
    SyncBN turned into BN (there is no process group here)."""
    init_default_scope(cfg.default_scope)
    # init_weights() is not called: no checkpoint is read
    if backbone_only:
        model = MODELS.build(backbone_cfg(cfg))
    else:
        model_cfg = cfg.model.copy()
        if cfg.get('data_preprocessor'):  # as the Runner does
            model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
        model = MODELS.build(model_cfg)
    return revert_sync_batchnorm(model)


def build_runner(cfg):
    """The Runner of ``cfg``, of its ``runner_type`` where it names one."""
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
