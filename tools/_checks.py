"""Input checks shared by ``tools/train.py`` and ``tools/test.py``.

Each check turns a mistake that would otherwise surface deep inside the Runner
(or not at all: a checkpoint of another arch loads with warnings only) into one
``InputError`` that names the file or path at fault and what to do about it.
"""
import os.path as osp

import torch

from mmspatial.models.checkpoint import strip_ddp_prefix

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


class InputError(Exception):
    """A bad input to a tool: the message says what and how to fix it."""


def trust_local_checkpoints():
    """Load local checkpoint files with ``torch.load(..., weights_only=False)``.

    mmengine 0.10.7 calls ``torch.load(file)``, and since torch 2.6 that means
    ``weights_only=True``, which refuses every checkpoint mmengine itself saves
    (its message hub pickles ``HistoryBuffer`` and numpy objects) and released
    ones that carry their training config (open-mmlab/mmengine#1655; the fix,
    PR #1650, is not released). The tools load only the files their user names
    (the checkpoint argument, ``load_from``, ``--resume``, ``init_cfg``): that
    is the trust decision torch < 2.6 assumed, so the tools make it explicit
    here, for local files, in their own process.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return torch.load(filename, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)


def load_config(path, cfg_options=None):
    """``Config.fromfile`` with a clear error for a missing file."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise InputError(f'config file not found: {path!r} (the shipped ones are '
                         'under configs/detection, configs/segmentation and '
                         'configs/classification)')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


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
    """Raise ``InputError`` if a dataset of ``cfg.<loader>`` has a ``data_root``
    that does not exist; say which one and how to get the data."""
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
            raise InputError(
                f'data root {root!r} of {loader} (config {config_path}) does not '
                f'exist. Put {what} there (a symbolic link works), or point the '
                f'config elsewhere with --cfg-options '
                f'{loader}.dataset.data_root=PATH (and the evaluator\'s ann_file '
                f'where it has one); {DEMO_HINT}.')


def backbone_cfg(cfg):
    model = cfg.model
    if 'module' in model and 'backbone' not in model:  # a TTA wrapper
        model = model.module
    return model.get('backbone')


def check_pretrained(cfg, config_path):
    """Raise if the backbone's ``Pretrained`` init checkpoint is a local path
    that does not exist (training would stop there after building everything)."""
    backbone = backbone_cfg(cfg)
    init_cfg = (backbone or {}).get('init_cfg')
    if not init_cfg or init_cfg.get('type') != 'Pretrained':
        return
    path = init_cfg.get('checkpoint')
    if path and '://' not in path and not osp.isfile(path):
        raise InputError(
            f'the backbone\'s pretrained checkpoint {path!r} (config '
            f'{config_path}) does not exist. Download the released ImageNet-1K '
            f'checkpoint of this arch there, point at it with --cfg-options '
            f'model.backbone.init_cfg.checkpoint=PATH, or train from scratch on '
            f'purpose with --cfg-options model.backbone.init_cfg=None.')


def load_checkpoint(path):
    """The checkpoint dict at ``path`` (on the CPU), or ``InputError``."""
    from mmengine.runner import CheckpointLoader
    if '://' not in path and not osp.isfile(path):
        raise InputError(f'checkpoint not found: {path!r}')
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not isinstance(checkpoint, dict):
        raise InputError(f'{path!r} is not a checkpoint (a dict of tensors, or one '
                         f'under "state_dict" or "model"), got '
                         f'{type(checkpoint).__name__}')
    return checkpoint


def is_official_classifier(checkpoint):
    """A released ImageNet checkpoint: ``{'model': {..., 'head.weight'}}``."""
    model = checkpoint.get('model')
    return (isinstance(model, dict) and 'head.weight' in model
            and 'state_dict' not in checkpoint)


def model_state_dict(checkpoint):
    return strip_ddp_prefix(checkpoint.get('state_dict', checkpoint))


def check_checkpoint_fits(model, checkpoint, path, config_path):
    """Raise ``InputError`` unless the ``backbone.*`` tensors of ``checkpoint``
    are exactly those of ``model.backbone``: same keys, same shapes.

    mmengine loads a full-model checkpoint non-strictly and only warns about
    what did not fit; for the backbone that means evaluating or fine-tuning a
    half-random network, so it is an error here.
    """
    state_dict = model_state_dict(checkpoint)
    backbone = model.backbone
    ours = backbone.state_dict()
    theirs = {k[len('backbone.'):]: v for k, v in state_dict.items()
              if k.startswith('backbone.')}
    where = (f'checkpoint {path!r} and the backbone of {config_path} (dims '
             f'{getattr(backbone, "dims", "?")}, depths {getattr(backbone, "depths", "?")})')
    if not theirs:
        sample = ', '.join(list(state_dict)[:4])
        hint = (' It looks like an ImageNet classifier: use it as the backbone\'s '
                'init_cfg checkpoint for training, or evaluate it with a '
                'configs/classification config.' if is_official_classifier(checkpoint)
                else '')
        raise InputError(f'{where} do not match: the checkpoint has no backbone.* '
                         f'weights (its first keys: {sample}).{hint}')
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    mismatched = [f'{k} {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}'
                  for k in sorted(set(ours) & set(theirs))
                  if isinstance(theirs[k], torch.Tensor)
                  and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or mismatched:
        lines = []
        for name, keys in (('missing in the checkpoint', missing),
                           ('not in the model', unexpected),
                           ('of other shape (checkpoint vs model)', mismatched)):
            if keys:
                more = f', ... ({len(keys)} in all)' if len(keys) > 4 else ''
                lines.append(f'{len(keys)} {name}: {", ".join(keys[:4])}{more}')
        raise InputError(f'{where} do not match - is it a checkpoint of another '
                         f'arch?\n  ' + '\n  '.join(lines))


def setup_cpu_distributed(cfg):
    """Make ``--launcher pytorch`` work on machines without CUDA.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` before creating the process
    group and gives DDP the rank's GPU as ``device_ids``; neither exists on a
    CPU. Here the process group is created with gloo (mmengine then skips its
    own init) and DDP gets ``device_ids=None``, as CPU modules need. Anything
    but the pytorch launcher on a CUDA-less machine is left as it is.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    if dist.get_rank() == 0:
        print(f'note: no CUDA: distributed {cfg.launcher} launch on CPU with gloo, '
              f'{dist.get_world_size()} processes')
