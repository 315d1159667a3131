"""A whole task model (detector, segmentor, classifier) against a checkpoint.

mmengine loads a whole-model checkpoint non-strictly and only warns about what
did not fit, so a checkpoint of another task, a head for another number of
classes or weights that hold NaN would be evaluated, served or exported as if
nothing were wrong. Here every tensor of the model must be in the checkpoint,
with the model's shape and finite values, and the checkpoint must hold nothing
the model has no place for. A mismatch is an :class:`~mmspatial.errors.InputError`
whose first line names the checkpoint, the config and the problem.

Partial loading (fine-tuning a detector's backbone from a segmentor, say) is an
explicit choice: with ``MMSPATIAL_ALLOW_PARTIAL_LOAD=1`` in the environment the
problems are logged as one warning and the tensors that fit are loaded.
"""
import logging
import os
from collections import Counter

import torch
from mmengine.logging import print_log

from ..errors import InputError
from .checkpoint import (check_fits, is_official_classifier, listed,
                         official_classifier_to_mmpretrain, strip_ddp_prefix)

ALLOW_PARTIAL_LOAD_ENV = 'MMSPATIAL_ALLOW_PARTIAL_LOAD'
PARTIAL_LOAD_HINT = (f'to load only the tensors that fit: --allow-partial-load or '
                     f'{ALLOW_PARTIAL_LOAD_ENV}=1')

# The heads that tell a task's checkpoint from another's (top-level modules).
TASK_HEADS = {
    'detection': ('rpn_head', 'roi_head', 'bbox_head'),
    'segmentation': ('decode_head', 'auxiliary_head'),
    'classification': ('head',),
}
MODEL_KINDS = {'detection': 'detector', 'segmentation': 'segmentor',
               'classification': 'classifier'}
BACKBONE_ONLY_PREFIXES = ('patch_embed', 'layers')


def partial_load_allowed():
    """Whether the user allowed partial loading (``MMSPATIAL_ALLOW_PARTIAL_LOAD=1``)."""
    return os.environ.get(ALLOW_PARTIAL_LOAD_ENV, '').strip().lower() in (
        '1', 'true', 'yes', 'on')


def _top_level(keys):
    return {key.split('.', 1)[0] for key in keys}


def model_task(model):
    """``'detection'``, ``'segmentation'``, ``'classification'`` or None, from
    the model's head modules."""
    modules = {name for name, _ in model.named_children()}
    return next((task for task, heads in TASK_HEADS.items() if modules & set(heads)), None)


def checkpoint_task(state_dict):
    """The task of a whole-model state dict, from its heads' key prefixes:
    ``(task, heads found)``; ``('backbone', ...)`` for a bare backbone;
    ``(None, ())`` when it says nothing."""
    prefixes = _top_level(state_dict)
    for task, heads in TASK_HEADS.items():
        found = tuple(head for head in heads if head in prefixes)
        if found:
            return task, found
    if 'backbone' not in prefixes and prefixes & set(BACKBONE_ONLY_PREFIXES):
        return 'backbone', tuple(sorted(prefixes & set(BACKBONE_ONLY_PREFIXES)))
    return None, ()


def _describe(model):
    task = model_task(model)
    kind = MODEL_KINDS.get(task, 'model')
    return f'{kind} ({type(model).__name__})'


def model_state_dict_of(checkpoint, model):
    """The state dict meant for the whole ``model`` in a loaded ``checkpoint``.

    A released ImageNet classifier (``{'model': {..., 'head.weight'}}``) is
    converted to mmpretrain's keys (:func:`official_classifier_to_mmpretrain`,
    its final norm going to the output norm of the model's last stage); an
    mm-style ``{'state_dict': ...}`` and a plain state dict are taken as they
    are. DDP's ``module.`` prefix is removed.
    """
    if is_official_classifier(checkpoint):
        backbone = getattr(model, 'backbone', None)
        last_stage = getattr(backbone, 'out_indices', (3,))[-1]
        return official_classifier_to_mmpretrain(strip_ddp_prefix(checkpoint['model']),
                                                 last_stage=last_stage)
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict):
        raise InputError(f'the checkpoint\'s "state_dict" is a '
                         f'{type(state_dict).__name__}, not a dict of tensors')
    return strip_ddp_prefix(state_dict)


def _counted(count, noun):
    return f'{count} {noun}' + ('' if count == 1 else 's')


def _by_module(keys):
    counts = Counter(key.split('.', 1)[0] for key in keys)
    return ', '.join(f'{module}.* {count}' for module, count in counts.items())


def _task_problem(model, state_dict, checkpoint):
    task, heads = checkpoint_task(state_dict)
    wanted = model_task(model)
    if task is None or wanted is None or task == wanted:
        return None
    if checkpoint is not None and is_official_classifier(checkpoint):
        return ("it is a released ImageNet classifier ({'model': ...}): use it as the "
                'backbone\'s init_cfg checkpoint to train this config, or evaluate it '
                'with a configs/classification config')
    held = ', '.join(prefix + '.*' for prefix in heads)
    if task == 'backbone':
        return (f'it is a bare backbone (it holds {held} weights): use it as the '
                'backbone\'s init_cfg checkpoint')
    return f'it is a {task} checkpoint (it holds {held} weights)'


def _backbone_problem(model, state_dict):
    """The backbone arch check of :func:`check_fits`, for a SpatialMamba backbone."""
    backbone = getattr(model, 'backbone', None)
    if backbone is None or not hasattr(backbone, 'depths'):
        return None
    theirs = {k[len('backbone.'):]: v for k, v in state_dict.items()
              if k.startswith('backbone.')}
    if not theirs:
        return None  # reported as missing tensors
    try:
        check_fits(backbone.state_dict(), theirs, 'its backbone', strict=True)
    except InputError as error:
        return str(error)
    return None


