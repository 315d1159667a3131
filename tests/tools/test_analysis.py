"""tools/analysis: FLOPs against the paper's, the ERF tool, the timing tools
at the backbone and whole-model levels (the operators': test_benchmark_ops.py;
one training and test step of every T config: test_configs.py).

FLOPs of S and B at the detection and segmentation sizes (slow: about two
minutes together on 2 CPU cores) come from cheaper counts that add up to the
same number, see ``test_flops_of_s_and_b_models``."""
import math
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402

from mmspatial.errors import InputError  # noqa: E402

from .helpers import REPO_ROOT, TOOLS, dump, shrink  # noqa: E402

ANALYSIS = osp.join(TOOLS, 'analysis')
DET_T = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_spatialmamba_t.py')
SEG_T = osp.join(REPO_ROOT, 'configs', 'segmentation', 'upernet_spatialmamba_t.py')
CLS_T = osp.join(REPO_ROOT, 'configs', 'classification', 'spatialmamba_t_in1k.py')


@pytest.fixture
def get_flops(tools):
    pytest.importorskip('mmspatial.ops.flops')
    return tools('get_flops', ANALYSIS)


@pytest.fixture(scope='module')
def flops_once(tools):
    """``get_flops.main(args)`` of each argument list, computed once per module
    (the whole T models at full size serve two tests each)."""
    pytest.importorskip('mmspatial.ops.flops')
    get_flops = tools('get_flops', ANALYSIS)
    results = {}

    def run(*args):
        if args not in results:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the function-scoped fixtures do
            try:
                results[args] = get_flops.main(list(args))
            finally:
                torch.set_num_threads(threads)
        return results[args]
    return run


def assert_close_to_paper(result, paper_gflops):
    assert result['flops'] / 1e9 == pytest.approx(paper_gflops, rel=0.03)


def test_flops_backbone_t_224(get_flops, capsys):
    """4.5G (the paper) within 3%; the SSM is counted, scan and fusion; the
    phases are announced on stderr, the report alone on stdout."""
    result = get_flops.main(['--arch', 't', '--shape', '224', '224'])
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if 'get_flops.py' in line] == [
        "get_flops.py: building SpatialMamba(arch='t')",
        "get_flops.py: tracing SpatialMamba(arch='t') at 224x224 and counting (up to a "
        'minute for a detector or segmentor at full size)']
    assert "SpatialMamba(arch='t'), input 1x3x224x224:" in captured.out
    assert 'get_flops.py:' not in captured.out
    assert_close_to_paper(result, 4.5)
    assert round(result['flops'] / 1e9, 2) == PAPER_AND_README['backbone', 't'][1]
    assert result['params'] == 26_236_758
    ssm = {op for op in result['by_operator'] if op not in
           ('linear', 'conv', 'layer_norm', 'batch_norm')}
    assert ssm, 'the structure-aware SSM was not counted'
    assert not any('StructureAwareSSM' in op for op in result['uncounted'])


def test_flops_classifier_config_224(get_flops):
    result = get_flops.main([CLS_T, '--shape', '224', '224'])
    assert_close_to_paper(result, 4.5)
    assert result['params'] == 26_748_862


def test_flops_maskrcnn_t_1280x800(flops_once):
    result = flops_once(DET_T, '--shape', '1280', '800')
    assert_close_to_paper(result, 261)
    assert round(result['flops'] / 1e9, 2) == PAPER_AND_README['maskrcnn', 't'][1]
    assert round(result['params'] / 1e6) == 46


def test_flops_upernet_t_2048x512(flops_once):
    result = flops_once(SEG_T, '--shape', '2048', '512')
    assert_close_to_paper(result, 936)
    assert round(result['flops'] / 1e9, 2) == PAPER_AND_README['upernet', 't'][1]
    assert round(result['params'] / 1e6) == 57


def test_flops_backbone_only_of_a_config(get_flops):
    result = get_flops.main([DET_T, '--backbone-only', '--shape', '224', '224'])
    assert_close_to_paper(result, 4.5)


