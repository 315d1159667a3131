"""What ``tools/test.py`` writes and shows besides its metrics, as the test
tools of mmdet, mmseg and mmpretrain do: ``--out``, ``--show``,
``--show-dir`` and ``--wait-time``, set on the config before the Runner is
built, with the visualization hook and dump metric of the config's library.
"""
import os.path as osp

from ..errors import InputError

# The visualization hook of each library, and the argument that turns it on.
VISUALIZATION_HOOKS = {
    'mmdet': ('DetVisualizationHook', 'draw'),
    'mmseg': ('SegVisualizationHook', 'draw'),
    'mmpretrain': ('VisualizationHook', 'enable'),
}
PICKLE_SUFFIXES = ('.pkl', '.pickle')


def enable_visualization(cfg, config_path, show=False, show_dir=None, wait_time=2.0):
    """Turn on the config's visualization hook: draw the predictions, show
    them in a window (``show``, ``wait_time`` seconds each) and/or save them
    under ``show_dir`` (relative paths under the run's timestamped log dir,
    as the libraries do)."""
    if not (show or show_dir):
        return
    scope = cfg.default_scope
    name, switch = VISUALIZATION_HOOKS[scope]
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise InputError(f'--show / --show-dir: config {config_path} has no '
                         f'default_hooks.visualization (a {name})')
    hook[switch] = True
    if scope == 'mmseg':
        hook.interval = 1  # every test image, as mmdet's hook draws them
    if show:
        hook.show = True
        hook.wait_time = wait_time
    if show_dir:
        if scope == 'mmseg':  # SegVisualizationHook saves through the visualizer
            cfg.visualizer.save_dir = show_dir
            # a visualizer of its own: one of the same name made earlier in the
            # process (mmengine keeps them by name) would keep its save_dir
            cfg.visualizer.name = f'visualizer:{show_dir}'
        elif scope == 'mmpretrain':
            hook.out_dir = show_dir
        else:
            hook.test_out_dir = show_dir


def check_out_file(out, scope):
    """``--out``: a pickle file of the predictions (mmdet, mmpretrain) or, for
    mmseg, a directory for the predicted label maps."""
    if scope != 'mmseg' and not out.endswith(PICKLE_SUFFIXES):
        raise InputError(f'--out {out!r}: the predictions are dumped to a pickle '
                         f'file; give a name ending in .pkl')
    parent = osp.dirname(osp.abspath(out))
    if not osp.isdir(parent):
        raise InputError(f'--out {out!r}: folder {parent!r} does not exist')


def dump_predictions(cfg, runner, out):
    """Make the test loop write its predictions to ``out``: mmseg's metric
    keeps the label maps in a folder; mmdet's and mmpretrain's dump metric
    writes a pickle when the loop ends."""
    scope = cfg.default_scope
    if scope == 'mmseg':
        return  # set on the evaluator config, see dump_predictions_cfg
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as DumpMetric
    else:
        from mmengine.evaluator import DumpResults as DumpMetric
    runner.test_evaluator.metrics.append(DumpMetric(out_file_path=out))


def dump_predictions_cfg(cfg, out):
    """mmseg: the IoU metric keeps its label maps under ``out``."""
    if cfg.default_scope == 'mmseg':
        evaluator = cfg.test_evaluator
        evaluator.output_dir = out
        evaluator.keep_results = True
