"""Checkpoints: reading a file, finding the backbone in it, checking its arch.

Everything that reads a checkpoint goes through this module: the backbone's
``init_cfg`` (:func:`load_backbone_checkpoint`), the tools, and, inside
:func:`local_checkpoint_policy`, mmengine's Runner (``load_from``, resume).
Files are read without running code from them
(:mod:`mmspatial.fileio.checkpoint_reader`, ``docs/checkpoints.md``).

Released files come in three forms, all loaded as they are:

* classification: ``{'model': classifier_state_dict}`` with ``patch_embed.*``,
  ``layers.*``, the final ``norm.*`` and ``head.*``;
* detection / segmentation: ``{'state_dict': {'backbone.<key>': ...}}``;
* a plain backbone state dict.

The key names of the backbone are the reference's, so the mapping is a small
set of visible rules, not a renaming table. Every problem is an
:class:`~mmspatial.errors.InputError` that names the file.
"""
import logging
import os
import re
from contextlib import contextmanager

from mmengine.logging import print_log

from ..errors import InputError
from ..fileio.checkpoint_reader import read_checkpoint, read_checkpoint_url
from ..fileio.safetensors_checkpoint import is_safetensors

CLASSIFIER_ONLY_PREFIXES = ('head.', 'norm.')


# ------------------------------------------------------------------ reading

def load_checkpoint_file(filename, map_location='cpu'):
    """The checkpoint dict in ``filename``, read without running code from it.

    Local files go to :func:`mmspatial.fileio.checkpoint_reader.read_checkpoint`:
    CRC-checked, their pickle's globals listed before unpickling, then read with
    ``torch.load(weights_only=True)`` and the named objects released and
    mmengine checkpoints need; ``.safetensors`` files read as
    ``{'state_dict': tensors}``. URLs and mmengine's other schemes go through
    mmengine's ``CheckpointLoader`` under :func:`local_checkpoint_policy`, so
    they download into torch hub's cache and the copy is read the same way.

    Args:
        filename (str | os.PathLike): a path, a URL or an mmengine scheme
            (``open-mmlab://...``).
        map_location: as ``torch.load`` takes it.

    Raises:
        MissingFileError: the local file does not exist.
        InputError: it cannot be read (truncated, corrupted, not a PyTorch
            file), names objects the policy refuses, or holds no dict.
    """
    filename = os.fspath(filename)
    if '://' in filename:
        from mmengine.runner import CheckpointLoader
        with local_checkpoint_policy():
            checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    else:
        checkpoint = read_checkpoint(filename, map_location)
    if not isinstance(checkpoint, dict):
        raise InputError(f'{filename!r} is not a checkpoint (a dict of tensors, or '
                         f'one under "state_dict" or "model"), it holds a '
                         f'{type(checkpoint).__name__}')
    return checkpoint


def check_resumable(filename):
    """Raise ``InputError`` unless ``filename`` can hold the training state a
    resume needs (a ``.safetensors`` file holds weights only)."""
    if is_safetensors(filename):
        raise InputError(f'--resume needs a checkpoint with the optimizer and '
                         f'scheduler state; {os.fspath(filename)!r} is a .safetensors '
                         'file, which holds weights only: resume from the .pth '
                         'checkpoint, or start from these weights with load_from')


@contextmanager
def local_checkpoint_policy():
    """Inside the block, mmengine reads checkpoints as
    :func:`load_checkpoint_file` does.

    mmengine 0.10.7 reads local files with ``torch.load(file)``, which since
    torch 2.6 refuses every checkpoint mmengine itself saves
    (open-mmlab/mmengine#1655), and URLs with
    ``torch.hub.load_state_dict_from_url``, which unpickles anything. The tools
    run the Runner inside this block: mmengine's local scheme reads through
    :func:`~mmspatial.fileio.checkpoint_reader.read_checkpoint`, and its http
    loader (which ``torchvision://``, ``open-mmlab://`` and ``mmcls://`` use)
    downloads into torch hub's cache and reads the copy the same way. On the
    way out mmengine's own loaders are back.
    """
    import mmengine.runner.checkpoint as mmengine_checkpoint
    from mmengine.runner import CheckpointLoader

    def load_from_local(filename, map_location):  # mmengine logs the name's end
        return load_checkpoint_file(filename, map_location)

    previous_local = CheckpointLoader._schemes['']
    previous_load_url = mmengine_checkpoint.load_url
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    mmengine_checkpoint.load_url = read_checkpoint_url
    try:
        yield
    finally:
        CheckpointLoader.register_scheme(prefixes='', loader=previous_local, force=True)
        mmengine_checkpoint.load_url = previous_load_url


# ------------------------------------------------------------- released forms

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


def is_official_classifier(checkpoint):
    """A released ImageNet checkpoint: ``{'model': {..., 'head.weight'}}``."""
    model = checkpoint.get('model')
    return (isinstance(model, dict) and 'head.weight' in model
            and 'state_dict' not in checkpoint)


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


# --------------------------------------------------------------------- arch

def stage_depths(state_dict):
    """Blocks per stage found in a state dict, e.g. [2, 4, 8, 4]."""
    blocks = {}
    for key in state_dict:
        match = re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', key)
        if match:
            stage, block = map(int, match.groups())
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    return [blocks.get(i, 0) for i in range(max(blocks, default=-1) + 1)]