def _key_problems(model_state, state_dict, skip_prefix=None):
    """Missing, unexpected and other-shape tensors, one line each."""
    def kept(keys):
        return sorted(key for key in keys
                      if skip_prefix is None or not key.startswith(skip_prefix))

    missing = kept(set(model_state) - set(state_dict))
    unexpected = kept(set(state_dict) - set(model_state))
    common = kept(set(model_state) & set(state_dict))
    not_tensors = [k for k in common if not torch.is_tensor(state_dict[k])]
    other_shape = [k for k in common if torch.is_tensor(state_dict[k])
                   and state_dict[k].shape != model_state[k].shape]
    problems = []
    if missing:
        problems.append(f'{_counted(len(missing), "tensor")} of the model missing in the '
                        f'checkpoint ({_by_module(missing)}; e.g. {missing[0]})')
    if unexpected:
        problems.append(f'{_counted(len(unexpected), "tensor")} the model has no place for '
                        f'({_by_module(unexpected)}; e.g. {unexpected[0]})')
    if not_tensors:
        problems.append(f'{_counted(len(not_tensors), "non-tensor value")} '
                        f'({listed(not_tensors, 3)})')
    if other_shape:
        shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(model_state[k].shape)}'
                  for k in other_shape]
        classes = all(state_dict[k].dim() == model_state[k].dim() >= 1
                      and state_dict[k].shape[1:] == model_state[k].shape[1:]
                      and not k.startswith('backbone.') for k in other_shape)
        hint = ': a head for another number of classes?' if classes else ''
        problems.append(f'{_counted(len(other_shape), "tensor")} of another shape, '
                        f'checkpoint vs model ({listed(shapes, 2)}){hint}')
    return problems


def _nonfinite_problem(model_state, state_dict):
    """The floating tensors (that the model would load) holding NaN or Inf.

    A tensor whose sum is finite holds only finite values (a NaN or Inf
    element makes the sum NaN or Inf); only the others, and sums that
    overflowed, are counted element by element. The sum reads each tensor
    once without a temporary: about a tenth of ``isfinite(x).all()``'s time.
    """
    bad = []
    for key in model_state:
        value = state_dict.get(key)
        if (torch.is_tensor(value) and value.is_floating_point()
                and value.shape == model_state[key].shape
                and not bool(torch.isfinite(value.sum()))):
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f'{key} ({count} of {value.numel()})')
    if not bad:
        return None
    return f'{_counted(len(bad), "tensor")} with NaN or Inf values: {listed(bad, 3)}'


def model_fit_problems(model, state_dict, checkpoint=None):
    """What keeps ``state_dict`` from being exactly ``model``'s weights.

    Args:
        model (nn.Module): the task model built from the config.
        state_dict (dict): from :func:`model_state_dict_of`.
        checkpoint (dict | None): the loaded file, to name its released form.

    Returns:
        list[str]: one summary per problem (the backbone arch check may add
        indented detail lines); empty when every tensor fits.
    """
    task = _task_problem(model, state_dict, checkpoint)
    if task is not None:
        return [task]  # key by key, another task's checkpoint says nothing more
    model_state = model.state_dict()
    problems = []
    backbone = _backbone_problem(model, state_dict)
    if backbone is not None:
        problems.append(backbone)
    problems += _key_problems(model_state, state_dict,
                              skip_prefix='backbone.' if backbone else None)
    nonfinite = _nonfinite_problem(model_state, state_dict)
    if nonfinite is not None:
        problems.append(nonfinite)
    return problems


def check_model_fit(model, state_dict, source, checkpoint=None):
    """Raise ``InputError`` unless ``state_dict`` fits ``model`` exactly; with
    partial loading allowed, log the problems as a warning instead.

    Args:
        source (str): the checkpoint and config, as the message names them,
            e.g. ``"checkpoint 'x.pth' (for configs/...py)"``.

    Returns:
        bool: True when everything fits (the model can be loaded strictly).
    """
    problems = model_fit_problems(model, state_dict, checkpoint)
    if not problems:
        return True
    summary = '; '.join(problem.splitlines()[0] for problem in problems)
    message = f'{source} does not fit the config\'s {_describe(model)}: {summary}'
    if partial_load_allowed():
        print_log(f'{message} ({ALLOW_PARTIAL_LOAD_ENV}=1: loading the tensors that fit)',
                  logger='current', level=logging.WARNING)
        return False
    # one line; only the backbone's arch check adds a few lines of detail
    details = [line.strip() for problem in problems
               for line in problem.splitlines()[1:] if line.strip()]
    raise InputError('\n  '.join([f'{message} ({PARTIAL_LOAD_HINT})'] + details))


def load_model_checkpoint(model, checkpoint, source):
    """Check ``checkpoint`` (a loaded file) against ``model`` and load it.

    Returns:
        dict: the state dict that was loaded (strictly, or with partial loading
        allowed, the tensors that fit; mmengine's loader logs what it skipped).
    """
    from mmengine.runner import load_state_dict
    state_dict = model_state_dict_of(checkpoint, model)
    strict = check_model_fit(model, state_dict, source, checkpoint)
    load_state_dict(model, state_dict, strict=strict, logger='current')
    return state_dict


__all__ = ['ALLOW_PARTIAL_LOAD_ENV', 'partial_load_allowed', 'model_task',
           'checkpoint_task', 'model_state_dict_of', 'model_fit_problems',
           'check_model_fit', 'load_model_checkpoint']
