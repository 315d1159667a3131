"""Whole-model level: throughput (images/s) of one or more configs' models, side
by side in one run, on whatever device is present.

    python tools/analysis/benchmark_model.py CONFIG [CONFIG ...] [--shape H W]
        [--batch-size N] [--warmup 5] [--iters 20] [--train-step] [--amp]
        [--device cpu|cuda]

A CONFIG is a file, or ``mmdet::``/``mmseg::``/``mmpretrain::`` and a path in
that library's configs (e.g. ``mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``).
Several configs take turns in each of ``--iters`` rounds, so that a drift in
the machine's load falls on all of them; each one's median is reported, with
its time over the first config's. They must share a task (default scope).

Inference times ``model.test_step`` (data preprocessor, network and the
library's post-processing: NMS and mask pasting, the segmentation map, the
class scores) on random images of the given shape; ``--train-step`` times
``model.train_step`` (forward, loss, backward, optimizer step with the
config's optim_wrapper) on random images with one ground-truth object /
label map / label each. Warm-up iterations are not timed; CUDA is
synchronised around each timed iteration. Backbones are freshly initialised
(weights do not change the speed, except for the number of detections a
detector keeps). Backbones alone: ``benchmark_backbone.py``; the SSM
operators: ``benchmark_ops.py``. Progress goes to stderr, results to stdout.
"""
import torch
from mmengine.config import DictAction

from mmspatial.benchmarking import progress, time_side_by_side
from mmspatial.errors import InputError
from mmspatial.utils import (build_model, load_config, run_tool, synthetic_batch,
                             tool_parser)

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}
LIBRARY_PREFIXES = tuple(f'{scope}::' for scope in DEFAULT_SHAPES)


def parse_args(argv=None):
    parser = tool_parser(description="Benchmark configs' models side by side")
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='config files (or mmdet::/mmseg::/mmpretrain:: paths); '
                        'ratios are against the first')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 800 1280 for mmdet, 512 '
                        '2048 for mmseg, 224 224 for mmpretrain)')
    parser.add_argument('--batch-size', type=int,
                        help='images per iteration (default: 1 for inference, '
                        '2 for --train-step, the per-GPU batch of the detection '
                        'and segmentation recipes; BatchNorm needs 2 to train)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations')
    parser.add_argument('--iters', type=int, default=20,
                        help='timed rounds, the median is reported')
    parser.add_argument('--train-step', action='store_true',
                        help='time a training step instead of inference')
    parser.add_argument('--amp', action='store_true', help='mixed precision')
    parser.add_argument('--device', help='cpu or cuda (default: cuda if present)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override entries of every config')
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or (args.batch_size or 1) < 1:
        parser.error('--iters and --batch-size must be >= 1, --warmup >= 0')
    if args.shape and min(args.shape) < 1:
        parser.error('--shape must be positive')
    return args


def load_model_config(path, cfg_options=None):
    """A config file, or ``<library>::path`` in that library's configs."""
    if not path.startswith(LIBRARY_PREFIXES):
        return load_config(path, cfg_options)
    from mmengine.hub import get_config
    try:
        cfg = get_config(path)
    except Exception as error:  # noqa: BLE001 (mmengine raises several kinds)
        raise InputError(f'{path}: not a config of that library ({error})') from error
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def build_step(cfg, shape, batch_size, train_step, amp, device):
    """A closure running one test (or training) step of ``cfg``'s model."""
    height, width = shape
    preprocessor = cfg.model.get('data_preprocessor') or {}
    if preprocessor.get('size'):
        # mmseg pads training batches to the crop size: time the asked size
        preprocessor['size'] = (height, width)
    model = build_model(cfg).to(device)
    batch = synthetic_batch(cfg.default_scope, batch_size, height, width,
                            with_gt=train_step)
    if train_step:
        from mmengine.optim import build_optim_wrapper
        optim_cfg = cfg.optim_wrapper.copy()
        if amp:
            optim_cfg.type = 'AmpOptimWrapper'
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
        model.train()

        def step():
            model.train_step(batch, optim_wrapper)
            synchronize(device)
    else:
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                model.test_step(batch)
            synchronize(device)
    return step


def benchmark(cfgs, shape, batch_size=1, warmup=5, iters=20, train_step=False,
              amp=False, device=None):
    """Median seconds per iteration of each config's model, timed side by side;
    a dict of the figures per config, in order."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    steps = [build_step(cfg, shape, batch_size, train_step, amp, device) for cfg in cfgs]
    mode = 'train step' if train_step else 'inference'
    synchronize(device)
    with progress(iters, f'{mode}, {len(cfgs)} model(s), rounds:') as update:
        timings = time_side_by_side(steps, iters, warmup, on_round=update)
    first = timings[0][0]
    return [dict(mode=mode, device=str(device), shape=tuple(shape), batch_size=batch_size,
                 iters=iters, seconds_per_iter=median,
                 images_per_second=batch_size / median, ratio=median / first)
            for median, _ in timings]


def main(argv=None):
    args = parse_args(argv)
    cfgs = [load_model_config(path, args.cfg_options) for path in args.configs]
    scopes = {cfg.default_scope for cfg in cfgs}
    if len(scopes) > 1:
        raise InputError(f'the configs are of different tasks ({sorted(scopes)}); '
                         'give configs of one of mmdet, mmseg, mmpretrain')
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[cfgs[0].default_scope]
    batch_size = args.batch_size or (2 if args.train_step else 1)
    results = benchmark(cfgs, shape, batch_size, args.warmup, args.iters,
                        args.train_step, args.amp, args.device)
    device = results[0]['device']
    device_name = torch.cuda.get_device_name(device) if device.startswith('cuda') else 'CPU'
    print(f'{results[0]["mode"]}, {device_name}, {shape[0]}x{shape[1]}, batch {batch_size}'
          f'{", amp" if args.amp else ""}, torch {torch.get_num_threads()} thread(s); '
          f'medians of {args.iters} rounds after {args.warmup} warm-up\n')
    print('| config | images/s | ms per iteration | time / first |\n|---|---|---|---|')
    for path, result in zip(args.configs, results):
        result['config'] = path
        print(f'| {path} | {result["images_per_second"]:.2f} | '
              f'{1000 * result["seconds_per_iter"]:.1f} | {result["ratio"]:.2f}x |')
    return results


if __name__ == '__main__':
    run_tool(main, __file__)