# The paper's GFLOPs and ours to the two decimals the README's model tables
# print (tests/docs/test_documentation.py checks that they do).
PAPER_AND_README = {
    ('backbone', 't'): (4.5, 4.46), ('maskrcnn', 't'): (261, 261.09),
    ('upernet', 't'): (936, 936.37),
    ('backbone', 's'): (7.1, 7.11), ('backbone', 'b'): (15.8, 15.79),
    ('maskrcnn', 's'): (315, 315.15), ('maskrcnn', 'b'): (494, 493.29),
    ('upernet', 's'): (992, 991.74), ('upernet', 'b'): (1176, 1176.24),
}
# config, full size, a small size with stage sizes exactly 1/k of the full
# ones at every stride (4 to 32), and k squared.
FULL_AND_SMALL = {
    'maskrcnn': ('detection/maskrcnn_spatialmamba_{}.py', (1280, 800), (256, 160), 25),
    'upernet': ('segmentation/upernet_spatialmamba_{}.py', (2048, 512), (512, 128), 16),
}


def shape_args(shape):
    return ('--shape', str(shape[0]), str(shape[1]))


@pytest.mark.parametrize('arch', ['s', 'b'])
def test_flops_backbone_s_b_224(arch, flops_once):
    result = flops_once('--arch', arch, *shape_args((224, 224)))
    paper, readme = PAPER_AND_README['backbone', arch]
    assert_close_to_paper(result, paper)
    assert round(result['flops'] / 1e9, 2) == readme


@pytest.fixture(scope='module')
def thin_b(tmp_path_factory):
    """Configs of the B models with one block per stage (same widths), by name."""
    folder = tmp_path_factory.mktemp('thin_b')
    paths = {}
    for model, (config, *_) in FULL_AND_SMALL.items():
        cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', config.format('b')))
        cfg.model.backbone.arch = dict(dims=96, depths=[1, 1, 1, 1])
        cfg.model.backbone.init_cfg = None
        paths[model] = dump(cfg, folder / f'{model}.py')
    return paths


@pytest.mark.parametrize('model', FULL_AND_SMALL)
def test_backbone_flops_scale_with_the_pixels(model, flops_once, thin_b):
    """Every backbone operation is counted per output element, so at a size
    whose stages are all 1/k as wide and tall it counts exactly 1/k^2: what
    the S and B model counts below rely on."""
    _, full, small, factor = FULL_AND_SMALL[model]
    at_full = flops_once(thin_b[model], '--backbone-only', *shape_args(full))
    at_small = flops_once(thin_b[model], '--backbone-only', *shape_args(small))
    assert at_full['flops'] == factor * at_small['flops']


@pytest.mark.parametrize('model', ['maskrcnn', 'upernet'])
@pytest.mark.parametrize('arch', ['s', 'b'])
def test_flops_of_s_and_b_models(model, arch, flops_once, thin_b):
    """The whole S or B model at full size, counted as a model R with the same
    neck and heads (the same backbone widths) at full size, plus the
    difference of the two backbones counted at the small size times k.

    R is the T model for S (same widths), and for B the B model with one
    block per stage, much cheaper than B at full size."""
    config, full, small, factor = FULL_AND_SMALL[model]
    if arch == 's':
        reference = flops_once(osp.join(REPO_ROOT, 'configs', config.format('t')),
                               *shape_args(full))
        reference_backbone = flops_once('--arch', 't', *shape_args(small))
    else:
        reference = flops_once(thin_b[model], *shape_args(full))
        reference_backbone = flops_once(thin_b[model], '--backbone-only', *shape_args(small))
    backbone = flops_once('--arch', arch, *shape_args(small))
    flops = reference['flops'] + factor * (backbone['flops'] - reference_backbone['flops'])
    paper, readme = PAPER_AND_README[model, arch]
    assert flops / 1e9 == pytest.approx(paper, rel=0.03)
    assert round(flops / 1e9, 2) == readme


def test_analysis_tools_name_a_missing_config(tools):
    benchmark = tools('benchmark_model', ANALYSIS)
    with pytest.raises(InputError, match="config file not found: 'nope.py'"):
        benchmark.main(['nope.py'])
    with pytest.raises(InputError, match='mmdet::nope.py: not a config of that library'):
        benchmark.main(['mmdet::nope.py'])


