"""tools/train.py, tools/test.py and tools/convert_checkpoint.py: they run
the configs through mmengine's Runner, and bad inputs (a missing config,
data root or checkpoint, a checkpoint of another arch) stop them with a
message that names the culprit and the fix."""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmspatial.errors import InputError  # noqa: E402

from mmspatial.models import SpatialMamba  # noqa: E402

from .helpers import (REPO_ROOT, TOOLS, dump, shrink, small_images,  # noqa: E402
                      small_train_images, use_data)

DET_T = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_spatialmamba_t.py')
DET_DEMO = osp.join(REPO_ROOT, 'configs', 'detection', 'demo',
                    'maskrcnn_spatialmamba_t_synthetic.py')
SEG_DEMO = osp.join(REPO_ROOT, 'configs', 'segmentation', 'demo',
                    'upernet_spatialmamba_t_synthetic.py')
SEG_T = osp.join(REPO_ROOT, 'configs', 'segmentation', 'upernet_spatialmamba_t.py')
SEG_S = osp.join(REPO_ROOT, 'configs', 'segmentation', 'upernet_spatialmamba_s.py')
CLS_T = osp.join(REPO_ROOT, 'configs', 'classification', 'spatialmamba_t_in1k.py')
CLS_S = osp.join(REPO_ROOT, 'configs', 'classification', 'spatialmamba_s_in1k.py')


def official_classifier(keys, arch, head_bias=None):
    """A released ImageNet checkpoint of ``arch`` with the official key names
    and shapes (tests/data/official_state_dict_keys.json), all zeros."""
    state = {name: torch.zeros(shape, dtype=torch.long if 'num_batches' in name
                               else torch.float32)
             for name, shape in keys[arch]['classifier_keys'].items()}
    if head_bias is not None:
        state['head.bias'] = head_bias
    return {'model': state}


# ------------------------------------------------------------ command line

