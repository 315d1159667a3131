"""tools/deployment/export_onnx.py: the classifier, the segmentor and the
detector's backbone + FPN as ONNX (one file for any size, or a fixed-shape
one), run with onnxruntime against PyTorch."""
import os.path as osp
import runpy

import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmspatial.deploy import (build_exportable, check_shapes,  # noqa: E402
                              load_export_config)
from mmspatial.deploy.exportable import AveragingAdaptivePool2d  # noqa: E402

from ..tools.helpers import REPO_ROOT, SMALL_ARCH, TOOLS, dump  # noqa: E402
from .conftest import build_model, save_checkpoint, small_config  # noqa: E402

TOLERANCE = 1e-4  # of the largest value of PyTorch's output


@pytest.fixture(scope='module')
def export_tool():
    return runpy.run_path(osp.join(TOOLS, 'deployment', 'export_onnx.py'))['main']


def run_onnx(path, inputs):
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['images']
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {'images': inputs.numpy()})))


def assert_close_to(onnx_out, torch_out):
    torch_out = torch_out.detach()
    assert tuple(onnx_out.shape) == tuple(torch_out.shape)
    scale = torch_out.abs().max().item()
    assert scale > 0
    error = (torch.from_numpy(onnx_out) - torch_out).abs().max().item() / scale
    assert error <= TOLERANCE, error


