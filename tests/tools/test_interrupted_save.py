"""A save interrupted inside its write loses no progress: ``tools/train.py
--resume`` continues from the last good checkpoint and ends bit for bit where
the uninterrupted run ends.

The run: an mmpretrain classifier over the small Spatial-Mamba, 32 px images,
6 iterations of 2 images, a checkpoint every 2 iterations with
``max_keep_ckpts=1`` (what the demo configs keep) through the shipped configs'
crash-safe checkpoint hook, the random states in the checkpoints. A test-only
hook (tests/tools/checkpoint_faults.py) breaks the save of iteration 4 after
the first bytes of the file: SIGKILL, SIGINT, or a file-size limit that makes
the write fail half-way (a full disk). With mmengine's own CheckpointHook the
same faults leave only a half-written iter_4.pth: it removes iteration 2's
checkpoint before it writes the new one in place.

Also: a second training in a work dir in use stops, naming the first.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip('mmpretrain')

from mmspatial.engine.work_dir_lock import work_dir_lock  # noqa: E402
from mmspatial.errors import InputError  # noqa: E402
from mmspatial.fileio.atomic import temporary_files  # noqa: E402

from .helpers import REPO_ROOT, SMALL_ARCH, SMALL_DIMS  # noqa: E402

IMAGE = 32
CONFIG = f"""
_base_ = [{osp.join(REPO_ROOT, 'configs/_base_/crash_safe_checkpoint.py')!r}]
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmspatial'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='SpatialMamba', arch={SMALL_ARCH!r}, out_indices=(3, ),
                  drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels={SMALL_DIMS[-1]},
              loss=dict(type='CrossEntropyLoss')),
    data_preprocessor=dict(mean=[128.] * 3, std=[64.] * 3, to_rgb=True))
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ImageNet', data_root=DATA_ROOT, split='train',
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='RandomResizedCrop', scale={IMAGE}),
                           dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                           dict(type='PackInputs')]))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=6)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=6)]
default_hooks = dict(
    checkpoint=dict(_base_.crash_safe_checkpoint, by_epoch=False, interval=2,
                    max_keep_ckpts=1),
    logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='RandomStateHook')]
randomness = dict(seed=0)
"""


def write_config(path, data_root, fault=None, report=None):
    text = CONFIG.replace('DATA_ROOT', repr(str(data_root)))
    if fault:
        text += ("custom_imports = dict(imports=['mmspatial', 'tests.tools.checkpoint_faults'],"
                 " allow_failed_imports=False)\n"
                 "custom_hooks = [dict(type='RandomStateHook'), dict(type='CheckpointWriteFault',"
                 f" fault={fault!r}, report={str(report)!r}, at_save=2)]\n")
    path.write_text(text)
    return str(path)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def uninterrupted(tools, data, tmp_path_factory):
    """The run without a fault: its config and final checkpoint."""
    root = tmp_path_factory.mktemp('uninterrupted')
    config = write_config(root / 'toy.py', data / 'imagenet')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the other runs (the one_thread fixture, OMP_NUM_THREADS)
    try:
        tools('train').main([config, '--work-dir', str(root / 'work'),
                             '--cfg-options', 'experiment_name=uninterrupted'])
    finally:
        torch.set_num_threads(threads)
    return config, load(root / 'work' / 'iter_6.pth')


def interrupted_run(config, work_dir):
    """``tools/train.py`` in a child process, as a user runs it."""
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config,
         '--work-dir', str(work_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='bit for bit is a CPU property (see tests/tools/test_resume.py)')
@pytest.mark.parametrize('fault', ['sigkill', 'sigint', 'fsize'])
def test_resume_after_a_save_interrupted_inside_its_write(fault, uninterrupted, tools, data,
                                                          tmp_path):
    config, expected = uninterrupted
    work_dir, report = tmp_path / 'work', tmp_path / 'fault.json'
    faulty = write_config(tmp_path / 'faulty.py', data / 'imagenet', fault, report)
    result = interrupted_run(faulty, work_dir)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert 'Iter(train) [4/6]' in log and 'Iter(train) [5/6]' not in log, log[-3000:]
    struck = json.loads(report.read_text())
    if fault == 'fsize':  # half the checkpoint's bytes fit, then the write failed
        assert 'File too large' in log, log[-3000:]
        assert 0 < struck['limit'] < struck['total']
    else:  # the signal came after the first bytes of iteration 4's checkpoint
        assert osp.basename(struck['path']).startswith(('iter_4.pth', '.iter_4.pth.'))
        assert 0 < struck['written'] < struck['total']

    # what survives: iteration 2's checkpoint, whole, named as the last one
    assert sorted(p for p in os.listdir(work_dir) if p.endswith('.pth')) == ['iter_2.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_2.pth')
    assert load(work_dir / 'iter_2.pth')['meta']['iter'] == 2
    # iteration 4's was written to a temporary file, which a kill leaves behind
    leftovers = temporary_files(work_dir / 'iter_4.pth')
    if fault == 'sigkill':
        assert result.returncode == -signal.SIGKILL
        assert leftovers == [struck['path']]
        assert osp.getsize(leftovers[0]) == struck['written']
    else:
        assert not leftovers  # removed on the way out

    tools('train').main([config, '--work-dir', str(work_dir), '--resume',
                         '--cfg-options', f'experiment_name=resumed_{fault}'])
    assert sorted(p for p in os.listdir(work_dir) if p.endswith('.pth')) == ['iter_6.pth']
    assert not temporary_files(work_dir / 'iter_*.pth')  # the kill's leftover is gone
    assert not (work_dir / 'train.lock').exists()
    actual = load(work_dir / 'iter_6.pth')
    assert actual['meta']['iter'] == 6
    assert expected['state_dict'].keys() == actual['state_dict'].keys()
    differ = [k for k, v in expected['state_dict'].items()
              if not torch.equal(v, actual['state_dict'][k])]
    assert not differ, f'{len(differ)} of {len(expected["state_dict"])} tensors differ'


def test_second_training_in_a_work_dir_in_use_is_refused(tools, data, tmp_path):
    """While a training holds the work dir (here this process holds its lock),
    a second one stops before it builds anything, naming the first."""
    config = write_config(tmp_path / 'toy.py', data / 'imagenet')
    work_dir = tmp_path / 'work'
    with work_dir_lock(str(work_dir)):
        with pytest.raises(InputError, match=rf'in use by another training: pid {os.getpid()} '
                           r'on host .* since .*train\.lock'):
            tools('train').main([config, '--work-dir', str(work_dir)])
        assert os.listdir(work_dir) == ['train.lock']  # no run dir, no log
