"""Export a config's model to ONNX and check the file against PyTorch.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --shape H W --out FILE
        [--batch-size 1] [--opset 17] [--no-check] [--cfg-options ...]

What is exported (see ``mmspatial.deploy.exportable``): the classifier's
logits, the segmentor's per-pixel class scores at the input size, the
detector's backbone + FPN features (its RoI stages are mmdeploy's domain). The
input ``images`` is the normalised batch (batch, 3, H, W), fixed in size; the
data preprocessor's mean, std and channel order are stored in the file's
metadata. Unless ``--no-check``, onnxruntime runs the file on a random batch
and the largest difference from PyTorch, relative to the largest output value,
must stay within ``--tolerance`` (default 1e-4); the tool fails otherwise.

CHECKPOINT must fit the config's whole model (``mmspatial.models.
whole_model_check``, as for tools/test.py): a checkpoint of another task or
arch, a head for another number of classes or NaN weights are refused unless
partial loading is allowed on purpose (``MMSPATIAL_ALLOW_PARTIAL_LOAD=1``).
Without CHECKPOINT the freshly initialised model is exported (for trying the
tool; the backbone's pretrained ``init_cfg`` is not read).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

from mmspatial.deploy import (build_exportable, compare_with_onnxruntime, export_onnx,
                              load_export_config)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a model to ONNX')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (optional)')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='input height and width, fixed in the graph (for '
                        'detection: the padded size, a multiple of 32)')
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--batch-size', type=int, default=1, help='images per call')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset')
    parser.add_argument('--no-check', action='store_true',
                        help='do not compare onnxruntime with PyTorch')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest difference allowed, relative to the largest value')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def preprocessor_metadata(cfg):
    """What the graph leaves to the caller: the data preprocessor's settings."""
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return {key: preprocessor[key] for key in ('mean', 'std', 'bgr_to_rgb', 'to_rgb')
            if key in preprocessor}


def main(argv=None):
    args = parse_args(argv)
    if min(args.shape) < 32 or args.batch_size < 1:
        raise ValueError(f'--shape {args.shape[0]} {args.shape[1]} --batch-size '
                         f'{args.batch_size}: the input needs at least 32x32 pixels '
                         '(total stride 32) and one image')
    cfg = load_export_config(args.config, args.cfg_options)
    module = build_exportable(cfg, args.checkpoint)
    metadata = dict(config=osp.basename(args.config), task=cfg.default_scope,
                    checkpoint=osp.basename(args.checkpoint or '') or 'none (initialised)',
                    **preprocessor_metadata(cfg))
    names = export_onnx(module, args.shape, args.out, args.batch_size, args.opset,
                        metadata)
    print(f'wrote {args.out}: input images {(args.batch_size, 3, *args.shape)}, '
          f'outputs {", ".join(names)}')
    if args.no_check:
        return None
    inputs = torch.randn(args.batch_size, 3, *args.shape,
                         generator=torch.Generator().manual_seed(0))
    errors = compare_with_onnxruntime(module, args.out, inputs)
    for name, error in errors.items():
        print(f'onnxruntime vs PyTorch, {name}: max difference {error:.2e} of the '
              'largest value')
    worst = max(errors.values())
    if worst > args.tolerance:
        raise RuntimeError(f'onnxruntime differs from PyTorch by {worst:.2e} of the '
                           f'largest value, more than --tolerance {args.tolerance:g}')
    return errors


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError, ImportError) as error:
        sys.exit(f'{osp.basename(__file__)}: error: {error}')