def images(height, width, batch=1, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


def assert_matches_model(scope, cfg, model, outputs, inputs):
    """onnxruntime's ``outputs`` equal those of the task ``model`` on ``inputs``."""
    batch, _, height, width = inputs.shape
    with torch.no_grad():
        if scope == 'mmpretrain':
            assert_close_to(outputs['logits'], model(inputs, mode='tensor'))
        elif scope == 'mmseg':
            metas = [dict(img_shape=(height, width))] * batch
            scores = model.encode_decode(inputs, metas)
            assert scores.shape == (batch, len(cfg.classes), height, width)
            assert_close_to(outputs['seg_scores'], scores)
        else:
            features = model.extract_feat(inputs)
            assert list(outputs) == [f'feat{i}' for i in range(len(features))] and \
                len(features) == 5
            for name, feature in zip(outputs, features):
                assert_close_to(outputs[name], feature)


# (scope, export H and W, batch): odd sizes, not multiples of 32
CASES = [('mmpretrain', (67, 45), 2), ('mmseg', (71, 64), 1), ('mmdet', (96, 77), 1)]


@pytest.mark.parametrize('scope,shape,batch', CASES, ids=[c[0] for c in CASES])
def test_export_matches_pytorch(scope, shape, batch, small_models, export_tool, tmp_path):
    """A fixed-shape file (``--shape``) holds the checkpoint's model:
    onnxruntime equals the PyTorch model (built here, not by the tool) on new
    images, within 1e-4."""
    config, cfg, model, checkpoint = small_models[scope]
    out = str(tmp_path / f'{scope}.onnx')
    checked = export_tool([config, checkpoint, '--shape', *map(str, shape), '--out', out,
                           '--batch-size', str(batch)])
    assert list(checked) == [shape] and max(checked[shape].values()) <= TOLERANCE
    assert_matches_model(scope, cfg, model, run_onnx(out, images(*shape, batch)),
                         images(*shape, batch))
    with pytest.raises(Exception, match='(?i)dimension|shape'):
        run_onnx(out, images(shape[0] + 32, shape[1], batch))


# (scope, traced H and W, sizes the test adds to the tool's three: another
# batch, sizes that are not multiples of 32 where the task takes them)
DYNAMIC_CASES = [('mmpretrain', (64, 64), [(2, 45, 67)]),
                 ('mmseg', (64, 64), [(2, 71, 33)]),
                 ('mmdet', (64, 64), [(2, 32, 128)])]


@pytest.mark.parametrize('scope,shape,extra', DYNAMIC_CASES,
                         ids=[c[0] for c in DYNAMIC_CASES])
def test_dynamic_export_matches_pytorch(scope, shape, extra, small_models, export_tool,
                                        tmp_path):
    """Without ``--shape`` one file serves every size: the tool's check passes
    at the traced size, a larger and a non-square one, and onnxruntime equals
    the PyTorch model at another batch size and odd sizes too."""
    config, cfg, model, checkpoint = small_models[scope]
    out = str(tmp_path / f'{scope}.onnx')
    checked = export_tool([config, checkpoint, '--trace-shape', *map(str, shape),
                           '--out', out])
    divisor = 32 if scope == 'mmdet' else 1
    assert_metadata(out, scope, cfg, checkpoint, divisor)
    assert list(checked) == check_shapes(shape, divisor)
    larger, other = list(checked)[1:]
    assert min(larger) > max(shape) and other[0] != other[1]
    assert all(h % divisor == 0 and w % divisor == 0 for h, w in checked)
    assert all(max(errors.values()) <= TOLERANCE for errors in checked.values())
    for batch, height, width in extra:
        inputs = images(height, width, batch)
        assert_matches_model(scope, cfg, model, run_onnx(out, inputs), inputs)


def assert_metadata(path, scope, cfg, checkpoint, divisor):
    """The file names the preprocessing the caller does (pad divisor included),
    takes named sizes, and holds none of the PyTorch backend's custom ops."""
    import onnx
    model = onnx.load(path)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata['task'] == scope
    preprocessor = cfg.model.get('data_preprocessor') or cfg.data_preprocessor
    assert metadata['mean'] == str(list(preprocessor.mean))
    assert metadata['checkpoint'] == osp.basename(checkpoint)
    assert metadata['pad_size_divisor'] == str(divisor)
    assert metadata['input_shape'] == 'batch,3,height,width'
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ['batch', 3, 'height', 'width']
    ops = {node.op_type for node in model.graph.node}
    assert {'Conv', 'Exp', 'Softplus', 'Loop'} <= ops and not any(
        name in op for name in ('mmspatial', 'PythonOp', 'ATen') for op in ops)


def onnx_nodes(path):
    import onnx

    from mmspatial.deploy.benchmark import count_nodes
    return count_nodes(onnx.load(path).graph)


def test_graph_does_not_grow_with_the_image(small_models, export_tool, tmp_path):
    """The same number of nodes whatever size a file is traced at, dynamic or
    fixed: the scan is a loop in the graph, not unrolled per pixel."""
    config = small_models['mmdet'][0]
    for flag in ('--trace-shape', '--shape'):
        counts = []
        for shape in ('64', '64'), ('128', '96'):
            out = str(tmp_path / f'{flag}{"x".join(shape)}.onnx')
            export_tool([config, flag, *shape, '--out', out, '--no-check'])
            counts.append(onnx_nodes(out))
        assert counts[0] == counts[1], (flag, counts)


# nodes of Spatial-Mamba-T Mask R-CNN's backbone + FPN unrolled at 800x1344
UNROLLED_DETECTOR_NODES = 36437


def test_detector_graph_is_compact(export_tool, tmp_path):
    """Spatial-Mamba-T Mask R-CNN's backbone + FPN in at most a fifth of the
    nodes the unrolled scan took at 800x1344 (the count does not depend on
    the size, see above)."""
    config = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_spatialmamba_t.py')
    out = str(tmp_path / 'maskrcnn_t.onnx')
    export_tool([config, '--trace-shape', '64', '64', '--out', out, '--no-check'])
    assert onnx_nodes(out) <= UNROLLED_DETECTOR_NODES / 5


POOL_SIZES = [(16, 16), (7, 5), (1, 3), (2, 9), (13, 31), (64, 97)]
EXACT = dict(rtol=1e-6, atol=1e-6)  # float32 sums of N(0, 1) values in another order


@pytest.mark.parametrize('cells', [2, 3, 6, (4, None), (None, 5)])
def test_averaging_pool_is_adaptive_pool(cells):
    """UperNet's pyramid pooling as exported equals PyTorch's at any size."""
    for size in POOL_SIZES:
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(AveragingAdaptivePool2d(cells)(x),
                                   torch.nn.AdaptiveAvgPool2d(cells)(x), **EXACT)


def test_exported_pool_is_adaptive_pool_at_any_size():
    """One exported file of the pooling (traced at 16x16) equals PyTorch's
    adaptive pooling at sizes that are not multiples of the cells."""
    import io

    import onnxruntime as ort
    pool = torch.nn.Sequential(AveragingAdaptivePool2d((3, 6)))
    buffer = io.BytesIO()
    torch.onnx.export(pool, (torch.randn(1, 2, 16, 16),), buffer, dynamo=False,
                      opset_version=17, input_names=['x'],
                      dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}})
    session = ort.InferenceSession(buffer.getvalue(), providers=['CPUExecutionProvider'])
    for size in POOL_SIZES:
        x = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(1))
        got = torch.from_numpy(session.run(None, {'x': x.numpy()})[0])
        torch.testing.assert_close(got, torch.nn.AdaptiveAvgPool2d((3, 6))(x), **EXACT)