def detect_arch(state_dict):
    """``dict(dims=[...], depths=[...])`` read off a backbone state dict."""
    depths = stage_depths(state_dict)
    if not depths:
        raise InputError('not a Spatial-Mamba backbone: no layers.<i>.blocks.* tensors')
    try:
        dims = [state_dict[f'layers.{i}.blocks.0.cpe1.weight'].shape[0]
                for i in range(len(depths))]
    except KeyError as missing:
        raise InputError(f'not a Spatial-Mamba backbone: no {missing} tensor') from None
    return dict(dims=dims, depths=depths)


def listed(keys, limit=4):
    """The first ``limit`` of ``keys``, joined, and how many there are in all."""
    more = f', ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def check_fits(model_state, state_dict, source, strict=False):
    """Raise ``InputError`` unless ``state_dict`` is a backbone of the model's
    arch: some keys shared, the same blocks per stage, the same tensor shapes,
    and with ``strict`` the same keys.

    Args:
        model_state (dict): the model's state dict (only shapes are read).
        state_dict (dict): the checkpoint's backbone state dict.
        source (str): the checkpoint, as the message names it.
        strict (bool): missing and unexpected keys are errors too (for
            checkpoints of the whole model, which mmengine loads with warnings).
    """
    common = [k for k in state_dict if k in model_state]
    if not common:
        raise InputError(f'{source} holds no SpatialMamba backbone weights '
                         f'(its first keys: {", ".join(list(state_dict)[:5])})')
    problems = []
    depths, model_depths = stage_depths(state_dict), stage_depths(model_state)
    if depths != model_depths:
        problems.append(f'the checkpoint has {depths} blocks per stage, the '
                        f'model {model_depths}')
    groups = []
    if strict:
        groups += [('missing in the checkpoint', sorted(set(model_state) - set(state_dict))),
                   ('not in the model', sorted(set(state_dict) - set(model_state)))]
    groups.append(('of other shape (checkpoint vs model)', [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(model_state[k].shape)}'
        for k in sorted(common)
        if hasattr(state_dict[k], 'shape')
        and tuple(state_dict[k].shape) != tuple(model_state[k].shape)]))
    problems += [f'{len(keys)} {what}: {listed(keys)}' for what, keys in groups if keys]
    if problems:
        arch = detect_arch(model_state)
        raise InputError(f'{source} does not fit this SpatialMamba arch (dims '
                         f'{arch["dims"]}, depths {arch["depths"]}): is it a '
                         f'checkpoint of another arch?\n  ' + '\n  '.join(problems))


# ---------------------------------------------------------------- loading

def checkpoint_filter_fn(checkpoint, model, source='checkpoint'):
    """The backbone state dict for ``model`` inside ``checkpoint``, checked.

    Args:
        checkpoint (dict): a loaded file of any released form.
        model (SpatialMamba): the backbone the weights are for.
        source (str): the checkpoint, as messages name it.

    Returns:
        dict: the backbone's tensors, for ``model.load_state_dict(...,
        strict=False)`` (a released classifier has no per-stage output norms).
        The form found and the keys of other model parts are logged.
    """
    state_dict, form, dropped = extract_backbone_state_dict(checkpoint)
    check_fits(model.state_dict(), state_dict, f'{source} ({form})')
    print_log(f'SpatialMamba: reading {source}, form: {form}', logger='current')
    if dropped:
        print_log(f'SpatialMamba: ignored {len(dropped)} keys of other model parts '
                  f'(e.g. {", ".join(dropped[:4])})', logger='current')
    return state_dict


def load_backbone_checkpoint(model, filename):
    """Load the backbone weights of the checkpoint ``filename`` into ``model``.

    Missing, unexpected and dropped keys are logged; a missing or unreadable
    file, or tensors that do not fit the arch, raise ``InputError``.
    """
    source = f'checkpoint {filename!r}'
    state_dict = checkpoint_filter_fn(load_checkpoint_file(filename), model, source)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    print_log(f'SpatialMamba: loaded {len(state_dict) - len(unexpected)} tensors '
              f'from {source}', logger='current')
    new = [k for k in missing if k.startswith('outnorm')]
    absent = [k for k in missing if not k.startswith('outnorm')]
    if new:
        print_log(f'SpatialMamba: newly initialised output norms (not in the '
                  f'checkpoint): {", ".join(new)}', logger='current')
    if absent:
        print_log(f'SpatialMamba: missing keys in {source}: {", ".join(absent)}',
                  logger='current', level=logging.WARNING)
    if unexpected:
        print_log(f'SpatialMamba: unexpected keys in {source}: '
                  f'{", ".join(unexpected)}', logger='current', level=logging.WARNING)


def check_model_checkpoint(checkpoint, backbone, source):
    """Raise ``InputError`` unless the ``backbone.*`` tensors of a whole-model
    ``checkpoint`` are exactly those of ``backbone``: same keys, same shapes.

    mmengine loads a whole-model checkpoint non-strictly and only warns about
    what did not fit; for the backbone that means evaluating or fine-tuning a
    half-random network, so it is an error here.
    """
    state_dict = strip_ddp_prefix(checkpoint.get('state_dict', checkpoint))
    theirs = _strip_prefix(state_dict, 'backbone.')
    if not theirs:
        hint = (' It looks like an ImageNet classifier: use it as the backbone\'s '
                'init_cfg checkpoint for training, or evaluate it with a '
                'configs/classification config.' if is_official_classifier(checkpoint)
                else '')
        raise InputError(f'{source} has no backbone.* weights (its first keys: '
                         f'{", ".join(list(state_dict)[:4])}).{hint}')
    check_fits(backbone.state_dict(), theirs, source, strict=True)