def test_command_line_options(tools, data, tmp_path, monkeypatch):
    train, test = tools('train'), tools('test')
    # unset during the test, restored (or removed) after it
    monkeypatch.setenv('LOCAL_RANK', '')
    monkeypatch.delenv('LOCAL_RANK')
    config = dump(use_data(Config.fromfile(DET_T), data), tmp_path / 'det.py')
    last = tmp_path / 'last.pth'
    last.write_bytes(b'')  # read later, by run()
    args = train.parse_args([config, '--amp', '--resume', str(last), '--launcher', 'pytorch',
                             '--local-rank', '1', '--work-dir', str(tmp_path),
                             '--auto-scale-lr',
                             '--cfg-options', 'train_dataloader.batch_size=4'])
    assert args.local_rank == 1 and train.os.environ['LOCAL_RANK'] == '1'
    cfg = train.build_cfg(args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.launcher == 'pytorch'
    # the Runner scales the lr by (GPUs x 4 images) / 16, the recipe's batch
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    assert cfg.resume and cfg.load_from == str(last) and cfg.work_dir == str(tmp_path)
    assert cfg.train_dataloader.batch_size == 4
    # weights come from load_from: the missing ImageNet checkpoint is not needed
    assert cfg.model.backbone.init_cfg is None
    args = test.parse_args([config, str(last), '--amp', '--local_rank', '0'])
    cfg = test.build_cfg(args)
    assert cfg.test_cfg.fp16 and cfg.model.backbone.init_cfg is None
    assert cfg.work_dir.endswith('work_dirs/det')
    with pytest.raises(InputError, match='has no auto_scale_lr.base_batch_size'):
        train.build_cfg(train.parse_args([config, '--auto-scale-lr',
                                          '--cfg-options', 'auto_scale_lr=None']))


# ----------------------------------------------------------------- bad inputs

def test_missing_config_is_named(tools):
    train, test = tools('train'), tools('test')
    with pytest.raises(InputError, match="config file not found: 'nope.py'"):
        train.main(['nope.py'])
    with pytest.raises(InputError, match="config file not found: 'nope.py'"):
        test.main(['nope.py', 'model.pth'])


def test_command_line_error_is_one_line():
    result = subprocess.run([sys.executable, osp.join(TOOLS, 'train.py'), 'nope.py'],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "train.py: error: config file not found: 'nope.py'")


def test_missing_data_root_says_what_to_put_there(tools, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here
    train, test = tools('train'), tools('test')
    with pytest.raises(InputError) as error:
        train.main([DET_T])
    message = str(error.value)
    assert "data root 'data/coco/' of train_dataloader" in message
    assert 'COCO 2017' in message and 'train_dataloader.dataset.data_root=PATH' in message
    assert 'mmspatial.datasets.synthetic' in message
    with pytest.raises(InputError, match='ADE20K') as error:
        test.main([SEG_T, 'model.pth'])
    assert "'data/ade/ADEChallengeData2016' of test_dataloader" in str(error.value)
    with pytest.raises(InputError, match='ImageNet-1K'):
        test.main([CLS_T, 'model.pth'])


def test_missing_pretrained_backbone_is_an_error(tools, data, tmp_path):
    train = tools('train')
    config = dump(use_data(Config.fromfile(DET_T), data), tmp_path / 'det.py')
    with pytest.raises(InputError) as error:
        train.main([config, '--work-dir', str(tmp_path)])
    message = str(error.value)
    assert "pretrained checkpoint 'checkpoints/spatialmamba_t_in1k.pth'" in message
    assert 'model.backbone.init_cfg=None' in message


def test_missing_checkpoint_is_named(tools, data, tmp_path):
    test = tools('test')
    config = dump(use_data(Config.fromfile(SEG_T), data), tmp_path / 'seg.py')
    with pytest.raises(InputError, match="checkpoint 'nope.pth' does not exist"):
        test.main([config, 'nope.pth', '--work-dir', str(tmp_path)])


def test_checkpoint_of_another_arch_is_an_error(tools, data, tmp_path):
    """A T checkpoint for an S config: mmengine would load it with warnings and
    evaluate a half-random backbone; the tool refuses and says why."""
    test = tools('test')
    backbone = SpatialMamba('tiny').state_dict()
    checkpoint = tmp_path / 'upernet_t.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in backbone.items()}}, checkpoint)
    config = dump(use_data(Config.fromfile(SEG_S), data), tmp_path / 'seg_s.py')
    with pytest.raises(InputError) as error:
        test.main([config, str(checkpoint), '--work-dir', str(tmp_path)])
    message = str(error.value)
    assert 'depths [2, 4, 21, 5]' in message and 'another arch' in message
    assert '378 missing in the checkpoint: layers.2.blocks.10.' in message


def test_classifier_checkpoint_for_a_detector_is_an_error(tools, data, tmp_path,
                                                          official_keys):
    test = tools('test')
    checkpoint = tmp_path / 'official_t.pth'
    torch.save(official_classifier(official_keys, 'tiny'), checkpoint)
    config = dump(shrink(use_data(Config.fromfile(DET_T), data)), tmp_path / 'det.py')
    with pytest.raises(InputError, match=r"detector \(MaskRCNN\): it is a released "
                       r"ImageNet classifier \({'model': ...}\): use it as the backbone's "
                       'init_cfg checkpoint'):
        test.main([config, str(checkpoint), '--work-dir', str(tmp_path)])


def test_released_classifier_of_another_arch_is_an_error(tools, data, tmp_path,
                                                         official_keys):
    test = tools('test')
    checkpoint = tmp_path / 'official_t.pth'
    torch.save(official_classifier(official_keys, 'tiny'), checkpoint)
    config = dump(use_data(Config.fromfile(CLS_S), data), tmp_path / 'cls_s.py')
    with pytest.raises(InputError, match='another arch'):
        test.main([config, str(checkpoint), '--work-dir', str(tmp_path)])


def unreadable_message(path):
    return re.escape(f"checkpoint '{path}' could not be read")


def test_unreadable_checkpoint_is_one_clear_error(tools, data, tmp_path, unreadable_checkpoint):
    """A truncated or corrupted file: every tool that reads a checkpoint names
    it and says it could not be read, before any Runner is built."""
    train, test, convert = tools('train'), tools('test'), tools('convert_checkpoint')
    erf_tool = tools('visualize_erf', osp.join(TOOLS, 'analysis'))
    path = str(unreadable_checkpoint)
    config = dump(use_data(Config.fromfile(SEG_T), data), tmp_path / 'seg.py')
    work_dir = ['--work-dir', str(tmp_path / 'work')]
    with pytest.raises(InputError, match=unreadable_message(path)):
        test.main([config, path] + work_dir)
    with pytest.raises(InputError, match=unreadable_message(path)):  # load_from
        train.main([config, '--resume', path] + work_dir)
    with pytest.raises(InputError, match=unreadable_message(path)):  # init_cfg
        train.main([config, '--cfg-options', f'model.backbone.init_cfg.checkpoint={path}']
                   + work_dir)
    with pytest.raises(InputError, match=unreadable_message(path)):
        convert.main([path, str(tmp_path / 'out.pth'), '--to', 'backbone'])
    with pytest.raises(InputError, match=unreadable_message(path)):
        erf_tool.main(['--arch', 't', '--checkpoint', path, '--out', str(tmp_path / 'erf.png')])


def test_unreadable_checkpoint_on_the_command_line(unreadable_checkpoint, tmp_path):
    result = subprocess.run(
        [sys.executable, osp.join(TOOLS, 'convert_checkpoint.py'), str(unreadable_checkpoint),
         str(tmp_path / 'out.pth'), '--to', 'backbone'],
        capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 1
    assert re.match('convert_checkpoint.py: error: ' + unreadable_message(unreadable_checkpoint),
                    result.stderr.strip().splitlines()[-1])


@pytest.fixture
def no_runner(monkeypatch):
    """Building a Runner fails the test: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError('the Runner was built before the checkpoint was checked')
    monkeypatch.setattr(Runner, 'from_cfg', refuse)


def test_checkpoints_of_another_arch_stop_before_the_runner(tools, data, tmp_path, no_runner):
    """The checkpoint to test, to resume or load from, and the backbone's
    pretrained one, each of another arch (T for an S config)."""
    train, test = tools('train'), tools('test')
    tiny = SpatialMamba('tiny').state_dict()
    whole = tmp_path / 'upernet_t.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in tiny.items()}}, whole)
    backbone = tmp_path / 'backbone_t.pth'
    torch.save(tiny, backbone)
    config = dump(use_data(Config.fromfile(SEG_S), data), tmp_path / 'seg_s.py')
    work_dir = ['--work-dir', str(tmp_path / 'work')]
    depths = r'depths \[2, 4, 21, 5\]\): is it a checkpoint of another arch'
    with pytest.raises(InputError, match=depths):
        test.main([config, str(whole)] + work_dir)
    with pytest.raises(InputError, match=depths):
        train.main([config, '--resume', str(whole)] + work_dir)
    with pytest.raises(InputError, match=depths):
        train.main([config, '--cfg-options', f'model.backbone.init_cfg.checkpoint={backbone}']
                   + work_dir)


def test_checkpoint_must_fit_the_whole_model(tools, data, tmp_path, no_runner, monkeypatch):
    """Not only the backbone: a Mask R-CNN checkpoint for the UperNet config, a
    150-class head for its 5 classes and a NaN head are each refused with a
    first line that names the checkpoint, the config and the problem, before
    the Runner is built; with partial loading allowed the Runner is built."""
    from mmspatial.models.whole_model_check import ALLOW_PARTIAL_LOAD_ENV
    from mmspatial.utils import build_model
    test = tools('test')
    cfg = shrink(use_data(Config.fromfile(SEG_DEMO), data))
    cfg.model.decode_head.channels = cfg.model.auxiliary_head.channels = 16  # fast to build
    config = dump(cfg, tmp_path / 'seg.py')
    segmentor = build_model(Config.fromfile(config)).state_dict()
    detector = build_model(shrink(Config.fromfile(DET_DEMO))).state_dict()
    ade_head = dict(segmentor)
    for head in ('decode_head', 'auxiliary_head'):
        channels = segmentor[f'{head}.conv_seg.weight'].shape[1]
        ade_head[f'{head}.conv_seg.weight'] = torch.zeros(150, channels, 1, 1)
        ade_head[f'{head}.conv_seg.bias'] = torch.zeros(150)
    nan_head = {key: value.clone() for key, value in segmentor.items()}
    nan_head['decode_head.conv_seg.weight'][0] = float('nan')
    cases = {
        'maskrcnn': (detector, 'it is a detection checkpoint (it holds rpn_head.*, '
                               'roi_head.* weights)'),
        'ade_head': (ade_head, '4 tensors of another shape, checkpoint vs model ('
                               'auxiliary_head.conv_seg.bias (150,) vs (5,), ',
                     '(4 in all)): a head for another number of classes?'),
        'nan_head': (nan_head, '1 tensor with NaN or Inf values: '
                               'decode_head.conv_seg.weight (16 of 80)'),
    }
    work_dir = ['--work-dir', str(tmp_path / 'work')]
    for name, (state_dict, *problems) in cases.items():
        path = str(tmp_path / f'{name}.pth')
        torch.save({'state_dict': state_dict, 'meta': {}}, path)
        with pytest.raises(InputError) as error:
            test.main([config, path] + work_dir)
        [first] = str(error.value).splitlines()  # one line
        assert first.startswith(f"checkpoint '{path}' (for {config}) does not fit the "
                                "config's segmentor (EncoderDecoder): "), first
        assert all(problem in first for problem in problems), first
    monkeypatch.setenv(ALLOW_PARTIAL_LOAD_ENV, '1')
    with pytest.raises(AssertionError, match='the Runner was built'):
        test.main([config, str(tmp_path / 'ade_head.pth')] + work_dir)


def test_resume_without_a_path_needs_no_pretrained_checkpoint(tools, data, tmp_path):
    """``--resume`` alone takes the work dir's latest checkpoint, whose weights
    replace the ImageNet ones: a missing pretrained file is then no error. With
    no checkpoint in the work dir, training starts afresh and needs it."""
    train = tools('train')
    cfg = small_train_images(small_images(shrink(use_data(Config.fromfile(CLS_T), data))))
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(by_epoch=False, max_iters=1, val_interval=100)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1)
    work_dir = str(tmp_path / 'work')
    assert train.main([dump(cfg, tmp_path / 'cls.py'), '--work-dir', work_dir]).iter == 1

    missing = str(tmp_path / 'imagenet.pth')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=missing)
    config = dump(cfg, tmp_path / 'cls_pretrained.py')
    resumed = train.main([config, '--work-dir', work_dir, '--resume',
                          '--cfg-options', 'train_cfg.max_iters=2'])
    assert resumed.iter == 2 and resumed.cfg.load_from.endswith('iter_1.pth')
    with pytest.raises(InputError, match=re.escape(f"pretrained checkpoint '{missing}'")):
        train.main([config, '--work-dir', str(tmp_path / 'fresh'), '--resume'])


# ------------------------------------------------------------------ runs

def test_released_classifier_evaluates_as_it_is(tools, data, tmp_path, official_keys):
    """tools/test.py takes the official {'model': ...} file: converted on the
    fly, loaded strictly. All-zero weights but the head's bias make every
    prediction the bias's class: half of the tiny val set."""
    test = tools('test')
    bias = torch.zeros(1000)
    bias[1] = 1.0
    checkpoint = tmp_path / 'official_t.pth'
    torch.save(official_classifier(official_keys, 'tiny', head_bias=bias), checkpoint)
    config = dump(small_images(use_data(Config.fromfile(CLS_T), data)), tmp_path / 'cls.py')
    out = tmp_path / 'predictions.pkl'
    with pytest.raises(InputError, match='give a name ending in .pkl'):
        test.main([config, str(checkpoint), '--out', str(tmp_path / 'p.json')])
    metrics = test.main([config, str(checkpoint), '--work-dir', str(tmp_path),
                         '--out', str(out)])
    assert metrics['accuracy/top1'] == pytest.approx(50.0)
    from mmengine.fileio import load
    predictions = load(str(out))  # written by this test's own run
    assert [int(p['pred_label']) for p in predictions] == [1] * len(predictions) == [1] * 4


def test_train_then_test_with_tta(tools, data, tmp_path):
    """tools/train.py trains a (small) UperNet config for two iterations and
    saves a checkpoint; tools/test.py evaluates it, with and without the
    multi-scale + flip test-time augmentation."""
    train, test = tools('train'), tools('test')
    cfg = small_train_images(small_images(shrink(use_data(Config.fromfile(SEG_T), data))))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.default_hooks.logger.interval = 1
    for transform in cfg.tta_pipeline[1].transforms[0]:
        transform.scale_factor = min(transform.scale_factor, 1.0)  # keep it small
    config = dump(cfg, tmp_path / 'seg.py')
    work_dir = tmp_path / 'work'
    runner = train.main([config, '--work-dir', str(work_dir)])
    assert runner.iter == 2
    checkpoint = str(work_dir / 'iter_2.pth')
    assert osp.isfile(checkpoint)
    out, shown = tmp_path / 'label_maps', tmp_path / 'drawn'
    single = test.main([config, checkpoint, '--work-dir', str(work_dir),
                        '--out', str(out), '--show-dir', str(shown)])
    multi = test.main([config, checkpoint, '--work-dir', str(work_dir), '--tta'])
    assert 0 <= single['mIoU'] <= 100 and 0 <= multi['mIoU'] <= 100
    # --out keeps a label map, --show-dir a drawing, per val image (2)
    assert len(list(out.rglob('*.png'))) == 2
    assert len(list(shown.rglob('*.png'))) == 2


def test_tta_needs_a_tta_config(tools, data, tmp_path):
    test = tools('test')
    config = dump(shrink(use_data(Config.fromfile(DET_T), data)), tmp_path / 'det.py')
    checkpoint = tmp_path / 'whatever.pth'
    checkpoint.write_bytes(b'')  # never read: the config is refused first
    with pytest.raises(InputError, match='defines no tta_model and no tta_pipeline'):
        test.main([config, str(checkpoint), '--tta', '--work-dir', str(tmp_path)])


# ------------------------------------------------------- convert_checkpoint

def test_convert_released_classifier(tools, tmp_path, official_keys):
    convert = tools('convert_checkpoint')
    src = tmp_path / 'official_t.pth'
    torch.save(official_classifier(official_keys, 'tiny'), src)

    backbone = convert.main([str(src), str(tmp_path / 'bb.pth'), '--to', 'backbone'])
    assert backbone['meta']['arch'] == 'tiny'
    model = SpatialMamba('tiny', init_cfg=dict(type='Pretrained',
                                               checkpoint=str(tmp_path / 'bb.pth')))
    model.init_weights()  # strict about shapes, raises on a misfit
    assert set(official_keys['tiny']['backbone_keys']) - {
        k[len('backbone.'):] for k in backbone['state_dict']} == {
        f'outnorm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}

    classifier = convert.main([str(src), str(tmp_path / 'cls.pth'), '--to', 'mmpretrain',
                               '--arch', 't'])
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(CLS_T).model)
    missing, unexpected = model.load_state_dict(classifier['state_dict'], strict=True)
    assert not missing and not unexpected

    with pytest.raises(InputError,
                       match=r'--arch s asked for .*depths \[2, 4, 21, 5\]'):
        convert.main([str(src), str(tmp_path / 'x.pth'), '--to', 'backbone', '--arch', 's'])
    with pytest.raises(InputError, match='needs an ImageNet classifier'):
        convert.main([str(tmp_path / 'bb.pth'), str(tmp_path / 'x.pth'), '--to', 'mmpretrain'])


def test_errors_of_the_users_data_inside_the_runner_are_one_line(tools, data, tmp_path,
                                                                 monkeypatch):
    """A config entry the model does not take, and a missing annotation file
    found only by the dataset inside the Runner: one line each, naming it."""
    from mmspatial.utils import run_tool
    train = tools('train')
    cfg = small_train_images(small_images(shrink(use_data(Config.fromfile(CLS_T), data))))
    cfg.train_cfg = dict(by_epoch=False, max_iters=1, val_interval=100)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    config = dump(cfg, tmp_path / 'cls.py')
    work_dir = ['--work-dir', str(tmp_path / 'work')]
    with pytest.raises(SystemExit) as exit_:
        run_tool(lambda: train.main([config, '--cfg-options', 'model.backbone.dpr=0.1']
                                    + work_dir), 'train.py', [])
    assert str(exit_.value.code) == (
        "train.py: error: SpatialMamba takes no argument 'dpr': a config entry or "
        "--cfg-options key it does not know (a typo?) (--debug shows the traceback)")
    # the file exists when the tool checks it, and is gone when the dataset reads it
    ann_file = tmp_path / 'train.txt'
    ann_file.write_text((data / 'imagenet' / 'meta' / 'train.txt').read_text())
    original = train.check_inputs

    def check_then_remove(*args, **kwargs):
        original(*args, **kwargs)
        ann_file.unlink()

    monkeypatch.setitem(train.main.__globals__, 'check_inputs', check_then_remove)
    with pytest.raises(SystemExit) as exit_:
        run_tool(lambda: train.main([config, '--cfg-options',
                                     f'train_dataloader.dataset.ann_file={ann_file}']
                                    + work_dir), 'train.py', [])
    message = str(exit_.value.code)
    assert message.startswith('train.py: error: ') and str(ann_file) in message
    assert '\n' not in message