def test_model_benchmark_side_by_side(tools, tmp_path, capsys):
    """tools/analysis/benchmark_model.py with two small classifiers taking
    turns: one row each, ratios against the first, progress on stderr only.
    No timing is asserted."""
    benchmark = tools('benchmark_model', ANALYSIS)
    small = dump(shrink(Config.fromfile(CLS_T)), tmp_path / 'small.py')
    smaller = shrink(Config.fromfile(CLS_T))
    smaller.model.backbone.arch.dims = 8
    smaller.model.head.in_channels = 64
    smaller = dump(smaller, tmp_path / 'smaller.py')
    results = benchmark.main([small, smaller, '--shape', '32', '32', '--warmup', '0',
                              '--iters', '2', '--device', 'cpu'])
    assert [r['config'] for r in results] == [small, smaller]
    assert results[0]['ratio'] == 1.0 and results[1]['ratio'] > 0
    assert all(r['images_per_second'] > 0 and r['mode'] == 'inference' for r in results)
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith('| ')]
    assert len(rows) == 1 + 2 and rows[1].endswith('| 1.00x |')
    assert 'rounds:' in captured.err and '2/2' in captured.err
    assert '\033' not in captured.err + captured.out
    with pytest.raises(InputError, match='different tasks'):
        benchmark.main([small, SEG_T, '--iters', '1'])


def test_erf_heatmap_and_asymmetry(tools, tmp_path, data):
    erf_tool = tools('visualize_erf', ANALYSIS)
    config = dump(shrink(Config.fromfile(DET_T)), tmp_path / 'small.py')
    out = tmp_path / 'erf.png'
    erf, stats = erf_tool.main([config, '--stage', '2', '--size', '64', '--num-images', '2',
                                '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert erf.shape == (64, 64) and erf.min() >= 0 and erf.max() > 0
    assert 0 < stats['above'] < 1 and 0 < stats['left'] < 1
    assert set(stats['square_side']) == {0.2, 0.5, 0.9}
    # real images instead of noise
    erf_tool.main([config, '--images', str(data / 'coco' / 'val'), '--stage', '1',
                   '--size', '64', '--out', str(out)])
    with pytest.raises(FileNotFoundError, match='no images'):
        erf_tool.main([config, '--images', str(tmp_path / 'none'), '--out', str(out)])


def test_backbone_benchmark_at_tiny_sizes(tools, capsys):
    """tools/analysis/benchmark_backbone.py end to end at 64x64, channels-last:
    the three models in every row, finite ratios, the settings printed,
    progress per round on stderr. No timing is asserted."""
    compare = tools('benchmark_backbone', ANALYSIS)
    result = compare.main(['--shape', '64', '64', '--batch-sizes', '1', '2',
                           '--repeats', '2', '--warmup', '1', '--channels-last'])
    labels = [row['label'] for row in result['rows']]
    assert labels == ['backbone forward, batch 1, 64x64', 'backbone forward, batch 2, 64x64',
                      'backbone forward + backward, batch 2, 64x64']
    models = {'Spatial-Mamba-T', 'Swin-T', 'ConvNeXt-T'}
    for row in result['rows']:
        assert set(row['seconds']) == models
        assert set(row['ratios']) == models - {'Spatial-Mamba-T'}
        assert all(math.isfinite(ratio) and ratio > 0 for ratio in row['ratios'].values())
    captured = capsys.readouterr()
    printed = captured.out
    assert 'threads: 1 intra-op' in printed and 'channels-last: True' in printed
    table = [line for line in printed.splitlines() if line.startswith('| ')]
    assert len(table) == 1 + len(labels)
    assert all(name in table[0] for name in models)
    assert captured.err.count('rounds:') == len(labels) and '2/2' in captured.err
    assert 'rounds:' not in printed


def test_backbone_benchmark_rejects_bad_arguments(tools):
    compare = tools('benchmark_backbone', ANALYSIS)
    for argv in (['--repeats', '0'], ['--batch-sizes', '0'], ['--shape', '64']):
        with pytest.raises(SystemExit):
            compare.main(argv)
