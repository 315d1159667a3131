"""Evaluate a checkpoint on the test set of any shipped config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--tta] [--amp]
                                           [--out FILE] [--show] [--show-dir DIR]
                                           [--wait-time S] [--cfg-options KEY=VALUE ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [...]

CHECKPOINT is a released or trained checkpoint of the whole model (mm-style
``state_dict``), or, with a configs/classification config, a released ImageNet
classifier (``{'model': ...}``), whose keys are converted on the fly. The
checkpoint must fit the config's whole model, checked before the Runner is
built (``mmspatial.models.whole_model_check``): a checkpoint of another task or
arch, a head for another number of classes or NaN weights are an error, not a
warning, unless partial loading is allowed on purpose (``--allow-partial-load``).
``--out``, ``--show``, ``--show-dir`` and ``--wait-time`` mean what they mean
in mmdet's, mmseg's and mmpretrain's test tools. ``--tta``
evaluates with the config's test-time augmentation (``tta_model`` +
``tta_pipeline``; the segmentation configs' multi-scale + flip, the
"mIoU (ms)" column).
"""
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.model import is_model_wrapper
from mmengine.runner import load_state_dict

from mmspatial.errors import InputError
from mmspatial.models.checkpoint import (is_official_classifier, load_checkpoint_file,
                                         local_checkpoint_policy)
from mmspatial.models.whole_model_check import check_model_fit, model_state_dict_of
from mmspatial.utils import (backbone_cfg, build_model, build_runner, check_inputs,
                             load_config, run_tool, setup_cpu_distributed, tool_parser)
from mmspatial.utils.evaluation_outputs import (check_out_file, dump_predictions,
                                                dump_predictions_cfg,
                                                enable_visualization)


def parse_args(argv=None):
    parser = tool_parser(description='Test a Spatial-Mamba model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and metrics go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (the config\'s tta_model '
                        'and tta_pipeline)')
    parser.add_argument('--amp', action='store_true',
                        help='run the test loop under autocast (fp16)')
    parser.add_argument('--out', help='dump the predictions: a .pkl file (detection, '
                        'classification) or a folder of label maps (segmentation)')
    parser.add_argument('--show', action='store_true',
                        help='show each prediction in a window')
    parser.add_argument('--show-dir', help='save each image with its prediction '
                        'drawn here (a relative path goes under the run\'s log dir)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. test_dataloader.batch_size=4')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_tta(cfg, config_path):
    """Wrap the model in ``tta_model`` and give the test set ``tta_pipeline``,
    as mmdet/mmseg/mmpretrain's own test tools do."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if not cfg.get(key)]
    if missing:
        raise InputError(f'--tta: config {config_path} defines no '
                         f'{" and no ".join(missing)} (the segmentation configs '
                         f'have both)')
    cfg.model = dict(**cfg.tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # through dataset wrappers
        dataset = dataset.dataset
    dataset.pipeline = cfg.tta_pipeline


def build_cfg(args):
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    check_inputs(cfg, args.config, ['test_dataloader'],
                 checkpoints=[('checkpoint', args.checkpoint, None)])
    # Weights come from CHECKPOINT; the backbone's ImageNet init is not needed.
    backbone = backbone_cfg(cfg)
    if backbone is not None:
        backbone.init_cfg = None
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    if args.tta:
        enable_tta(cfg, args.config)
    enable_visualization(cfg, args.config, args.show, args.show_dir, args.wait_time)
    if args.out:
        check_out_file(args.out, cfg.default_scope)
        dump_predictions_cfg(cfg, args.out)
    return cfg


def run(cfg, args):
    """Check the checkpoint against the config's whole model, build the Runner
    for ``cfg`` and test."""
    checkpoint = load_checkpoint_file(args.checkpoint)
    model = build_model(cfg)
    if args.tta:
        model = model.module  # the TTA wrapper's inner model is what was saved
    state_dict = model_state_dict_of(checkpoint, model)
    strict = check_model_fit(model, state_dict,
                             f'checkpoint {args.checkpoint!r} (for {args.config})',
                             checkpoint)
    released = is_official_classifier(checkpoint)
    if not released:
        cfg.load_from = args.checkpoint
        del state_dict
    del checkpoint, model

    setup_cpu_distributed(cfg)
    runner = build_runner(cfg)
    if args.out:
        dump_predictions(cfg, runner, args.out)
    if released:
        # the released classifier, converted to the model's keys
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if args.tta:
            model = model.module  # the TTA wrapper's inner model
        load_state_dict(model, state_dict, strict=strict, logger='current')
    with local_checkpoint_policy():
        return runner.test()


def main(argv=None):
    args = parse_args(argv)
    return run(build_cfg(args), args)


if __name__ == '__main__':
    run_tool(main, __file__)
