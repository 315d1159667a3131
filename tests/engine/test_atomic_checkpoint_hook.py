"""AtomicCheckpointHook on a toy run, in seconds: each checkpoint and
``last_checkpoint`` are renamed into place whole, and the checkpoints they
outdate are removed only after that. (A save interrupted by a kill, Ctrl-C or
a full disk, and the resume after it: tests/tools/test_interrupted_save.py.)"""
import os
import os.path as osp

import pytest
import torch
from mmengine.registry import HOOKS

import mmspatial.engine  # noqa: F401  (registers the hook)
from mmspatial.engine.hooks.atomic_checkpoint_hook import (AtomicCheckpointHook,
                                                           AtomicLocalBackend)

from .toy_training import toy_runner

REAL_REPLACE = os.replace


@pytest.fixture
def file_events(monkeypatch):
    """What happens to checkpoints and last_checkpoint, in order: ('replace', name)
    when a file is renamed into place, ('remove', name) when one is removed."""
    events = []

    def replace(src, dst, *args, **kwargs):
        REAL_REPLACE(src, dst, *args, **kwargs)
        events.append(('replace', osp.basename(dst)))

    def remove(backend, path):
        events.append(('remove', osp.basename(path)))
        os.remove(path)

    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(AtomicLocalBackend, 'remove', remove)
    return events


def checkpoint_events(events):
    return [(what, name) for what, name in events
            if name.endswith('.pth') or name == 'last_checkpoint']


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.mark.parametrize('scope', ['mmengine', 'mmdet', 'mmseg', 'mmpretrain'])
def test_registered_for_every_scope(scope):
    """The shipped configs build it from their library's registry."""
    registry = HOOKS if scope == 'mmengine' else pytest.importorskip(f'{scope}.registry').HOOKS
    hook = registry.build(dict(type='AtomicCheckpointHook', interval=2, _scope_=scope))
    assert isinstance(hook, AtomicCheckpointHook)


def test_outdated_checkpoint_is_removed_after_the_new_one_is_in_place(tmp_path, file_events):
    runner = toy_runner(tmp_path / 'work', checkpoint=dict(interval=2, max_keep_ckpts=1))
    runner.train()
    assert checkpoint_events(file_events) == [
        ('replace', 'iter_2.pth'), ('replace', 'last_checkpoint'),
        ('replace', 'iter_4.pth'), ('replace', 'last_checkpoint'), ('remove', 'iter_2.pth'),
        ('replace', 'iter_6.pth'), ('replace', 'last_checkpoint'), ('remove', 'iter_4.pth')]
    work_dir = tmp_path / 'work'
    assert sorted(p for p in os.listdir(work_dir) if p.endswith('.pth')) == ['iter_6.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_6.pth')
    message_hub = load(work_dir / 'iter_6.pth')['message_hub']['runtime_info']
    assert message_hub['keep_ckpt_ids'] == [6]  # a resumed run removes the rest


def test_previous_best_is_removed_after_the_new_best_is_in_place(tmp_path, file_events):
    runner = toy_runner(tmp_path / 'work', validate=True,
                        checkpoint=dict(interval=2, max_keep_ckpts=1, save_best='acc'))
    runner.train()
    events = checkpoint_events(file_events)
    for older, newer in [(2, 4), (4, 6)]:
        new_best = events.index(('replace', f'best_acc_iter_{newer}.pth'))
        assert events.index(('remove', f'best_acc_iter_{older}.pth')) > new_best
    files = sorted(p for p in os.listdir(tmp_path / 'work') if p.endswith('.pth'))
    assert files == ['best_acc_iter_6.pth', 'iter_6.pth']


def test_save_now_saves_like_the_schedule(tmp_path, file_events):
    """Outside the schedule (a run stopped early): the iterations done so far,
    atomically, named in last_checkpoint, the outdated one removed."""
    runner = toy_runner(tmp_path / 'work', max_iters=3,
                        checkpoint=dict(interval=2, max_keep_ckpts=1, save_last=False))
    runner.train()
    hook, = [h for h in runner.hooks if isinstance(h, AtomicCheckpointHook)]
    hook.save_now(runner)
    assert checkpoint_events(file_events)[2:] == [
        ('replace', 'iter_3.pth'), ('replace', 'last_checkpoint'), ('remove', 'iter_2.pth')]
    work_dir = tmp_path / 'work'
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_3.pth')
    assert load(work_dir / 'iter_3.pth')['meta']['iter'] == 3


def test_leftovers_of_interrupted_saves_are_removed(tmp_path):
    """A kill during a write leaves its temporary file: the next run removes
    those of checkpoints and last_checkpoint, nothing else."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    leftovers = ['.iter_4.pth.k2j4x.tmp', '.best_acc_iter_2.pth.a8d.tmp',
                 '.last_checkpoint.83hd.tmp']
    unrelated = ['.notes.txt.tmp', 'iter_notes.tmp', '.iter_4.pth.k2j4x.tmp.keep']
    for name in leftovers + unrelated:
        (work_dir / name).write_bytes(b'partial')
    toy_runner(work_dir, max_iters=2, checkpoint=dict(interval=2)).train()
    assert sorted(p for p in os.listdir(work_dir) if 'tmp' in p) == sorted(unrelated)
