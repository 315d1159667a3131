"""The files a config names, checked all at once before anything is built.

A run that stops at its first missing input makes the user rerun once per
mistake; here every missing data root, empty data root, annotation file,
image folder and checkpoint is collected and reported in one
:class:`~mmspatial.errors.MissingFileError`, with what to put where.
"""
import os
import os.path as osp

from ..errors import MissingFileError

# What to put at a missing data root, per dataset type.
DATA_HINTS = {
    'CocoDataset': 'COCO 2017: train2017/, val2017/ and annotations/'
                   'instances_{train,val}2017.json (https://cocodataset.org)',
    'ADE20KDataset': 'ADE20K scene parsing, the folder ADEChallengeData2016 '
                     'itself: its images/ and annotations/ directly inside (see '
                     'mmsegmentation\'s dataset preparation guide)',
    'ImageNet': 'ImageNet-1K: train/, val/ and meta/{train,val}.txt '
                '(https://image-net.org, laid out as mmpretrain\'s docs say)',
}
DEMO_HINT = ('or try the pipeline first on synthetic data: `python -m '
             'mmspatial.datasets.synthetic --out data/synthetic` writes it and the '
             'configs under configs/*/demo/ use it (`python tools/demo.py` does both)')
EVALUATORS = {'val_dataloader': 'val_evaluator', 'test_dataloader': 'test_evaluator'}


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


def _under(root, path):
    """``path`` as the dataset resolves it: relative paths are under ``root``."""
    return path if not root or osp.isabs(path) else osp.join(root, path)


def _dataset_problems(dataset, loader):
    """Missing or empty root, missing annotation file and image folders."""
    root = dataset.get('data_root')
    if root and not osp.isdir(root):
        return [f'data root {root!r} of {loader} does not exist']
    if root and not os.listdir(root):
        return [f'data root {root!r} of {loader} is empty']
    problems = []
    ann_file = dataset.get('ann_file')
    if ann_file and not osp.isfile(_under(root, ann_file)):
        problems.append(f'annotation file {_under(root, ann_file)!r} of {loader} '
                        f'does not exist')
    prefixes = dataset.get('data_prefix') or {}
    prefixes = prefixes if isinstance(prefixes, dict) else {'data_prefix': prefixes}
    for key, prefix in prefixes.items():
        if prefix and not osp.isdir(_under(root, prefix)):
            problems.append(f'folder {_under(root, prefix)!r} ({key}) of {loader} '
                            f'does not exist')
    return problems


def _evaluator_problems(cfg, loader):
    evaluators = cfg.get(EVALUATORS.get(loader, '')) or []
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    return [f'annotation file {e["ann_file"]!r} of the {EVALUATORS[loader]} does not exist'
            for e in evaluators if e.get('ann_file') and not osp.isfile(e['ann_file'])]


def missing_data(cfg, loaders):
    """``(problems, hints)``: what is missing in the datasets and evaluators of
    ``cfg.<loader>`` for each of ``loaders``, and what belongs there."""
    problems, hints, bad_loaders = [], [], []
    for loader in loaders:
        dataloader = cfg.get(loader)
        if not dataloader:
            continue
        found = _evaluator_problems(cfg, loader)
        for dataset in _datasets(dataloader.get('dataset')):
            in_dataset = _dataset_problems(dataset, loader)
            kind = dataset.get('type', '?')
            if in_dataset and kind in DATA_HINTS:
                hints.append(f'Put {DATA_HINTS[kind]} at the data root of {kind}')
            found = in_dataset + found
        if found:
            problems += found
            bad_loaders.append(loader)
    if problems:
        options = ' '.join(f'{loader}.dataset.data_root=PATH' for loader in bad_loaders)
        hints.append(f'A symbolic link works; or point the config elsewhere with '
                     f'--cfg-options {options} (and the evaluator\'s ann_file where it '
                     f'has one); {DEMO_HINT}.')
    return problems, hints


def check_inputs(cfg, config_path, loaders, checkpoints=()):
    """Raise one ``MissingFileError`` listing every missing input of ``cfg``.

    Args:
        cfg (Config): the config, command-line options applied.
        config_path (str): the config, as the message names it.
        loaders (list[str]): the dataloaders the run uses, e.g.
            ``['train_dataloader', 'val_dataloader']``.
        checkpoints (list[tuple[str, str | None, str]]): ``(what, path, hint)``
            of each checkpoint the run reads; None paths and URLs are skipped.
    """
    problems, hints = missing_data(cfg, loaders)
    for what, path, hint in checkpoints:
        if path and '://' not in str(path) and not osp.isfile(path):
            state = 'is a directory' if osp.isdir(path) else 'does not exist'
            problems.append(f'{what} {str(path)!r} {state}')
            if hint:
                hints.append(hint)
    if not problems:
        return
    if len(problems) == 1:
        head = f'{problems[0]} (config {config_path})'
    else:
        head = (f'config {config_path}: {len(problems)} inputs are missing:\n  - '
                + '\n  - '.join(dict.fromkeys(problems)))
    raise MissingFileError('\n'.join([head] + list(dict.fromkeys(hints))))


PRETRAINED_HINT = ('For the backbone\'s pretrained checkpoint: put the released '
                   'ImageNet-1K checkpoint of this arch there (docs/weights.md), point '
                   'at it with --cfg-options model.backbone.init_cfg.checkpoint=PATH, '
                   'or train from scratch on purpose with --cfg-options '
                   'model.backbone.init_cfg=None.')
