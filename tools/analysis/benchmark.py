"""Throughput (images/s) of a config's model, on whatever device is present.

    python tools/analysis/benchmark.py CONFIG [--shape H W] [--batch-size N]
        [--warmup 5] [--iters 20] [--train-step] [--amp] [--device cpu|cuda]

Inference times ``model.test_step`` (data preprocessor, network and the
library's post-processing: NMS and mask pasting, the segmentation map, the
class scores) on random images of the given shape; ``--train-step`` times
``model.train_step`` (forward, loss, backward, optimizer step with the
config's optim_wrapper) on random images with one ground-truth object /
label map / label each. Warm-up iterations are not timed; CUDA is
synchronised around the timed iterations. The backbone is freshly
initialised (weights do not change the speed).
"""
import time

import torch
from mmengine.config import DictAction

from mmspatial.utils import (build_model, load_config, run_tool, synthetic_batch,
                             tool_parser)

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}


def parse_args(argv=None):
    parser = tool_parser(description='Benchmark a model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 800 1280 for mmdet, 512 '
                        '2048 for mmseg, 224 224 for mmpretrain)')
    parser.add_argument('--batch-size', type=int,
                        help='images per iteration (default: 1 for inference, '
                        '2 for --train-step, the per-GPU batch of the detection '
                        'and segmentation recipes; BatchNorm needs 2 to train)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--train-step', action='store_true',
                        help='time a training step instead of inference')
    parser.add_argument('--amp', action='store_true', help='mixed precision')
    parser.add_argument('--device', help='cpu or cuda (default: cuda if present)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def benchmark(cfg, shape, batch_size=1, warmup=5, iters=20, train_step=False,
              amp=False, device=None):
    """Images per second of ``cfg``'s model; returns a dict of the figures."""
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
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
    else:
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                model.test_step(batch)

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    return dict(mode='train step' if train_step else 'inference', device=str(device),
                shape=(height, width), batch_size=batch_size, iters=iters,
                seconds_per_iter=elapsed / iters,
                images_per_second=iters * batch_size / elapsed)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[cfg.default_scope]
    batch_size = args.batch_size or (2 if args.train_step else 1)
    result = benchmark(cfg, shape, batch_size, args.warmup, args.iters,
                       args.train_step, args.amp, args.device)
    device_name = (torch.cuda.get_device_name(result['device'])
                   if result['device'].startswith('cuda') else 'CPU')
    print(f'{args.config}: {result["mode"]}, {device_name}, '
          f'{shape[0]}x{shape[1]}, batch {batch_size}'
          f'{", amp" if args.amp else ""}: '
          f'{result["images_per_second"]:.2f} images/s '
          f'({1000 * result["seconds_per_iter"]:.1f} ms per iteration, '
          f'{args.warmup} warm-up + {args.iters} timed)')
    return result


if __name__ == '__main__':
    run_tool(main, __file__)
