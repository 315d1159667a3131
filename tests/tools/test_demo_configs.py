"""The demo configs train and evaluate through mmengine's Runner, in seconds.

Each config runs once, through ``tools/demo.py`` (which builds the Runner with
``Runner.from_cfg`` and adds only its evaluation/time-budget hook), with tiny
settings given the way a user would: 96 px images, 4 train / 2 val images,
2 iterations. That covers the config, the data loading, the metric, the
evaluation before and after training, the drawings and the summary, and keeps
the module to a minute or two on a 2-core CPU.
"""
import json
import os.path as osp

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402

from .helpers import REPO_ROOT  # noqa: E402

DET_CONFIG = osp.join(
    REPO_ROOT, 'configs/detection/demo/maskrcnn_spatialmamba_t_synthetic.py')
SEG_CONFIG = osp.join(
    REPO_ROOT, 'configs/segmentation/demo/upernet_spatialmamba_t_synthetic.py')
ITERS = 2


@pytest.fixture(scope='module')
def demo(tools):
    """``tools/demo.py`` as a namespace (run without its ``__main__`` block)."""
    return tools('demo')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp('synthetic')  # the demo fills it


def _run_demo(demo, task, data_root, work_dir):
    demo.main([
        '--task', task, '--iters', str(ITERS), '--image-size', '96',
        '--num-train', '4', '--num-val', '2', '--data-root', str(data_root),
        '--work-dir', str(work_dir)
    ])
    with open(work_dir / 'summary.json') as f:
        result = json.load(f)[task]
    assert result['iterations'] == ITERS
    assert result['planned_iterations'] == ITERS
    assert not result['stopped_early']
    assert (result['train_images'], result['val_images']) == (4, 2)
    assert osp.getsize(result['predictions_png']) > 0
    assert osp.getsize(result['loss_png']) > 0
    assert osp.isfile(work_dir / 'summary.md')
    assert osp.isfile(osp.join(result['work_dir'], f'iter_{ITERS}.pth'))
    return result


def test_detection_demo_config(demo, data_root, tmp_path):
    cfg = Config.fromfile(DET_CONFIG)
    # what the demo keeps from the real config
    assert cfg.model.backbone.type == 'SpatialMamba'
    assert cfg.model.backbone.arch == 'tiny'
    assert cfg.model.neck.in_channels == [64, 128, 256, 512]
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    # what it changes
    assert cfg.model.backbone.init_cfg is None  # nothing to download
    assert cfg.model.roi_head.bbox_head.num_classes == 4
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert cfg.val_evaluator.metric == ['bbox', 'segm']
    assert cfg.data_root == 'data/synthetic/coco/'

    result = _run_demo(demo, 'detection', data_root, tmp_path)
    metrics = result['metrics']
    assert {'box mAP', 'mask mAP'} <= set(metrics)
    for value in metrics.values():
        assert 0 <= value['before'] <= 100 and 0 <= value['after'] <= 100


def test_segmentation_demo_config(demo, data_root, tmp_path):
    cfg = Config.fromfile(SEG_CONFIG)
    assert cfg.model.backbone.type == 'SpatialMamba'
    assert cfg.model.backbone.arch == 'tiny'
    assert cfg.model.decode_head.in_channels == [64, 128, 256, 512]
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.decode_head.norm_cfg.type == 'BN'  # one CPU process
    assert cfg.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cfg.model.decode_head.num_classes == 5
    assert cfg.train_dataloader.dataset.type == 'BaseSegDataset'
    assert cfg.train_dataloader.dataset.reduce_zero_label is False
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert cfg.data_root == 'data/synthetic/seg/'

    result = _run_demo(demo, 'segmentation', data_root, tmp_path)
    metrics = result['metrics']
    assert 'mIoU' in metrics
    for value in metrics.values():
        assert 0 <= value['before'] <= 100 and 0 <= value['after'] <= 100


def test_set_iters_stretches_the_schedule(demo):
    cfg = Config.fromfile(DET_CONFIG)
    old = cfg.train_cfg.max_iters
    demo.set_iters(cfg, old * 2)
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == old * 2
    assert cfg.default_hooks.checkpoint.interval == old * 2
    assert cfg.param_scheduler[-1].end == old * 2
    assert cfg.param_scheduler[0].end == 2 * Config.fromfile(
        DET_CONFIG).param_scheduler[0].end


def test_time_budget_stops_training(demo, data_root, tmp_path):
    """Past ``--max-minutes`` the demo stops, saves, evaluates and says so."""
    demo.main([
        '--task', 'segmentation', '--iters', '50', '--max-minutes', '0.01',
        '--image-size', '96', '--num-train', '4', '--num-val', '2',
        '--data-root', str(data_root), '--work-dir', str(tmp_path)
    ])
    with open(tmp_path / 'summary.json') as f:
        result = json.load(f)['segmentation']
    assert result['stopped_early']
    assert result['iterations'] == 1 and result['planned_iterations'] == 50
    assert osp.isfile(osp.join(result['work_dir'], 'iter_1.pth'))
    assert 'stopped by the time budget' in (tmp_path / 'summary.md').read_text()
