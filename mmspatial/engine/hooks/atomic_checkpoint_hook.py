"""mmengine's ``CheckpointHook``, made crash-safe.

mmengine 0.10.7's hook deletes the oldest checkpoint (``max_keep_ckpts``)
before it writes the new one in place, and rewrites ``last_checkpoint`` after
it: a kill, Ctrl-C or full disk during the write leaves no usable checkpoint.
``AtomicCheckpointHook`` saves in this order instead:

1. the checkpoint, to a temporary file beside it, fsynced and ``os.replace``d
   into place (:func:`mmspatial.fileio.atomic_write`, through the file
   backend ``'atomic_local'`` that the Runner's save is given);
2. ``last_checkpoint``, the same way;
3. only then, the checkpoints that ``max_keep_ckpts`` or a new best one make
   outdated.

At every moment the work dir holds a whole checkpoint that ``last_checkpoint``
names, so ``--resume`` continues from the last good one.
"""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.utils import mkdir_or_exist

from ...fileio.atomic import atomic_write, atomic_write_text, temporary_files
from ...registry import HOOKS, ROOT_HOOKS

ATOMIC_BACKEND = 'atomic_local'
LAST_CHECKPOINT = 'last_checkpoint'  # the file mmengine's resume reads


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic: a reader sees the
    old file or the whole new one, never part of it."""

    def put(self, obj, filepath):
        mkdir_or_exist(osp.dirname(osp.abspath(filepath)))
        with atomic_write(filepath, 'wb') as file:
            file.write(obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        mkdir_or_exist(osp.dirname(osp.abspath(filepath)))
        atomic_write_text(filepath, obj, encoding=encoding)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are recorded, not done."""

    def __init__(self, backend):
        self.backend = backend
        self.removals = []

    def remove(self, path):
        self.removals.append(path)

    def rmtree(self, path):
        self.removals.append(path)

    def __getattr__(self, name):
        return getattr(self.backend, name)


@ROOT_HOOKS.register_module()
@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments, same schedule, ``save_best`` and
    ``out_dir`` included) that never leaves the work dir without a whole
    checkpoint: see the module docstring.

    Checkpoints in a local directory are written atomically; with
    ``backend_args`` or ``file_client_args`` naming another storage (e.g.
    ``s3://``), that storage writes them as it does for mmengine's hook. The
    order (new file, then ``last_checkpoint``, then removals) holds for both.

    ``save_now(runner)`` saves outside the schedule, the same way (e.g. when a
    run stops early).
    """

    def before_train(self, runner):
        super().before_train(runner)
        if self.file_client_args is None and type(self.file_backend) is LocalBackend:
            self.backend_args = dict(backend=ATOMIC_BACKEND)
            self.file_backend = get_file_backend(self.out_dir,
                                                 backend_args=self.backend_args)
        if isinstance(self.file_backend, AtomicLocalBackend) and is_main_process():
            self._remove_leftovers(runner)

    def _remove_leftovers(self, runner):
        """Temporary files of saves that a kill interrupted."""
        patterns = [osp.join(self.out_dir, self.filename_tmpl.format('*')),
                    osp.join(self.out_dir, 'best_*'),
                    osp.join(runner.work_dir, LAST_CHECKPOINT)]
        for pattern in patterns:
            for path in temporary_files(pattern):
                runner.logger.info(f'removing {path}, left by an interrupted save')
                os.remove(path)

    def save_now(self, runner):
        """Save the state after the iterations (or epochs, ``by_epoch``) done so
        far as the scheduled saves do: atomically, named in ``last_checkpoint``,
        the oldest removed beyond ``max_keep_ckpts``."""
        step = runner.epoch if self.by_epoch else runner.iter
        self._save_checkpoint_with_step(runner, step,
                                        meta=dict(epoch=runner.epoch, iter=runner.iter))

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            # saved in the new checkpoint: a run resumed from it removes the rest
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, LAST_CHECKPOINT), self.last_ckpt)
        if outdated is not None:
            self._remove(self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(outdated)))

    def _save_best_checkpoint(self, runner, metrics):
        # mmengine removes the previous best checkpoint before it writes the new
        # one: record the removals and do them once the new files are in place.
        backend = self.file_backend
        self.file_backend = _DeferredRemoval(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
            removals = self.file_backend.removals
        finally:
            self.file_backend = backend
        current = {self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in removals:
            if path not in current:  # a save at the same step rewrote it
                self._remove(path)

    def _remove(self, path):
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed
            self.file_backend.rmtree(path)
