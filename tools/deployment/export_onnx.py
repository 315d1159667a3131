"""Export a config's model to ONNX and check the file against PyTorch.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE
        [--shape H W | --trace-shape H W] [--batch-size 1] [--opset 17]
        [--no-check] [--tolerance 1e-4] [--benchmark] [--cfg-options ...]

What is exported (see ``mmspatial.deploy.exportable``): the classifier's
logits, the segmentor's per-pixel class scores at the input size, the
detector's backbone + FPN features (its RoI stages are mmdeploy's domain). The
input ``images`` is the normalised batch (batch, 3, H, W); the data
preprocessor's mean, std, channel order and pad divisor are stored in the
file's metadata (``pad_size_divisor``: the caller pads H and W to a multiple
of it, as the preprocessor does).

Without ``--shape`` the file takes any batch size and any H, W >= 32
(multiples of ``pad_size_divisor`` for the detector); it is traced at
``--trace-shape`` (default 224 224). With ``--shape`` it takes that size only.
Unless ``--no-check``, onnxruntime runs the file on random batches and the
largest difference from PyTorch, relative to the largest output value, must
stay within ``--tolerance`` (default 1e-4); the tool fails otherwise. A
dynamic file is checked at three sizes: the traced one, a larger one and a
non-square one.

``--benchmark`` writes a fixed and a dynamic file at the size of ``--shape``
(or ``--trace-shape``) into a temporary folder and prints, for both, the
export time, file size, node count, onnxruntime session creation time and
CPU latency beside PyTorch's (``mmspatial.deploy.benchmark``; on a shared
machine run it with ``OMP_WAIT_POLICY=PASSIVE``).

CHECKPOINT must fit the config's whole model (``mmspatial.models.
whole_model_check``, as for tools/test.py): a checkpoint of another task or
arch, a head for another number of classes or NaN weights are refused unless
partial loading is allowed on purpose (``MMSPATIAL_ALLOW_PARTIAL_LOAD=1``).
Without CHECKPOINT the freshly initialised model is exported (for trying the
tool; the backbone's pretrained ``init_cfg`` is not read).
"""
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

from mmspatial.deploy import (build_exportable, check_shapes, compare_with_onnxruntime,
                              export_onnx, load_export_config, pad_size_divisor)
from mmspatial.deploy.onnx_export import onnx_session
from mmspatial.errors import InputError
from mmspatial.utils import run_tool, tool_parser

MIN_SIZE = 32  # total stride of the backbone's four stages
TRACE_SHAPE = (224, 224)


def parse_args(argv=None):
    parser = tool_parser(description='Export a model to ONNX')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (optional)')
    shapes = parser.add_mutually_exclusive_group()
    shapes.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='a fixed input height and width (for detection: the '
                        'padded size, a multiple of 32); default: any size')
    shapes.add_argument('--trace-shape', type=int, nargs=2, metavar=('H', 'W'),
                        default=TRACE_SHAPE, help='the size a file for any size is '
                        'traced and first checked at (default: 224 224)')
    parser.add_argument('--out', help='the ONNX file to write (not with --benchmark)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per call (fixed with --shape)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset')
    parser.add_argument('--no-check', action='store_true',
                        help='do not compare onnxruntime with PyTorch')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest difference allowed, relative to the largest value')
    parser.add_argument('--benchmark', action='store_true',
                        help='measure a fixed and a dynamic file side by side')
    parser.add_argument('--rounds', type=int, default=3,
                        help='timed runs per latency with --benchmark (median)')
    parser.add_argument('--threads', type=int, default=2,
                        help='CPU threads of PyTorch and onnxruntime with --benchmark')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args = parser.parse_args(argv)
    if not args.benchmark and not args.out:
        parser.error('--out is required (unless --benchmark)')
    return args


def preprocessor_metadata(cfg):
    """What the graph leaves to the caller: the data preprocessor's settings."""
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return {key: preprocessor[key] for key in ('mean', 'std', 'bgr_to_rgb', 'to_rgb')
            if key in preprocessor}


def check_file(module, out_file, shapes, batch_size, tolerance):
    """Compare onnxruntime with PyTorch on a random batch of each shape; a
    ``RuntimeError`` beyond ``tolerance``. Returns {(H, W): {output: error}}."""
    session = onnx_session(out_file)
    results = {}
    for shape in shapes:
        inputs = torch.randn(batch_size, 3, *shape,
                             generator=torch.Generator().manual_seed(0))
        errors = compare_with_onnxruntime(module, out_file, inputs, session)
        worst = max(errors.values())
        print(f'onnxruntime vs PyTorch at {shape[0]}x{shape[1]}: max difference '
              f'{worst:.2e} of the largest value ({max(errors, key=errors.get)})')
        if worst > tolerance:
            raise RuntimeError(f'onnxruntime differs from PyTorch at {shape[0]}x'
                               f'{shape[1]} by {worst:.2e} of the largest value, more '
                               f'than --tolerance {tolerance:g}')
        results[tuple(shape)] = errors
    return results


def main(argv=None):
    args = parse_args(argv)
    shape = tuple(args.shape or args.trace_shape)
    if min(shape) < MIN_SIZE or args.batch_size < 1:
        raise InputError(f'shape {shape[0]} {shape[1]}, --batch-size {args.batch_size}: '
                         f'the input needs at least {MIN_SIZE}x{MIN_SIZE} pixels '
                         '(total stride 32) and one image')
    cfg = load_export_config(args.config, args.cfg_options)
    progress('building the model' + (f' and reading {args.checkpoint}' if args.checkpoint
                                      else ''))
    module = build_exportable(cfg, args.checkpoint)
    divisor = pad_size_divisor(cfg)
    if args.benchmark:
        from mmspatial.deploy.benchmark import compare_fixed_and_dynamic, format_table
        rows = compare_fixed_and_dynamic(module, shape, rounds=args.rounds,
                                         threads=args.threads, opset=args.opset)
        print(format_table(rows))
        return rows
    dynamic = args.shape is None
    metadata = dict(config=osp.basename(args.config), task=cfg.default_scope,
                    checkpoint=osp.basename(args.checkpoint or '') or 'none (initialised)',
                    **preprocessor_metadata(cfg), pad_size_divisor=divisor,
                    input_shape=('batch,3,height,width' if dynamic else
                                 f'{args.batch_size},3,{shape[0]},{shape[1]}'))
    progress(f'exporting, traced at {shape[0]}x{shape[1]}'
             + (' (the file takes any size)' if dynamic else ''))
    names = export_onnx(module, shape, args.out, args.batch_size, args.opset, metadata,
                        dynamic=dynamic)
    size = ('any batch, any H, W >= 32' + (f' (multiples of {divisor})' if divisor > 1
                                            else '') if dynamic else
            f'{(args.batch_size, 3, *shape)}')
    print(f'wrote {args.out}: input images {size}, outputs {", ".join(names)}')
    if args.no_check:
        return None
    shapes = check_shapes(shape, divisor) if dynamic else [shape]
    progress('checking the file with onnxruntime at '
             + ', '.join(f'{h}x{w}' for h, w in shapes))
    return check_file(module, args.out, shapes, args.batch_size, args.tolerance)


def progress(phase):
    """The phase the export is in, on stderr (exports take minutes)."""
    print(f'[export_onnx] {phase} ...', file=sys.stderr, flush=True)


if __name__ == '__main__':
    run_tool(main, __file__)
