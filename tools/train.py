"""Train a model of any shipped config with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
                                 [--resume [CKPT]] [--cfg-options KEY=VALUE ...]
    bash tools/dist_train.sh CONFIG GPUS [...]

mmdet, mmseg and mmpretrain configs all run through ``Runner.from_cfg``, which
takes the registries of the config's ``default_scope``. Importing ``mmspatial``
registers the backbone, so a config needs no ``custom_imports`` for this tool.
Every checkpoint the run will read (``load_from`` or ``--resume``, the
backbone's pretrained one) is read and checked against the config's backbone
before the Runner is built. Rank 0 holds ``<work_dir>/train.lock`` for the
run: a second training in the same work dir stops with an error naming the
first (``mmspatial.engine.work_dir_lock``).
"""
import os
import os.path as osp

from mmengine.config import DictAction

from mmspatial.engine.work_dir_lock import work_dir_lock
from mmspatial.errors import InputError
from mmspatial.models.checkpoint import local_checkpoint_policy
from mmspatial.utils import (PRETRAINED_HINT, backbone_cfg, build_runner,
                             check_checkpoints, check_inputs, checkpoint_to_resume,
                             load_config, pretrained_checkpoint, run_tool,
                             setup_cpu_distributed, tool_parser)


def parse_args(argv=None):
    parser = tool_parser(description='Train a Spatial-Mamba model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate by the total batch size of this run over '
        'the config\'s auto_scale_lr.base_batch_size (linear scaling rule)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value from the one the work '
        'dir\'s last_checkpoint names (training starts from scratch, with a warning, '
        'where there is none)')
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
    """The config with the command line applied, its paths checked."""
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if not (cfg.get('auto_scale_lr') or {}).get('base_batch_size'):
            raise InputError(f'--auto-scale-lr: config {args.config} has no '
                             'auto_scale_lr.base_batch_size (the total batch size '
                             'its learning rate is for)')
        cfg.auto_scale_lr.enable = True  # the Runner scales by world size x batch
    if args.resume is not None:
        # Named here, so that it is checked like any other checkpoint; with a
        # bare --resume and nothing to resume, a fresh start.
        resume_from = checkpoint_to_resume(cfg.work_dir, args.resume)
        if resume_from is not None:
            cfg.resume, cfg.load_from = True, resume_from

    loaders = ['train_dataloader']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders.append('val_dataloader')
    pretrained = pretrained_checkpoint(cfg)
    if pretrained and not osp.isfile(pretrained) and cfg.get('load_from'):
        # Everything the backbone's init would load is overwritten by load_from
        # (checked against the model by check_checkpoints), so do without it.
        print(f'note: the backbone\'s pretrained checkpoint is missing; not '
              f'needed, the weights come from {cfg.load_from}')
        backbone_cfg(cfg).init_cfg = pretrained = None
    check_inputs(cfg, args.config, loaders, checkpoints=[
        ('the backbone\'s pretrained checkpoint', pretrained, PRETRAINED_HINT),
        ('load_from checkpoint', cfg.get('load_from'), None)])
    return cfg


def run(cfg, args):
    """Check what the run loads, build the Runner for ``cfg`` and train, holding
    the work dir's lock (a second training there stops with an InputError)."""
    check_checkpoints(cfg, args.config)
    setup_cpu_distributed(cfg)
    with work_dir_lock(cfg.work_dir, cfg.launcher):  # before the Runner writes there
        runner = build_runner(cfg)
        with local_checkpoint_policy():
            runner.train()
    return runner


def main(argv=None):
    args = parse_args(argv)
    return run(build_cfg(args), args)


if __name__ == '__main__':
    run_tool(main, __file__)
