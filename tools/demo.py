"""Train and evaluate Spatial-Mamba-T on a synthetic data set, on a CPU, in minutes.

No download and no GPU: the demo draws a small data set of coloured shapes
(``mmspatial.datasets.synthetic``) in the real COCO and mmseg formats, then runs
the demo configs, which inherit the real configs and change only the data, the
image size, the schedule and the batch size:

- ``detection`` (default): Mask R-CNN + FPN over Spatial-Mamba-T,
  ``configs/detection/demo/maskrcnn_spatialmamba_t_synthetic.py``; COCO box and
  mask mAP (mmdet's ``CocoMetric``) of the untrained and of the trained model.
- ``segmentation``: UperNet over Spatial-Mamba-T,
  ``configs/segmentation/demo/upernet_spatialmamba_t_synthetic.py``; mIoU
  (mmseg's ``IoUMetric``) before and after.
- ``all``: both, one after the other.

Training is mmengine's ``Runner.from_cfg(cfg).train()``; the demo adds one hook
that evaluates the model once before the first iteration, records every
evaluation, and stops training early if the run would exceed ``--max-minutes``
(the iteration count itself is the config's ``train_cfg.max_iters``, or
``--iters``). Written under ``--work-dir`` (default ``work_dirs/demo``):

- ``summary.json`` and ``summary.md``: metrics before and after, timings;
- ``<task>_predictions.png``: ground truth and predictions on a few val images
  (mmdet's ``DetLocalVisualizer`` / mmseg's ``SegLocalVisualizer``);
- ``<task>_loss.png``: the training losses, from mmengine's ``scalars.json``;
- ``<task>/``: the runner's work dir (logs, last checkpoint).

Every file a crash could leave half-written is written atomically
(``mmspatial.fileio.atomic``); a run that the budget stops early saves its
checkpoint through the config's ``AtomicCheckpointHook``, which also names it
in ``last_checkpoint``.

Usage (from the repository root)::

    python tools/demo.py                        # detection
    python tools/demo.py --task segmentation    # UperNet
    python tools/demo.py --task all             # both, one after the other

The README's demo section has the measured times and metrics. A busier
machine makes the budget stop the training earlier (``stopped_early`` in the
summary), with lower scores.
"""
import json
import os
import os.path as osp
import time

import cv2
import mmcv
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmspatial.datasets.synthetic import (generate_synthetic_coco,
                                          generate_synthetic_seg)
from mmspatial.engine import AtomicCheckpointHook
from mmspatial.fileio.atomic import atomic_write, atomic_write_text
from mmspatial.utils import run_tool, tool_parser

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

TASKS = {
    'detection': dict(
        config='configs/detection/demo/maskrcnn_spatialmamba_t_synthetic.py',
        data='coco',
        ready='annotations/instances_val.json',
        generate=generate_synthetic_coco,
        # (metric key, label, scale to percent)
        metrics=[('coco/bbox_mAP', 'box mAP', 100),
                 ('coco/bbox_mAP_50', 'box mAP@50', 100),
                 ('coco/segm_mAP', 'mask mAP', 100),
                 ('coco/segm_mAP_50', 'mask mAP@50', 100)]),
    'segmentation': dict(
        config='configs/segmentation/demo/upernet_spatialmamba_t_synthetic.py',
        data='seg',
        ready='ann_dir/val',
        generate=generate_synthetic_seg,
        metrics=[('mIoU', 'mIoU', 1), ('mAcc', 'mAcc', 1),
                 ('aAcc', 'aAcc', 1)]),
}


class DemoHook(Hook):
    """Evaluate before training, record evaluations, keep to a time budget.

    Args:
        deadline (float): ``time.time()`` by which the task should be done.
            Training stops early when the remaining time would not cover the
            final evaluation (estimated from the one before training) and the
            drawings.
    """

    priority = 'LOWEST'  # after the other hooks have set the runner up

    def __init__(self, deadline):
        self.deadline = deadline
        self.evaluations = []  # (iteration, metrics)
        self.val_seconds = 0.
        self.train_seconds = 0.
        self.stopped_early = False

    def before_train(self, runner):
        start = time.time()
        runner.val_loop.run()  # the untrained model: what the training adds
        self.val_seconds = time.time() - start
        self._train_start = time.time()

    def after_val_epoch(self, runner, metrics=None):
        self.evaluations.append((runner.iter, dict(metrics or {})))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.train_seconds = time.time() - self._train_start
        reserve = 1.2 * self.val_seconds + 30
        if time.time() + reserve > self.deadline:
            runner.train_loop.stop_training = True

    def after_train(self, runner):
        if runner.iter < runner.max_iters:
            # stopped by the budget: the loop neither evaluated nor saved
            self.stopped_early = True
            runner.logger.warning(
                f'time budget reached: training stopped at iteration '
                f'{runner.iter} of {runner.max_iters}')
            checkpoint_hook(runner).save_now(runner)
        if not self.evaluations or self.evaluations[-1][0] != runner.iter:
            runner.val_loop.run()


