"""Backbone level: Spatial-Mamba-T beside mmpretrain's Swin-T and ConvNeXt-T,
timed in one run.

    python tools/analysis/benchmark_backbone.py [--shape 224 224] [--batch-sizes 1 8]
        [--repeats 10] [--warmup 2] [--device cpu|cuda] [--threads N]
        [--channels-last] [--tf32] [--amp]

Measurements, each a median over ``--repeats`` rounds in which the three
models take turns (so that a drift in the machine's load falls on all three):

- backbone forward (eval mode, no autograd) at each of ``--batch-sizes``;
- backbone forward + backward (train mode) at the largest batch size.

The backbones return all four stages, as a detector uses them, with
stochastic depth off; weights are fresh (they do not change the speed). The
ratios are Spatial-Mamba-T's time over the other model's. Whole models
(detectors, segmentors, classifiers of configs) side by side:
``benchmark_model.py``; the SSM operators alone: ``benchmark_ops.py``.
Progress goes to stderr, the table to stdout. The settings that change the
answer (threads, TF32, channels-last, mixed precision, the SSM backend) are
printed with the table.
"""
import os

import torch

from mmspatial.benchmarking import progress, time_side_by_side
from mmspatial.utils import run_tool, tool_parser

MODELS = ('Spatial-Mamba-T', 'Swin-T', 'ConvNeXt-T')
BASELINES = MODELS[1:]
FOUR_STAGES = (0, 1, 2, 3)
BACKBONES = {  # built from mmpretrain's registry
    'Spatial-Mamba-T': dict(type='mmspatial.SpatialMamba', arch='tiny',
                            out_indices=FOUR_STAGES, drop_path_rate=0.0),
    'Swin-T': dict(type='SwinTransformer', arch='tiny', img_size=224,
                   out_indices=FOUR_STAGES, drop_path_rate=0.0),
    'ConvNeXt-T': dict(type='ConvNeXt', arch='tiny', out_indices=FOUR_STAGES,
                       drop_path_rate=0.0, gap_before_final_norm=False),
}
def parse_args(argv=None):
    parser = tool_parser(
        description='Time Spatial-Mamba-T beside Swin-T and ConvNeXt-T')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'), help='backbone input size (default 224 224)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=(1, 8),
                        help='backbone forward batch sizes; forward + backward runs '
                        'at the largest (default 1 8)')
    parser.add_argument('--repeats', type=int, default=10,
                        help='timed rounds, the median is reported (default 10)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed calls of each measurement first (default 2)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda if present)')
    parser.add_argument('--threads', type=int,
                        help='intra-op CPU threads (default: PyTorch\'s choice)')
    parser.add_argument('--channels-last', action='store_true',
                        help='models and inputs in channels-last memory format')
    parser.add_argument('--tf32', action='store_true',
                        help='allow TF32 in CUDA matmuls and convolutions')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on the CPU)')
    args = parser.parse_args(argv)
    for name in ('batch_sizes', 'shape'):
        if min(getattr(args, name)) < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    return args


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def memory_format(args):
    return torch.channels_last if args.channels_last else torch.contiguous_format


def build_backbones(device, args):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    init_default_scope('mmpretrain')
    cfgs = {name: dict(cfg) for name, cfg in BACKBONES.items()}
    # Swin's last stage is one 7x7 window at 224 px; smaller inputs need its
    # windows padded, which larger ones (mmpretrain's default) do not
    cfgs['Swin-T']['pad_small_map'] = min(args.shape) < 224
    return {name: PRETRAIN_MODELS.build(cfg).to(device, memory_format=memory_format(args))
            for name, cfg in cfgs.items()}


def forward_step(model, x):
    def step():
        with torch.no_grad():
            model(x)
    return step


def forward_backward_step(model, x):
    def step():
        model.zero_grad(set_to_none=True)
        loss = sum(out.float().pow(2).mean() for out in model(x))
        loss.backward()
    return step


def measurements(device, args):
    """(label, {model name: (model, train mode, step function)}) per measurement."""
    backbones = build_backbones(device, args)
    height, width = args.shape
    generator = torch.Generator().manual_seed(0)

    def images(batch):
        x = torch.randn(batch, 3, height, width, generator=generator)
        return x.to(device, memory_format=memory_format(args))

    for batch in args.batch_sizes:
        x = images(batch)
        yield (f'backbone forward, batch {batch}, {height}x{width}',
               {name: (model, False, forward_step(model, x))
                for name, model in backbones.items()})
    batch = max(args.batch_sizes)
    x = images(batch)
    yield (f'backbone forward + backward, batch {batch}, {height}x{width}',
           {name: (model, True, forward_backward_step(model, x))
            for name, model in backbones.items()})


def time_alternating(label, steps, device, args):
    """Median seconds per call of each step; the steps take turns in each round
    (``mmspatial.benchmarking.time_side_by_side``), each call waiting for the
    device to finish. Progress per round on stderr."""
    autocast = torch.autocast(device.type, enabled=args.amp,
                              dtype=torch.float16 if device.type == 'cuda' else torch.bfloat16)
    for model, train, _ in steps.values():
        model.train(train)

    def synchronized(step):
        def run():
            step()
            synchronize(device)
        return run
    with autocast, progress(args.repeats, f'{label}, rounds:') as update:
        synchronize(device)
        medians = time_side_by_side([synchronized(step) for _, _, step in steps.values()],
                                    args.repeats, args.warmup, on_round=update)
    return {name: median for name, (median, _) in zip(steps, medians)}


def settings(device, args):
    """The settings that change the answer, one line each."""
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        precision = (f'TF32 in matmuls {torch.backends.cuda.matmul.allow_tf32}, in cuDNN '
                     f'{torch.backends.cudnn.allow_tf32}; '
                     f'cudnn.benchmark {torch.backends.cudnn.benchmark}')
    else:
        name = f'CPU ({torch.backends.cpu.get_cpu_capability()})'
        precision = f'oneDNN {torch.backends.mkldnn.is_available()}'
    return [
        f'device: {name}; torch {torch.__version__}',
        f'threads: {torch.get_num_threads()} intra-op, '
        f'{torch.get_num_interop_threads()} inter-op; {precision}',
        f'channels-last: {args.channels_last}; amp: {args.amp}; '
        f'repeats: {args.repeats} (median), warm-up: {args.warmup}',
        'SSM backend: ' + os.environ.get('MMSPATIAL_OPS_BACKEND', 'automatic '
                                         '(Triton for CUDA tensors, else PyTorch)'),
    ]


def format_table(rows):
    header = (['measurement'] + [f'{name} (ms)' for name in MODELS]
              + [f'Spatial-Mamba-T / {name}' for name in BASELINES])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = ([row['label']] + [f'{1000 * row["seconds"][n]:.1f}' for n in MODELS]
                 + [f'{row["ratios"][n]:.2f}x' for n in BASELINES])
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.set_float32_matmul_precision('high')
        torch.backends.cudnn.allow_tf32 = True
    rows = []
    for label, steps in measurements(device, args):
        seconds = time_alternating(label, steps, device, args)
        ratios = {name: seconds['Spatial-Mamba-T'] / seconds[name] for name in BASELINES}
        rows.append(dict(label=label, seconds=seconds, ratios=ratios))
    lines = settings(device, args)
    print('\n'.join(lines) + '\n\n' + format_table(rows))
    return dict(rows=rows, settings=lines)


if __name__ == '__main__':
    run_tool(main, __file__)
