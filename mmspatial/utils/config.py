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

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')

# What to put at a missing data root, per dataset type.
DATA_HINTS = {
    'CocoDataset': 'COCO 2017: train2017/, val2017/ and annotations/'
                   'instances_{train,val}2017.json (https://cocodataset.org)',
    'ADE20KDataset': 'ADE20K scene parsing: ADEChallengeData2016/images/ and '
                     'annotations/ (see mmsegmentation\'s dataset preparation '
                     'guide)',
    'ImageNet': 'ImageNet-1K: train/, val/ and meta/{train,val}.txt '
                '(https://image-net.org, laid out as mmpretrain\'s docs say)',
}
DEMO_HINT = ('or try the pipeline first on synthetic data: `python -m '
             'mmspatial.datasets.synthetic --out data/synthetic` writes it and the '
             'configs under configs/*/demo/ use it (`python tools/demo.py` does both)')


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


def _datasets(dataset):
    """The dataset configs inside ``dataset`` (through wrappers)."""
    if dataset is None:
        return
    if 'datasets' in dataset:  # ConcatDataset
        for sub in dataset['datasets']:
            yield from _datasets(sub)
    elif 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
        yield from _datasets(dataset['dataset'])
    else:
        yield dataset


def check_data_roots(cfg, loaders, config_path):
    """Raise if a dataset of ``cfg.<loader>`` has a ``data_root`` that does
    not exist; say which one and how to get the data."""
    for loader in loaders:
        dataloader = cfg.get(loader)
        if not dataloader:
            continue
        for dataset in _datasets(dataloader.get('dataset')):
            root = dataset.get('data_root')
            if not root or osp.isdir(root):
                continue
            kind = dataset.get('type', '?')
            what = DATA_HINTS.get(kind, f'the data of {kind}')
            raise MissingFileError(
                f'data root {root!r} of {loader} (config {config_path}) does not '
                f'exist. Put {what} there (a symbolic link works), or point the '
                f'config elsewhere with --cfg-options '
                f'{loader}.dataset.data_root=PATH (and the evaluator\'s ann_file '
                f'where it has one); {DEMO_HINT}.')


def pretrained_checkpoint(cfg):
    """The local file of the backbone's ``Pretrained`` init_cfg, or None."""
    init_cfg = (backbone_cfg(cfg) or {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        return None
    path = init_cfg.get('checkpoint')
    return path if path and '://' not in path else None


def check_pretrained(cfg, config_path):
    """Raise if the backbone's ``Pretrained`` init checkpoint is a local path
    that does not exist (training would stop there after building everything)."""
    path = pretrained_checkpoint(cfg)
    if path and not osp.isfile(path):
        raise MissingFileError(
            f'the backbone\'s pretrained checkpoint {path!r} (config '
            f'{config_path}) does not exist. Download the released ImageNet-1K '
            f'checkpoint of this arch there, point at it with --cfg-options '
            f'model.backbone.init_cfg.checkpoint=PATH, or train from scratch on '
            f'purpose with --cfg-options model.backbone.init_cfg=None.')


def check_checkpoints(cfg, config_path):
    """Read every checkpoint a training run of ``cfg`` will load (``load_from``,
    the backbone's pretrained one) and check it against the config's backbone."""
    load_from, pretrained = cfg.get('load_from'), pretrained_checkpoint(cfg)
    checkpoints = {path: load_checkpoint_file(path) for path in (load_from, pretrained)
                   if path}
    if not checkpoints or backbone_cfg(cfg) is None:
        return
    backbone = build_model(cfg, backbone_only=True)
    if load_from:
        check_model_checkpoint(checkpoints[load_from], backbone,
                               f'checkpoint {load_from!r} (for {config_path})')
    if pretrained:
        checkpoint_filter_fn(checkpoints[pretrained], backbone,
                             f'pretrained checkpoint {pretrained!r} (for {config_path})')


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
