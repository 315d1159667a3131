"""A Runner that trains a toy regressor in a fraction of a second, for the tests
of hooks: mmengine's default scope, no data files."""
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.runner import Runner


class CountingData(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return dict(inputs=torch.full((4, ), float(index)))


class Regressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return list(out) if mode == 'predict' else out


class RisingAccuracy(BaseMetric):
    """``acc`` 1, 2, 3, ... at the successive evaluations: each one a new best."""

    def __init__(self):
        super().__init__()
        self.evaluations = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        self.evaluations += 1
        return dict(acc=float(self.evaluations))


def toy_runner(work_dir, max_iters=6, checkpoint=None, validate=False, **kwargs):
    """A Runner of ``max_iters`` iterations whose checkpoint hook is
    ``AtomicCheckpointHook`` with ``checkpoint`` (by iteration); with
    ``validate``, a validation (a new best ``acc``) every 2 iterations."""
    loader = dict(dataset=CountingData(), batch_size=2, num_workers=0,
                  collate_fn=dict(type='default_collate'))
    train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2)
    val = dict(val_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
               val_cfg=dict(), val_evaluator=Evaluator([RisingAccuracy()])) if validate else {}
    return Runner(
        model=Regressor(), work_dir=str(work_dir), experiment_name=work_dir.name,
        default_scope='mmengine',
        train_dataloader=dict(loader, sampler=dict(type='InfiniteSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)), train_cfg=train_cfg,
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                                           **(checkpoint or {}))),
        **val, **kwargs)
