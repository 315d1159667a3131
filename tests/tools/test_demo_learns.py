"""The demo learns: a short segmentation demo lowers the loss and raises the
validation mIoU (slow: minutes on a 2-core CPU, the longer the busier it is).

``tools/demo.py --task segmentation`` as a user runs it, shortened: UperNet
over Spatial-Mamba-T (the demo config's model, optimizer and schedule,
stretched to 60 iterations of 2 images), 64 px images, 32 train / 8 val
images of the synthetic shapes, one thread.

How the margins were chosen: the same run with three seeds (0, 1, 2 for both
the data, ``--seed``, and the training, ``randomness.seed``; the test runs
seed 0) raised the mIoU from 2.0 / 0.3 / 0.6 to 17.6 / 24.4 / 15.9, gains of
15.3 to 24.1 points; the mean logged loss of the last quarter of the run was
0.48 / 0.47 / 0.50 times that of the first quarter. The test asks for a gain
of 5 points (a third of the smallest) and a ratio of 0.75 (half-way from the
largest to no fall at all).
"""
import glob
import json
import os.path as osp

import pytest

pytest.importorskip('mmseg')

ITERS = 60
IMAGE_SIZE = 64
NUM_TRAIN, NUM_VAL = 32, 8
MIOU_GAIN = 5.0       # points of mIoU, after training minus before
LOSS_RATIO = 0.75     # mean loss of the last logged quarter over the first's


def logged_losses(work_dir):
    """(step, loss) pairs of the run, from mmengine's scalars.json."""
    scalars, = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        records = [json.loads(line) for line in f]
    return [(r['step'], r['loss']) for r in records if 'loss' in r]


def test_segmentation_demo_learns(tools, tmp_path):
    demo = tools('demo')
    demo.main([
        '--task', 'segmentation', '--iters', str(ITERS), '--image-size', str(IMAGE_SIZE),
        '--num-train', str(NUM_TRAIN), '--num-val', str(NUM_VAL),
        '--data-root', str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'work'),
        '--max-minutes', '60',  # never cut short here: the test's timeout bounds it
        '--cfg-options', 'default_hooks.logger.interval=5'])
    with open(tmp_path / 'work' / 'summary.json') as f:
        result = json.load(f)['segmentation']
    assert result['iterations'] == ITERS and not result['stopped_early']

    miou = result['metrics']['mIoU']
    assert miou['after'] >= miou['before'] + MIOU_GAIN, miou
    losses = [loss for _, loss in logged_losses(result['work_dir'])]
    assert len(losses) == ITERS // 5
    quarter = max(1, len(losses) // 4)
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    assert last <= LOSS_RATIO * first, losses