def checkpoint_hook(runner):
    """The runner's ``AtomicCheckpointHook``, through which the demo saves."""
    for hook in runner.hooks:
        if isinstance(hook, AtomicCheckpointHook):
            return hook
    raise RuntimeError('the demo config has no AtomicCheckpointHook: '
                       'default_hooks.checkpoint must keep its type')


def write_png(path, image):
    """Write a BGR ``image`` as a PNG file, atomically."""
    ok, data = cv2.imencode('.png', image)
    if not ok:
        raise RuntimeError(f'could not encode {path} as PNG')
    with atomic_write(path, 'wb') as file:
        file.write(data.tobytes())


def set_data_root(cfg, data_root):
    """Point every data set of ``cfg`` (and the COCO metric) at ``data_root``."""
    data_root = data_root.rstrip('/') + '/'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name) is not None:
            cfg[name].dataset.data_root = data_root
    for name in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(name)
        if isinstance(evaluator, dict) and 'ann_file' in evaluator:
            evaluator.ann_file = osp.join(
                data_root, 'annotations', osp.basename(evaluator.ann_file))


def set_image_size(cfg, size):
    """Train and evaluate at ``size`` x ``size``: every Resize and the padding."""
    cfg.image_size = (size, size)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for transform in cfg[name].dataset.pipeline:
            if transform['type'] == 'Resize':
                transform['scale'] = (size, size)
    if 'size' in cfg.model.data_preprocessor:  # mmseg pads to a fixed size
        cfg.model.data_preprocessor.size = (size, size)


def set_iters(cfg, iters):
    """Train for ``iters`` iterations: loop, evaluation, checkpoint, lr schedule."""
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters

    def scale(step):  # a positive step stays positive
        return max(1, round(step * iters / old)) if step > 0 else 0

    for scheduler in cfg.param_scheduler:
        # the schedules are laid out over the run: stretch them with it
        if 'begin' in scheduler:
            scheduler.begin = scale(scheduler.begin)
        if 'end' in scheduler:
            scheduler.end = max(scale(scheduler.end),
                                scheduler.get('begin', 0) + 1)
        if 'milestones' in scheduler:
            scheduler.milestones = [scale(m) for m in scheduler.milestones]


