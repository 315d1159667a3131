"""Train a model of any shipped config with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                                 [--cfg-options KEY=VALUE ...]
    bash tools/dist_train.sh CONFIG GPUS [...]

mmdet, mmseg and mmpretrain configs all run through ``Runner.from_cfg``, which
takes the registries of the config's ``default_scope``. Importing ``mmspatial``
registers the backbone, so a config needs no ``custom_imports`` for this tool.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmspatial  # noqa: F401  (registers SpatialMamba)
from _checks import (InputError, backbone_cfg, check_checkpoint_fits,
                     check_data_roots, check_pretrained, load_checkpoint,
                     load_config, setup_cpu_distributed,
                     trust_local_checkpoints)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a Spatial-Mamba model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. train_dataloader.batch_size=4 '
        'model.backbone.init_cfg.checkpoint=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_cfg(args):
    """The config with the command line applied, checked before anything is built."""
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    loaders = ['train_dataloader']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders.append('val_dataloader')
    check_data_roots(cfg, loaders, args.config)
    try:
        check_pretrained(cfg, args.config)
    except InputError:
        if not cfg.get('load_from'):
            raise
        # Everything the backbone's init would load is overwritten by load_from
        # (whose backbone main() checks against the model), so do without it.
        print(f'note: the backbone\'s pretrained checkpoint is missing; not '
              f'needed, the weights come from {cfg.load_from}')
        backbone_cfg(cfg).init_cfg = None
    return cfg


def run(cfg, args):
    """Build the Runner for ``cfg``, check what it loads against it and train."""
    checkpoint = load_checkpoint(cfg.load_from) if cfg.get('load_from') else None

    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if checkpoint is not None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_checkpoint_fits(model, checkpoint, cfg.load_from, args.config)
        del checkpoint
    runner.train()
    return runner


def main(argv=None):
    args = parse_args(argv)
    trust_local_checkpoints()
    return run(build_cfg(args), args)


if __name__ == '__main__':
    try:
        main()
    except InputError as error:
        sys.exit(f'{osp.basename(__file__)}: error: {error}')
