"""The shipped configs (configs/*/*.py; the demo ones have their own tests).

Each one builds through mmengine's Runner: the model with its real arch (whose
parameter count is the paper's), the optimizer and schedulers, the evaluator,
and every dataloader, on tiny data sets in the real formats, down to one batch
through the real pipelines. The recipe values are those of SPEC section 4;
the T configs also take a training and a test step with a small backbone.
"""
import glob
import json
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmspatial  # noqa: E402,F401

from .helpers import (RESOLVED_CONFIGS, REPO_ROOT, SIZE, backbone_arguments, dump,  # noqa: E402
                      resolved_config, shipped_configs, shrink, use_data)

CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '[!_]*', '*.py')))

# name: (arch, drop_path_rate, parameters): SPEC sections 2 and 4, parameters
# in millions as the paper rounds them, or exact for the classifiers.
EXPECTED = {
    'maskrcnn_spatialmamba_t': ('tiny', 0.2, 46),
    'maskrcnn_spatialmamba_s': ('small', 0.3, 63),
    'maskrcnn_spatialmamba_b': ('base', 0.5, 115),
    'maskrcnn_spatialmamba_t_3x': ('tiny', 0.2, 46),
    'maskrcnn_spatialmamba_s_3x': ('small', 0.3, 63),
    'upernet_spatialmamba_t': ('tiny', 0.2, 57),
    'upernet_spatialmamba_s': ('small', 0.3, 73),
    'upernet_spatialmamba_b': ('base', 0.5, 127),
    'spatialmamba_t_in1k': ('tiny', 0.2, 26_748_862),
    'spatialmamba_s_in1k': ('small', 0.3, 43_074_280),
    'spatialmamba_b_in1k': ('base', 0.5, 95_745_592),
}
SWIN_KEYS = {'absolute_pos_embed', 'relative_position_bias_table', 'norm'}


def name_of(path):
    return osp.splitext(osp.basename(path))[0]


def test_every_config_is_covered():
    assert sorted(map(name_of, CONFIGS)) == sorted(EXPECTED)


def differences(actual, expected, prefix=''):
    """The dotted keys (and list indices) at which two resolved configs differ.

    ``_scope_`` is not compared: mmengine tags the dicts a config takes from an
    ``mmdet::``/``mmseg::`` base with that library's scope, which is the
    config's default scope anyway, so a dict no longer restated gains the tag.
    """
    if isinstance(actual, dict) and isinstance(expected, dict):
        keys = (set(actual) | set(expected)) - {'_scope_'}
        return [found for key in sorted(keys)
                for found in differences(actual.get(key, '<missing>'),
                                         expected.get(key, '<missing>'), f'{prefix}.{key}')]
    if isinstance(actual, list) and isinstance(expected, list) and \
            len(actual) == len(expected):
        return [found for i, (a, e) in enumerate(zip(actual, expected))
                for found in differences(a, e, f'{prefix}[{i}]')]
    return [] if actual == expected else [f'{prefix[1:]}: {actual!r} != {expected!r}']


@pytest.fixture(scope='module')
def recorded_configs():
    with open(RESOLVED_CONFIGS) as f:
        return json.load(f)


@pytest.mark.parametrize('path', shipped_configs())
def test_config_resolves_as_recorded(path, recorded_configs):
    """Each shipped config, resolved over its bases, is the recorded one: the
    configs state only what differs from their bases, and a value dropped from
    a config (or changed in a base) shows here. To change a recipe on purpose,
    re-record with tests.tools.helpers.write_resolved_configs()."""
    assert path in recorded_configs, f'{path} is not recorded'
    found = differences(resolved_config(osp.join(REPO_ROOT, path)), recorded_configs[path])
    assert not found, '\n'.join(found)


def test_every_recorded_config_is_shipped(recorded_configs):
    assert sorted(recorded_configs) == shipped_configs()


