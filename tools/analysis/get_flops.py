"""Parameters and FLOPs of a config's model (or of a bare backbone).

    python tools/analysis/get_flops.py CONFIG --shape H W
    python tools/analysis/get_flops.py CONFIG --shape 224 224 --backbone-only
    python tools/analysis/get_flops.py --arch t [--shape 224 224]

One FLOP is one multiply-add (fvcore's convention, which mmengine's
FlopAnalyzer follows); the README's results table lists the paper's figures
beside what this tool measures, at the paper's input sizes: 224x224 for the
backbones, 1280x800 for Mask R-CNN, 2048x512 for UperNet.

The model runs in its ``tensor`` mode: detectors through the backbone, neck,
RPN (with its proposal selection) and the RoI heads on the proposals (mmdet's
``_forward``), segmentors through the backbone and the decode head (no
auxiliary head, which only trains), classifiers through backbone, neck and
head. FlopAnalyzer traces it once with a random input; the structure-aware
SSM is one traced operation, counted by the handles of ``mmspatial.ops.flops``
(7 per state element for the scan, 27 for the fusion's three dilated 3x3
stencils; the observation is element-wise). The table printed after the
totals lists what each operation type contributed, the SSM's split into
``selective_scan`` and ``state_fusion``, and which traced operations were not
counted (element-wise ones, by convention). Progress (building, tracing)
goes to stderr, the report to stdout.
"""
import sys
from collections import Counter

import torch
from mmengine.config import DictAction

from mmspatial.models import SpatialMamba
from mmspatial.utils import build_model, data_samples, load_config, run_tool, tool_parser


class ModelInTensorMode(torch.nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a one-input module, so
    that it can be traced (the data samples are not tensors)."""

    def __init__(self, model, samples):
        super().__init__()
        self.model = model
        self.samples = samples

    def forward(self, inputs):
        return self.model(inputs, self.samples, mode='tensor')


def build(config=None, arch=None, backbone_only=False, cfg_options=None,
          shape=(224, 224)):
    """The module to analyse, its input, and a name for it."""
    if config is None:
        model = SpatialMamba(arch)
        return model.eval(), torch.randn(1, 3, *shape), f'SpatialMamba(arch={arch!r})'
    cfg = load_config(config, cfg_options)
    model = build_model(cfg, backbone_only=backbone_only).eval()
    inputs = torch.randn(1, 3, *shape)
    if backbone_only:
        return model, inputs, f'{config} (backbone)'
    samples = data_samples(cfg.default_scope, 1, *shape)
    for sample in samples:
        sample.set_metainfo(dict(batch_input_shape=tuple(shape)))
    return ModelInTensorMode(model, samples), inputs, config


def split_ssm_handle(fused_handle):
    """The fused SSM op's handle, its count split into the scan and the fusion
    (for the per-operation table), from ``mmspatial.ops.flops``'s formulas."""
    from mmspatial.ops import flops as ops_flops

    def handle(inputs, outputs):
        total = fused_handle(inputs, outputs)  # also checks the traced shapes
        batch, channels, height, width = inputs[0].type().sizes()
        state_dim = inputs[2].type().sizes()[1]
        scan = ops_flops.selective_scan_flops(batch, channels, state_dim,
                                              height * width)
        return Counter({'selective_scan': scan, 'state_fusion': total - scan})
    return handle


def analyse(module, inputs):
    """FLOPs (total and per operation type), parameters and the uncounted ops."""
    from mmengine.analysis import FlopAnalyzer, parameter_count

    from mmspatial.ops.flops import FLOP_HANDLES, register_flop_handles
    analyzer = register_flop_handles(FlopAnalyzer(module, (inputs, )))
    analyzer.set_op_handle(**{
        name: split_ssm_handle(handle) for name, handle in FLOP_HANDLES.items()
        if 'StructureAwareSSM' in name})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = analyzer.total()
    return dict(flops=total, by_operator=dict(analyzer.by_operator()),
                uncounted=dict(analyzer.unsupported_ops()),
                params=parameter_count(module)[''])


def report(result, name, shape):
    lines = [f'{name}, input 1x3x{shape[0]}x{shape[1]}:',
             f'  FLOPs  {result["flops"] / 1e9:.2f} G',
             f'  Params {result["params"] / 1e6:.2f} M ({result["params"]:,})',
             '  counted, per operation type:']
    for op, flops in sorted(result['by_operator'].items(), key=lambda kv: -kv[1]):
        share = 100 * flops / max(result['flops'], 1)
        lines.append(f'    {op:<28s} {flops / 1e9:9.3f} G  {share:5.1f}%')
    if result['uncounted']:
        lines.append('  traced but not counted (occurrences): ' + ', '.join(
            f'{op} x{n}' for op, n in sorted(result['uncounted'].items())))
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = tool_parser(description='Parameters and FLOPs')
    parser.add_argument('config', nargs='?', help='config file path')
    parser.add_argument('--arch', help='a bare SpatialMamba backbone instead of a '
                        'config: tiny/small/base or t/s/b')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'), help='input size (default 224 224)')
    parser.add_argument('--backbone-only', action='store_true',
                        help="count only the config's backbone")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give a config or --arch')
    return args


def say(message):
    """One progress line on stderr."""
    print(f'get_flops.py: {message}', file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    shape = tuple(args.shape)
    say(f'building {args.config or f"SpatialMamba(arch={args.arch!r})"}')
    module, inputs, name = build(args.config, args.arch, args.backbone_only,
                                 args.cfg_options, shape)
    say(f'tracing {name} at {shape[0]}x{shape[1]} and counting (up to a minute '
        'for a detector or segmentor at full size)')
    result = analyse(module, inputs)
    print(report(result, name, shape))
    return result


if __name__ == '__main__':
    run_tool(main, __file__)
