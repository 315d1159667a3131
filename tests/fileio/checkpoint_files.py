"""Checkpoint files of every kind the reader meets, written for the tests:
hostile ones whose unpickling creates a marker file, a released classifier
whose config is a yacs ``CfgNode`` (yacs not importable when it is read), and
a checkpoint of mmengine's Runner."""
import pathlib
import sys
import textwrap

import torch
from mmengine.runner import Runner

import mmspatial.engine.hooks  # noqa: F401  (registers RandomStateHook)

from ..engine.toy_training import CountingData, Regressor


class TouchOnLoad:
    """Unpickling this object calls ``pathlib.Path.touch(marker)``: what any
    code in a checkpoint could do, made harmless and visible."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker, )


class ExecOnLoad:
    """Unpickling this object runs ``exec`` on code that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


def hostile(state_dict, marker, payload=TouchOnLoad):
    """An OpenMMLab-form checkpoint of ``state_dict`` whose ``meta`` holds a
    payload that creates ``marker`` when unpickled."""
    return {'state_dict': {f'backbone.{k}': v for k, v in state_dict.items()},
            'meta': {'note': payload(marker)}}


YACS_CONFIG = '''
    class CfgNode(dict):
        """The parts of yacs's CfgNode that decide how it pickles: a dict
        subclass with its flags in the instance __dict__."""

        def __init__(self, init_dict=None):
            super().__init__(init_dict or {})
            self.__dict__['__immutable__'] = False
            self.__dict__['__deprecated_keys__'] = set()
            self.__dict__['__renamed_keys__'] = {}
            self.__dict__['__new_allowed__'] = False

        def freeze(self):
            self.__dict__['__immutable__'] = True
            for value in self.values():
                if isinstance(value, CfgNode):
                    value.freeze()
'''


def save_released_classifier(classifier_state, path, tmp_dir):
    """``torch.save`` a checkpoint of the reference classifier trainer: the
    model, optimizer, scheduler, scaler, EMA and its yacs ``config``.

    yacs is importable only while the file is written (a stand-in module in
    ``tmp_dir``); afterwards it is gone again, as it is for users.
    """
    package = pathlib.Path(tmp_dir) / 'fake_yacs' / 'yacs'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'config.py').write_text(textwrap.dedent(YACS_CONFIG))
    sys.path.insert(0, str(package.parent))
    try:
        from yacs.config import CfgNode
        config = CfgNode(dict(MODEL=CfgNode(dict(TYPE='spatialmamba', NAME='tiny',
                                                 DROP_PATH_RATE=0.2)),
                              TRAIN=CfgNode(dict(EPOCHS=300, BASE_LR=1e-3,
                                                 OPTIMIZER=CfgNode(dict(NAME='adamw'))))))
        config.freeze()
        parameter = torch.zeros(2, requires_grad=True)
        optimizer = torch.optim.AdamW([parameter])
        parameter.grad = torch.ones(2)
        optimizer.step()
        torch.save({'model': classifier_state,
                    'optimizer': optimizer.state_dict(),
                    'lr_scheduler': {'t_initial': 300, 'lr_min': 1e-5, 'base_values': [1e-3]},
                    'max_accuracy': 82.5, 'scaler': {'scale': 65536.0, 'growth_factor': 2.0},
                    'epoch': 299, 'config': config, 'steps': 1000,
                    'model_ema': dict(classifier_state), 'max_accuray_ema': 82.7}, path)
    finally:
        sys.path.remove(str(package.parent))
        for name in [name for name in sys.modules if name.split('.')[0] == 'yacs']:
            del sys.modules[name]


class _Data(CountingData):
    """The toy data, with the dataset meta a Runner checkpoint records."""
    metainfo = dict(classes=('circle', 'square'), palette=[(0, 0, 0), (255, 0, 0)])


def save_runner_checkpoint(work_dir):
    """Train a toy model for 2 iterations with mmengine's Runner and the
    project's hooks; the path of the checkpoint it saved."""
    runner = Runner(
        model=Regressor(), work_dir=str(work_dir), experiment_name=f'ckpt_{id(work_dir)}',
        default_scope='mmengine',
        train_dataloader=dict(dataset=_Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=2),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='RandomStateHook')], randomness=dict(seed=0))
    runner.train()
    return pathlib.Path(work_dir) / 'iter_2.pth'
