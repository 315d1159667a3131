"""tools/analysis: FLOPs against the paper's, the ERF tool, the benchmark's
bad inputs, the backbone comparison. (The benchmark's runs are in
test_configs.py.)"""
import math
import os.path as osp

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402

from .helpers import REPO_ROOT, TOOLS, dump, shrink  # noqa: E402

ANALYSIS = osp.join(TOOLS, 'analysis')
DET_T = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_spatialmamba_t.py')
SEG_T = osp.join(REPO_ROOT, 'configs', 'segmentation', 'upernet_spatialmamba_t.py')
CLS_T = osp.join(REPO_ROOT, 'configs', 'classification', 'spatialmamba_t_in1k.py')


@pytest.fixture
def get_flops(tools):
    pytest.importorskip('mmspatial.ops.flops')
    return tools('get_flops', ANALYSIS)


def assert_close_to_paper(result, paper_gflops):
    assert result['flops'] / 1e9 == pytest.approx(paper_gflops, rel=0.03)


def test_flops_backbone_t_224(get_flops):
    """4.5G (the paper) within 3%; the SSM is counted, scan and fusion."""
    result = get_flops.main(['--arch', 't', '--shape', '224', '224'])
    assert_close_to_paper(result, 4.5)
    assert result['params'] == 26_236_758
    ssm = {op for op in result['by_operator'] if op not in
           ('linear', 'conv', 'layer_norm', 'batch_norm')}
    assert ssm, 'the structure-aware SSM was not counted'
    assert not any('StructureAwareSSM' in op for op in result['uncounted'])


def test_flops_classifier_config_224(get_flops):
    result = get_flops.main([CLS_T, '--shape', '224', '224'])
    assert_close_to_paper(result, 4.5)
    assert result['params'] == 26_748_862


def test_flops_maskrcnn_t_1280x800(get_flops):
    result = get_flops.main([DET_T, '--shape', '1280', '800'])
    assert_close_to_paper(result, 261)
    assert round(result['params'] / 1e6) == 46


def test_flops_upernet_t_2048x512(get_flops):
    result = get_flops.main([SEG_T, '--shape', '2048', '512'])
    assert_close_to_paper(result, 936)
    assert round(result['params'] / 1e6) == 57


def test_flops_backbone_only_of_a_config(get_flops):
    result = get_flops.main([DET_T, '--backbone-only', '--shape', '224', '224'])
    assert_close_to_paper(result, 4.5)


def test_analysis_tools_name_a_missing_config(tools):
    benchmark = tools('benchmark', ANALYSIS)
    with pytest.raises(benchmark.InputError, match="config file not found: 'nope.py'"):
        benchmark.main(['nope.py'])


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


def test_backbone_comparison_at_tiny_sizes(tools, capsys):
    """tools/analysis/compare_backbones.py end to end at 64x64, channels-last,
    detection included: the three models in every row, finite ratios, the
    settings printed. No timing is asserted. Slow-ish: it builds three
    backbones and three Mask R-CNNs."""
    compare = tools('compare_backbones', ANALYSIS)
    result = compare.main(['--shape', '64', '64', '--batch-sizes', '1', '2',
                           '--repeats', '2', '--warmup', '1', '--channels-last',
                           '--detection', '--detection-shape', '64', '64'])
    labels = [row['label'] for row in result['rows']]
    assert labels == ['backbone forward, batch 1, 64x64', 'backbone forward, batch 2, 64x64',
                      'backbone forward + backward, batch 2, 64x64',
                      'Mask R-CNN test step, batch 1, 64x64']
    models = {'Spatial-Mamba-T', 'Swin-T', 'ConvNeXt-T'}
    for row in result['rows']:
        assert set(row['seconds']) == models
        assert set(row['ratios']) == models - {'Spatial-Mamba-T'}
        assert all(math.isfinite(ratio) and ratio > 0 for ratio in row['ratios'].values())
    printed = capsys.readouterr().out
    assert 'threads: 1 intra-op' in printed and 'channels-last: True' in printed
    table = [line for line in printed.splitlines() if line.startswith('| ')]
    assert len(table) == 1 + len(labels)
    assert all(name in table[0] for name in models)


def test_backbone_comparison_rejects_bad_arguments(tools):
    compare = tools('compare_backbones', ANALYSIS)
    for argv in (['--repeats', '0'], ['--batch-sizes', '0'], ['--shape', '64']):
        with pytest.raises(SystemExit):
            compare.main(argv)
