"""Random states in the checkpoint, so that a resumed run repeats the original.

mmengine's checkpoints carry the weights, the optimizer, the schedulers and the
seed, but not the state of the random generators: a run resumed from iteration
k reseeds them and then draws other drop-path masks, RoI samples and flips
than the uninterrupted run drew after iteration k. ``RandomStateHook`` stores
Python's, numpy's and torch's (CPU and current CUDA device) generator states in
``checkpoint['meta']['random_states']`` and puts them back when the run
resumes, at the point of the run where they were taken.
"""
import logging
import random

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from ...registry import HOOKS, ROOT_HOOKS

META_KEY = 'random_states'


def get_random_states():
    """The states of Python's, numpy's and torch's global generators.

    Tensors and built-in types only (numpy's key as an int64 tensor), so that
    the checkpoint's meta stays loadable with ``torch.load(weights_only=True)``.
    """
    numpy_state = np.random.get_state(legacy=False)
    states = dict(
        python=random.getstate(),
        numpy=dict(numpy_state, state=dict(
            key=torch.from_numpy(numpy_state['state']['key'].astype(np.int64)),
            pos=numpy_state['state']['pos'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def set_random_states(states):
    """Put back what :func:`get_random_states` returned."""
    random.setstate(states['python'])
    numpy_state = states['numpy']
    np.random.set_state(dict(numpy_state, state=dict(
        key=numpy_state['state']['key'].numpy().astype(np.uint32),
        pos=numpy_state['state']['pos'])))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states:
        torch.cuda.set_rng_state(states['cuda'])


class _RestoreAfterReplay:
    """The iteration-based train loop's data iterator, wrapped so that the
    random states are put back after the loop has replayed the ``replay``
    batches trained before the checkpoint (mmengine advances the data that
    way on resume, drawing random flips on the way) and before it draws the
    first new batch, where the uninterrupted run stood when it saved."""

    def __init__(self, loop, replay, states):
        self.loop = loop
        self.iterator = loop.dataloader_iterator
        self.replay = replay
        self.states = states

    def __iter__(self):
        return self

    def __next__(self):
        if self.replay == 0:
            set_random_states(self.states)
            self.loop.dataloader_iterator = self.iterator
        else:
            self.replay -= 1
        return next(self.iterator)


@ROOT_HOOKS.register_module()
@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random generators' states with every checkpoint and restore
    them on resume; keep validation from drawing on them.

    With it, a single-process run resumed from a checkpoint of iteration (or
    epoch) k continues with the random numbers the uninterrupted run used
    after k: on the CPU the two end with the same weights, bit for bit. Two
    more things make that hold:

    - Validation leaves the generators as it found them (creating the
      validation data iterator alone draws from torch's), so a run that
      validates where it saves continues like one resumed from that save.
    - Loading a checkpoint without resuming (``load_from``) restores nothing.

    Every process has its own generators but only rank 0 writes the
    checkpoint, so in distributed runs the states are neither saved nor
    restored (a warning says so); set ``randomness=dict(seed=...)`` there.

    Enable it in a config with ``custom_hooks = [dict(type='RandomStateHook')]``.
    """

    priority = 'VERY_LOW'  # restore after the other hooks have set up the epoch

    def __init__(self):
        self._pending = None    # (iteration, states) of the loaded checkpoint
        self._val_states = None

    def before_run(self, runner):
        if get_world_size() > 1:
            print_log('RandomStateHook: a distributed run keeps no random states in '
                      'its checkpoints; a resumed run will draw other random numbers '
                      'than the uninterrupted one', logger='current', level=logging.WARNING)

    def before_save_checkpoint(self, runner, checkpoint):
        if get_world_size() == 1:  # a save during validation keeps its start
            states = self._val_states or get_random_states()
            checkpoint.setdefault('meta', {})[META_KEY] = states

    def after_load_checkpoint(self, runner, checkpoint):
        meta = checkpoint.get('meta', {})
        if META_KEY in meta and get_world_size() == 1:
            self._pending = (meta.get('iter'), meta[META_KEY])

    def before_train_epoch(self, runner):
        if self._pending is None:
            return
        iteration, states = self._pending
        self._pending = None
        if not iteration or runner.iter != iteration:
            return  # loaded as weights (load_from), not resumed
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _RestoreAfterReplay(loop, runner.iter, states)
        else:  # epoch-based: the new epoch's data iterator is made after this hook
            set_random_states(states)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        loop = runner.train_loop
        if isinstance(getattr(loop, 'dataloader_iterator', None), _RestoreAfterReplay):
            raise RuntimeError(
                'RandomStateHook: the train loop drew a new batch before replaying '
                f'the {runner.iter} batches of the resumed checkpoint, so the '
                'random states were not restored where they were saved')

    def before_val_epoch(self, runner):
        self._val_states = get_random_states()

    def after_val_epoch(self, runner, metrics=None):
        if self._val_states is not None:
            set_random_states(self._val_states)
            self._val_states = None
