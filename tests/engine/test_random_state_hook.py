"""RandomStateHook on a toy model, in seconds: epoch- and iteration-based
loops resume bit for bit, and loading weights (``load_from``) restores nothing.

The toy draws from every generator the hook keeps: its data from numpy and
Python's ``random`` (as augmentations do), its dropout from torch's.
(The demo configs are resumed in tests/tools/test_resume.py.)
"""
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmspatial.engine.hooks.random_state_hook import (META_KEY, get_random_states,
                                                      set_random_states)

TORCH_LOAD = torch.load


@pytest.fixture
def trust_checkpoints(monkeypatch):
    """mmengine loads with torch.load's default, weights_only since torch 2.6,
    which refuses the message hub mmengine itself saves; the tools trust the
    files they are given (tools/_checks.py), and so does this test."""
    monkeypatch.setattr(torch, 'load', lambda *args, **kwargs: TORCH_LOAD(
        *args, **dict(kwargs, weights_only=False)))


class NoisyData(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, index):
        noise = np.random.rand(4) + random.random()  # a random augmentation
        return dict(inputs=torch.tensor(noise, dtype=torch.float32) + 0.1 * index)


class DropoutRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.layers(inputs)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


def run(work_dir, by_epoch, resume_from=None, load_from=None, hook=True):
    loop = (dict(type='EpochBasedTrainLoop', max_epochs=4) if by_epoch else
            dict(type='IterBasedTrainLoop', max_iters=8))
    runner = Runner(
        model=DropoutRegressor(), work_dir=str(work_dir),
        experiment_name=work_dir.name, default_scope='mmengine',
        train_dataloader=dict(dataset=NoisyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler' if by_epoch else
                                           'InfiniteSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=loop,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=by_epoch,
                                           interval=2 if by_epoch else 4)),
        custom_hooks=[dict(type='RandomStateHook')] if hook else None,
        randomness=dict(seed=0),
        resume=resume_from is not None,
        load_from=resume_from or load_from)
    runner.train()
    return runner.model.state_dict(), torch.get_rng_state()


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epochs', 'iterations'])
def test_resumed_toy_run_repeats_the_uninterrupted_one(by_epoch, tmp_path,
                                                       trust_checkpoints):
    halfway = tmp_path / 'whole' / ('epoch_2.pth' if by_epoch else 'iter_4.pth')
    whole, _ = run(tmp_path / 'whole', by_epoch)
    resumed, _ = run(tmp_path / 'resumed', by_epoch, resume_from=str(halfway))
    unhooked, _ = run(tmp_path / 'unhooked', by_epoch, resume_from=str(halfway), hook=False)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not all(torch.equal(whole[k], unhooked[k]) for k in whole)  # the hook matters


def test_loading_weights_restores_no_random_state(tmp_path, trust_checkpoints):
    run(tmp_path / 'first', by_epoch=True)
    checkpoint = TORCH_LOAD(tmp_path / 'first' / 'epoch_4.pth', weights_only=False)
    assert META_KEY in checkpoint['meta']
    _, after_fresh = run(tmp_path / 'fresh', by_epoch=True)
    _, after_loaded = run(tmp_path / 'loaded', by_epoch=True,
                          load_from=str(tmp_path / 'first' / 'epoch_4.pth'))
    # both runs draw the same amount from the seed: the same state at the end,
    # unless the hook had put back the checkpoint's states
    assert torch.equal(after_fresh, after_loaded)


def test_states_round_trip_and_load_as_weights_only(tmp_path):
    states = get_random_states()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    torch.save(dict(meta={META_KEY: states}), tmp_path / 'states.pth')
    loaded = torch.load(tmp_path / 'states.pth', weights_only=True)['meta'][META_KEY]
    set_random_states(loaded)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])

