"""``--resume``: which checkpoint a training run continues from, checked.

mmdet's meaning is kept: ``--resume`` alone resumes if it can (the work dir's
``last_checkpoint``) and otherwise starts from scratch, saying so; ``--resume
FILE`` must name a checkpoint with training state. Each problem is one
:class:`~mmspatial.errors.InputError` line instead of a ``KeyError`` deep in
the Runner.
"""
import os.path as osp

from mmengine.logging import print_log

from ..engine.hooks.atomic_checkpoint_hook import LAST_CHECKPOINT
from ..errors import InputError, MissingFileError
from ..models.checkpoint import check_resumable


def checkpoint_to_resume(work_dir, requested):
    """The checkpoint ``--resume`` continues from, or None to start afresh.

    Args:
        work_dir (str): the run's work dir.
        requested (str): ``'auto'`` for a bare ``--resume``, else the file.

    Raises:
        InputError: the named file is missing or holds weights only, or the
            work dir's ``last_checkpoint`` is empty or names a missing file.
    """
    if requested != 'auto':
        _check_resumable_file(requested, 'given on the command line')
        return requested
    record = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(record):
        print_log(f'--resume: no checkpoint to resume in {work_dir!r} (it has no '
                  f'{LAST_CHECKPOINT} file); training starts from scratch',
                  logger='current', level=30)
        return None
    with open(record) as file:
        path = file.read().strip()
    if not path:
        raise InputError(f'--resume: {record!r} is empty; it should name the '
                         f'checkpoint to resume from: remove it to start from scratch, '
                         f'or give the checkpoint with --resume FILE')
    _check_resumable_file(path, f'named by {record!r}')
    return path


def _check_resumable_file(path, named_by):
    if not osp.isfile(path):
        state = 'is not a file' if osp.exists(path) else 'does not exist'
        raise MissingFileError(f'--resume: checkpoint {path!r} ({named_by}) {state}')
    check_resumable(path)  # a .safetensors file holds weights only


def check_training_state(checkpoint, path):
    """Raise unless ``checkpoint`` (loaded from ``path``) holds what mmengine's
    Runner resumes: ``meta`` with the epoch and iteration it stopped at."""
    meta = checkpoint.get('meta')
    missing = [key for key in ('epoch', 'iter')
               if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise InputError(f'cannot resume from {path!r}: it holds no training state '
                         f'(no meta.{" / meta.".join(missing)}; released and converted '
                         f'checkpoints hold weights only); start from its weights with '
                         f'--cfg-options load_from={path}')