def test_config_without_model(tmp_path, export_tool):
    config = tmp_path / 'no_model.py'
    config.write_text("default_scope = 'mmdet'\n")
    with pytest.raises(ValueError, match='defines no model'):
        export_tool([str(config), '--shape', '64', '64', '--out', str(tmp_path / 'x.onnx')])
    with pytest.raises(FileNotFoundError, match='config file not found'):
        load_export_config(str(tmp_path / 'missing.py'))


def test_checkpoint_of_another_arch(small_models, tmp_path, export_tool):
    config = small_models['mmdet'][0]
    other = load_export_config(config)
    other.model.backbone.arch = dict(SMALL_ARCH, depths=[1, 1, 2, 1])
    other_path = dump(other, tmp_path / 'other.py')
    checkpoint = save_checkpoint(build_model(load_export_config(other_path)),
                                 tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='another arch'):
        export_tool([config, checkpoint, '--shape', '64', '64',
                     '--out', str(tmp_path / 'x.onnx')])


def test_checkpoint_of_another_task(small_models, tmp_path):
    """A classifier's checkpoint for a detector: the task named, refused."""
    _, cfg, _, _ = small_models['mmdet']
    classifier_checkpoint = small_models['mmpretrain'][3]
    with pytest.raises(ValueError, match=r'it is a classification checkpoint \(it holds '
                       r'head\.\* weights\)'):
        build_exportable(cfg, classifier_checkpoint)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        build_exportable(cfg, str(tmp_path / 'missing.pth'))


def test_bad_shape(small_models, export_tool, tmp_path):
    config = small_models['mmpretrain'][0]
    for flag in ('--shape', '--trace-shape'):
        with pytest.raises(ValueError, match='at least 32x32'):
            export_tool([config, flag, '16', '64', '--out', str(tmp_path / 'x.onnx')])


def test_benchmark_measures_both_forms(small_models, export_tool):
    """``--benchmark``: a row for PyTorch and one per (form, optimisation)."""
    config = small_models['mmpretrain'][0]
    rows = export_tool([config, '--benchmark', '--shape', '64', '64', '--rounds', '1',
                        '--threads', '1'])
    assert [(row['form'], row.get('optimization')) for row in rows] == [
        ('PyTorch eager', None), ('fixed', 'all'), ('fixed', 'basic'),
        ('dynamic', 'all'), ('dynamic', 'basic')]
    assert all(row['latency_s'] > 0 and row['vs_eager'] > 0 for row in rows)
    assert rows[1]['nodes'] == rows[2]['nodes'] and rows[3]['nodes'] > 0


def test_build_leaves_the_callers_scope(small_models):
    """The model builds in its config's scope; the caller's default scope (an
    inferencer of another task, say) is the same afterwards."""
    from mmengine.registry import DefaultScope
    _, cfg, _, _ = small_models['mmseg']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        exported = build_exportable(cfg)
        assert DefaultScope.get_current_instance().scope_name == 'mmpretrain'
    assert type(exported.model).__name__ == 'EncoderDecoder'
