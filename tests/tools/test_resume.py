"""A run resumed from a checkpoint ends with the uninterrupted run's weights,
bit for bit on the CPU, for both demo configs.

Each config (small backbone, 64 px images, 4 train / 2 val) trains 6
iterations through ``tools/train.py``, saving and validating every 3; a
second run resumes from the checkpoint of iteration 3 and trains to 6. The
demo configs enable ``RandomStateHook``, which stores the random states in the
checkpoint: without it the resumed run draws other drop-path masks, RoI
samples and flips (the weights then differ in most tensors). Both runs cross
epochs of the 4-image data set, and the first one validates at iteration 3,
where it saves, which the resumed one does not.
"""
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402

from .helpers import (REPO_ROOT, dump, shrink, small_images,  # noqa: E402
                      small_train_images, use_data)

DEMO_CONFIGS = {
    'detection': 'configs/detection/demo/maskrcnn_spatialmamba_t_synthetic.py',
    'segmentation': 'configs/segmentation/demo/upernet_spatialmamba_t_synthetic.py',
}


def small_demo_config(task, data, path):
    cfg = Config.fromfile(osp.join(REPO_ROOT, DEMO_CONFIGS[task]))
    cfg = small_train_images(small_images(shrink(use_data(cfg, data))))
    cfg.train_cfg.max_iters = 6
    cfg.train_cfg.val_interval = 3
    cfg.default_hooks.checkpoint.interval = 3
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    cfg.default_hooks.logger.interval = 1
    return dump(cfg, path)


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='bit for bit is a CPU property: on a GPU the Runner trains with '
                    'CUDA kernels that add in varying order (RoIAlign backward, atomics)')
@pytest.mark.parametrize('task', DEMO_CONFIGS)
def test_resumed_run_ends_with_the_uninterrupted_runs_weights(task, tools, data, tmp_path):
    train = tools('train')
    config = small_demo_config(task, data, tmp_path / 'demo.py')
    assert Config.fromfile(config).custom_hooks == [dict(type='RandomStateHook')]
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    train.main([config, '--work-dir', str(whole),
                '--cfg-options', 'experiment_name=whole'])
    train.main([config, '--work-dir', str(resumed), '--resume', str(whole / 'iter_3.pth'),
                '--cfg-options', 'experiment_name=resumed'])

    at_3, expected, actual = (weights(whole / 'iter_3.pth'), weights(whole / 'iter_6.pth'),
                              weights(resumed / 'iter_6.pth'))
    assert expected.keys() == actual.keys()
    moved = [name for name in expected if not torch.equal(expected[name], at_3[name])]
    assert len(moved) > len(expected) // 2, 'iterations 4-6 should change the weights'
    differ = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not differ, f'{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:3]}'