@pytest.mark.parametrize('path', CONFIGS, ids=name_of)
def test_recipe(path):
    """The published recipe, value by value."""
    cfg = Config.fromfile(path)
    name = name_of(path)
    arch, drop_path_rate, _ = EXPECTED[name]
    backbone = backbone_arguments(cfg.model.backbone)
    assert backbone['type'] == 'SpatialMamba'
    assert (backbone['arch'], backbone['drop_path_rate']) == (arch, drop_path_rate)
    assert cfg.custom_imports == dict(imports=['mmspatial'], allow_failed_imports=False)
    optimizer = cfg.optim_wrapper.optimizer
    if name.startswith('maskrcnn'):
        epochs, steps = (36, [27, 33]) if name.endswith('_3x') else (12, [8, 11])
        assert cfg.train_cfg.max_epochs == epochs
        assert cfg.param_scheduler[1].milestones == steps
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
        assert cfg.train_dataloader.batch_size * 8 == 16
        assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
        assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
        assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
        transforms = [t.type for t in cfg.train_dataloader.dataset.pipeline]
        if name.endswith('_3x'):
            assert 'RandomChoice' in transforms  # multi-scale + crop
        else:
            resize = cfg.train_dataloader.dataset.pipeline[2]
            assert (resize.type, resize.scale) == ('Resize', (1333, 800))
            assert 'RandomFlip' in transforms
        assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == SWIN_KEYS
    elif name.startswith('upernet'):
        assert cfg.train_cfg.max_iters == 160000
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 6e-5, 0.01)
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end) == ('LinearLR', 1500)
        assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == \
            ('PolyLR', 1.0, 0.0, 1500, 160000)
        assert cfg.train_dataloader.batch_size * 8 == 16
        assert cfg.crop_size == (512, 512)
        assert cfg.model.auxiliary_head.type == 'FCNHead'
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
        assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
        assert cfg.tta_model.type == 'SegTTAModel' and cfg.tta_pipeline
        assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == SWIN_KEYS
    else:
        assert tuple(backbone['out_indices']) == (3, )
        assert (cfg.model.neck.type, cfg.model.head.type) == \
            ('GlobalAveragePooling', 'LinearClsHead')
        assert cfg.test_dataloader.dataset.pipeline[-2].crop_size == 224


@pytest.mark.parametrize('path', CONFIGS, ids=name_of)
def test_config_builds(path, data, tmp_path):
    cfg = use_data(Config.fromfile(path), data)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    init_default_scope(cfg.default_scope)

    model = runner.model
    params = sum(p.numel() for p in model.parameters())
    expected = EXPECTED[name_of(path)][2]
    assert (params if expected > 1000 else round(params / 1e6)) == expected

    runner.optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    runner.param_schedulers = runner.build_param_scheduler(cfg.param_scheduler)
    runner.build_evaluator(cfg.val_evaluator)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        batch = next(iter(runner.build_dataloader(cfg[loader])))
        assert len(batch['inputs']) == len(batch['data_samples']) > 0
        assert batch['inputs'][0].shape[0] == 3


@pytest.mark.parametrize('path', [p for p in CONFIGS if name_of(p).endswith(('_t', '_t_in1k'))],
                         ids=name_of)
def test_train_and_test_step(path, tools, tmp_path):
    """One training step (loss, backward, the config's optim_wrapper) and one
    test step (post-processing included) of the config's model with a small
    backbone, through tools/analysis/benchmark_model.py."""
    from .helpers import TOOLS
    benchmark = tools('benchmark_model', osp.join(TOOLS, 'analysis'))
    config = dump(shrink(Config.fromfile(path)), tmp_path / 'small.py')
    common = [config, '--shape', str(SIZE), str(SIZE), '--warmup', '0', '--iters', '1',
              '--device', 'cpu']
    [trained] = benchmark.main(common + ['--train-step'])
    [tested] = benchmark.main(common)
    for result in (trained, tested):
        assert result['images_per_second'] > 0 and result['device'] == 'cpu'


def test_nodecay_option_extends_the_reference_setting(tmp_path):
    """The reference setting decays ln_1/ln_2/A_logs/Ds; the documented
    opt-in (configs/_base_/spatialmamba_nodecay.py) exempts them too."""
    from mmengine.optim import build_optim_wrapper
    base = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_spatialmamba_t.py')
    snippet = osp.join(REPO_ROOT, 'configs', '_base_', 'spatialmamba_nodecay.py')
    user_config = tmp_path / 'nodecay.py'
    user_config.write_text(f'_base_ = [{base!r}, {snippet!r}]\n'
                           'optim_wrapper = dict(paramwise_cfg=_base_.spatialmamba_nodecay)\n')
    import mmspatial.models  # noqa: F401
    from mmspatial.models import SpatialMamba
    model = torch.nn.Module()
    model.backbone = SpatialMamba(dict(dims=16, depths=[1, 1, 1, 1]))

    def decay_of(cfg):
        init_default_scope('mmdet')
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(g['params'][0])]: g['weight_decay'] for g in optimizer.param_groups}

    block = 'backbone.layers.0.blocks.0.'
    reference = decay_of(Config.fromfile(base))
    opt_in = decay_of(Config.fromfile(str(user_config)))
    for key in ('ln_1.weight', 'ln_2.bias', 'self_attention.A_logs', 'self_attention.Ds'):
        assert reference[block + key] == 0.05, key  # the reference's behaviour
        assert opt_in[block + key] == 0.0, key
    for key in ('self_attention.out_norm.weight', ):
        assert reference[block + key] == opt_in[block + key] == 0.0
    assert reference['backbone.outnorm0.weight'] == opt_in['backbone.outnorm0.weight'] == 0.0
    for key in ('self_attention.in_proj.weight', 'mlp.fc1.weight'):
        assert reference[block + key] == opt_in[block + key] == 0.05
