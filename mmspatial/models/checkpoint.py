"""From released Spatial-Mamba checkpoints to this package's modules.

Released files come in three forms, all loaded as they are:

* classification: ``{'model': classifier_state_dict}`` with ``patch_embed.*``,
  ``layers.*``, the final ``norm.*`` and ``head.*``;
* detection / segmentation: ``{'state_dict': {'backbone.<key>': ...}}``;
* a plain backbone state dict.

The key names of the backbone are the reference's, so the mapping is a small
set of visible rules, not a renaming table.
"""
import logging
import os.path as osp
import pickle
import re

import torch

CLASSIFIER_ONLY_PREFIXES = ('head.', 'norm.')


def _strip_prefix(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def strip_ddp_prefix(state_dict):
    """Remove the ``module.`` that DDP-wrapped models save; other keys stay."""
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state_dict.items()}


def extract_backbone_state_dict(checkpoint):
    """Backbone state dict from any released form.

    Args:
        checkpoint (dict): the loaded file.

    Returns:
        tuple[dict, str, list[str]]: the backbone state dict, a name of the form
        found, and the keys dropped because they belong to another part of the
        model (classifier head and final norm, detector neck/heads).
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f'a checkpoint must be a dict, got {type(checkpoint).__name__}')
    if 'model' in checkpoint and isinstance(checkpoint['model'], dict):
        state_dict, form = checkpoint['model'], 'classifier (official, key "model")'
    elif 'state_dict' in checkpoint and isinstance(checkpoint['state_dict'], dict):
        state_dict, form = checkpoint['state_dict'], 'OpenMMLab (key "state_dict")'
    else:
        state_dict, form = checkpoint, 'plain state dict'
    state_dict = strip_ddp_prefix(state_dict)
    if any(k.startswith('backbone.') for k in state_dict):
        dropped = [k for k in state_dict if not k.startswith('backbone.')]
        return _strip_prefix(state_dict, 'backbone.'), form, dropped
    dropped = [k for k in state_dict if k.startswith(CLASSIFIER_ONLY_PREFIXES)]
    backbone = {k: v for k, v in state_dict.items()
                if not k.startswith(CLASSIFIER_ONLY_PREFIXES)}
    return backbone, form, dropped


def official_classifier_to_mmpretrain(state_dict, last_stage=3):
    """Official classifier keys -> mmpretrain ``ImageClassifier`` keys.

    The classifier's final LayerNorm is the backbone's output norm of the last
    stage (``outnorm3`` when ``out_indices=(3,)``) and its head is
    ``LinearClsHead.fc``::

        patch_embed.* / layers.*  ->  backbone.patch_embed.* / backbone.layers.*
        norm.*                    ->  backbone.outnorm{last_stage}.*
        head.*                    ->  head.fc.*
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith('norm.'):
            converted[f'backbone.outnorm{last_stage}.' + key[len('norm.'):]] = value
        elif key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
        else:
            converted['backbone.' + key] = value
    return converted


def load_checkpoint_file(filename):
    """Load a checkpoint on the CPU; a local path that does not exist is an error.

    Local files are read with ``torch.load(weights_only=True)`` first. Released
    checkpoints often also pickle their training config or optimizer objects,
    which that refuses (torch >= 2.6); such a file, named explicitly by the
    user, is then read as torch < 2.6 did, with a warning that says so.
    Remote files go through mmengine's ``CheckpointLoader``.
    """
    if '://' in filename:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(filename, map_location='cpu')
    if not osp.isfile(filename):
        raise FileNotFoundError(f'SpatialMamba: pretrained checkpoint not found: '
                                f'{filename!r}')
    try:
        return torch.load(filename, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        from mmengine.logging import print_log
        print_log(f'SpatialMamba: {filename!r} holds pickled objects besides tensors '
                  f'({str(error).splitlines()[0]}); loading it with '
                  'weights_only=False because it was named as the checkpoint: only '
                  'use files you trust', logger='current', level=logging.WARNING)
        return torch.load(filename, map_location='cpu', weights_only=False)


def stage_depths(state_dict):
    """Blocks per stage found in a state dict, e.g. [2, 4, 8, 4]."""
    blocks = {}
    for key in state_dict:
        match = re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', key)
        if match:
            stage, block = map(int, match.groups())
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    return [blocks.get(i, 0) for i in range(max(blocks, default=-1) + 1)]


def check_fits(model_state, state_dict, source):
    """Raise ``ValueError`` unless ``state_dict`` is a backbone of the model's
    arch: some keys shared, the same blocks per stage, the same tensor shapes."""
    common = [k for k in state_dict if k in model_state]
    if not common:
        sample = ', '.join(list(state_dict)[:5])
        raise ValueError(f'{source} holds no SpatialMamba backbone weights '
                         f'(its first keys: {sample})')
    depths, model_depths = stage_depths(state_dict), stage_depths(model_state)
    if depths != model_depths:
        raise ValueError(f'{source} has {depths} blocks per stage, the model '
                         f'{model_depths}: a checkpoint of another arch')
    mismatched = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
                  f'{tuple(model_state[k].shape)}'
                  for k in common if tuple(state_dict[k].shape) != tuple(model_state[k].shape)]
    if mismatched:
        shown = '\n  '.join(mismatched[:10])
        more = f'\n  ... and {len(mismatched) - 10} more' if len(mismatched) > 10 else ''
        raise ValueError(f'{source} does not fit this SpatialMamba arch: '
                         f'{len(mismatched)} tensors differ in shape '
                         f'(a checkpoint of another arch?):\n  {shown}{more}')