def draw_predictions(runner, task, out_file, num_images=6, columns=3):
    """Draw ground truth and predictions of the model on the first val images.

    One PNG per image (ground truth left, prediction right) in
    ``<work_dir>/predictions/`` and a grid of them in ``out_file``.
    """
    model = runner.model
    model.eval()
    visualizer = runner.visualizer
    visualizer.dataset_meta = runner.val_dataloader.dataset.metainfo
    tiles = []
    for data_batch in runner.val_dataloader:
        with torch.no_grad():
            data_samples = model.test_step(data_batch)
        for data_sample in data_samples:
            image = mmcv.imread(data_sample.img_path, channel_order='rgb')
            name = osp.splitext(osp.basename(data_sample.img_path))[0]
            kwargs = dict(pred_score_thr=0.5) if task == 'detection' else {}
            out = osp.join(runner.work_dir, 'predictions', f'{name}.png')
            visualizer.add_datasample(
                name, image, data_sample, draw_gt=True, draw_pred=True,
                show=False, out_file=out, **kwargs)
            tiles.append(mmcv.imread(out))  # ground truth | prediction
            if len(tiles) == num_images:
                break
        if len(tiles) == num_images:
            break
    rows = [np.concatenate(tiles[i:i + columns], axis=1)
            for i in range(0, len(tiles) - columns + 1, columns)]
    if not rows:  # fewer images than one row
        rows = [np.concatenate(tiles, axis=1)]
    grid = np.concatenate(rows, axis=0)
    scale = max(1, 256 // tiles[0].shape[0])  # small images: enlarge, crisply
    write_png(out_file, mmcv.imrescale(grid, scale, interpolation='nearest'))


def plot_losses(scalars_file, out_file, title):
    """Plot every loss scalar of mmengine's ``scalars.json`` against the step."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = {}
    with open(scalars_file) as f:
        for line in f:
            record = json.loads(line)
            for key, value in record.items():
                if 'loss' in key:  # mmdet's loss_*, mmseg's decode.loss_*
                    curves.setdefault(key, []).append((record['step'], value))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for key, points in sorted(curves.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, label=key, marker='o' if len(steps) < 10
                else None, linewidth=2.5 if key == 'loss' else 1.0)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(out_file, 'wb') as file:
        fig.savefig(file, format='png')
    plt.close(fig)


def run_task(task, args):
    """Generate the data if absent, train and evaluate, draw; the task's results."""
    start = time.time()
    spec = TASKS[task]
    cfg = Config.fromfile(osp.join(REPO_ROOT, spec['config']))
    if args.image_size is not None:
        set_image_size(cfg, args.image_size)
    data_root = osp.join(args.data_root, spec['data'])
    if not osp.exists(osp.join(data_root, spec['ready'])):
        counts = spec['generate'](
            data_root, num_train=args.num_train, num_val=args.num_val,
            image_size=cfg.image_size[0], seed=args.seed)
        print(f'wrote the synthetic data set in {data_root}: {counts}')
    set_data_root(cfg, data_root)
    if args.iters is not None:
        set_iters(cfg, args.iters)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = osp.join(args.work_dir, task)
    # The stock name 'visualizer' makes a second run in one process reuse the
    # first one's visualizer, which writes into the first run's log dir; the
    # Runner names it after the run instead.
    cfg.visualizer.pop('name', None)

    runner = Runner.from_cfg(cfg)
    hook = DemoHook(deadline=start + 60 * args.max_minutes)
    runner.register_hook(hook)
    runner.train()

    (_, before), (iter_after, after) = hook.evaluations[0], hook.evaluations[-1]
    predictions_png = osp.join(args.work_dir, f'{task}_predictions.png')
    loss_png = osp.join(args.work_dir, f'{task}_loss.png')
    draw_predictions(runner, task, predictions_png)
    key, label, scale = spec['metrics'][0]
    plot_losses(
        osp.join(runner.log_dir, 'vis_data', 'scalars.json'), loss_png,
        f'Spatial-Mamba-T {task} on synthetic shapes\n{label} '
        f'{scale * before[key]:.1f} -> {scale * after[key]:.1f} '
        f'after {iter_after} iterations')
    return dict(
        config=spec['config'],
        work_dir=runner.work_dir,
        iterations=iter_after,
        planned_iterations=runner.max_iters,
        stopped_early=hook.stopped_early,
        batch_size=cfg.train_dataloader.batch_size,
        train_images=len(runner.train_dataloader.dataset),
        val_images=len(runner.val_dataloader.dataset),
        train_minutes=round(hook.train_seconds / 60, 2),
        eval_minutes=round(hook.val_seconds / 60, 2),
        total_minutes=round((time.time() - start) / 60, 2),
        metrics={label: dict(before=round(float(scale * before[key]), 2),
                             after=round(float(scale * after[key]), 2))
                 for key, label, scale in spec['metrics']},
        predictions_png=predictions_png,
        loss_png=loss_png)


def write_summary(results, work_dir):
    """Merge ``results`` into ``summary.json`` and rewrite ``summary.md``."""
    summary_json = osp.join(work_dir, 'summary.json')
    summary = {}
    if osp.exists(summary_json):
        with open(summary_json) as f:
            summary = json.load(f)
    summary.update(results)
    atomic_write_text(summary_json, json.dumps(summary, indent=2))
    lines = ['# Spatial-Mamba-T on synthetic shapes (CPU demo)', '']
    for task, result in summary.items():
        stopped = ' (stopped by the time budget)' if result[
            'stopped_early'] else ''
        lines += [
            f'## {task}', '',
            f'`{result["config"]}`: {result["iterations"]} iterations of '
            f'{result["batch_size"]} images{stopped}, '
            f'{result["train_images"]} train / {result["val_images"]} val '
            f'images; training {result["train_minutes"]} min, one evaluation '
            f'{result["eval_minutes"]} min, all {result["total_minutes"]} min.',
            '', '| metric (val) | untrained | trained |', '|---|---|---|']
        lines += [f'| {name} | {m["before"]:.1f} | {m["after"]:.1f} |'
                  for name, m in result['metrics'].items()]
        lines += ['', f'![predictions]({osp.basename(result["predictions_png"])})',
                  f'![loss]({osp.basename(result["loss_png"])})', '']
    atomic_write_text(osp.join(work_dir, 'summary.md'), '\n'.join(lines))
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = tool_parser(
        description='Train and evaluate Spatial-Mamba-T on synthetic shapes '
        'on a CPU (see the module docstring).')
    parser.add_argument('--task', choices=('detection', 'segmentation', 'all'),
                        default='detection',
                        help='which demo: Mask R-CNN (box/mask mAP), UperNet '
                        '(mIoU), or both (default: detection)')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='each task writes its checkpoint, last_checkpoint, '
                        'logs and drawings under <work-dir>/<task>/, and the '
                        'summaries here (default: work_dirs/demo)')
    parser.add_argument('--data-root', default='data/synthetic',
                        help='generated here (COCO under coco/, mmseg under '
                        'seg/) unless already there')
    parser.add_argument('--max-minutes', type=float, default=15,
                        help='time budget of each task, evaluations included: '
                        'training stops early to keep it')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--num-train', type=int, default=200,
                        help='train images, when generating the data')
    parser.add_argument('--num-val', type=int, default=25,
                        help='val images, when generating the data')
    parser.add_argument('--image-size', type=int, default=None,
                        help='image side, of the generated data and of the '
                        'training and evaluation (default: the config\'s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='data seed, when generating the data')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    tasks = ['detection', 'segmentation'] if args.task == 'all' else [
        args.task]
    for task in tasks:  # the summary grows task by task
        summary = write_summary({task: run_task(task, args)}, args.work_dir)
    print(summary)


if __name__ == '__main__':
    run_tool(main, __file__)
