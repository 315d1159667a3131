"""tools/deployment/export_onnx.py: the classifier, the segmentor and the
detector's backbone + FPN as ONNX, run with onnxruntime against PyTorch."""
import os.path as osp
import runpy

import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmspatial.deploy import build_exportable, load_export_config  # noqa: E402
from mmspatial.deploy.exportable import AveragingAdaptivePool2d  # noqa: E402

from ..tools.helpers import SMALL_ARCH, TOOLS, dump  # noqa: E402
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


# (scope, export H and W, batch): odd sizes, not multiples of 32
CASES = [('mmpretrain', (67, 45), 2), ('mmseg', (71, 64), 1), ('mmdet', (96, 77), 1)]


@pytest.mark.parametrize('scope,shape,batch', CASES, ids=[c[0] for c in CASES])
def test_export_matches_pytorch(scope, shape, batch, small_models, export_tool, tmp_path):
    """The file holds the checkpoint's model: onnxruntime equals the PyTorch
    model (built here, not by the tool) on new images, within 1e-4."""
    config, cfg, model, checkpoint = small_models[scope]
    out = str(tmp_path / f'{scope}.onnx')
    errors = export_tool([config, checkpoint, '--shape', *map(str, shape), '--out', out,
                          '--batch-size', str(batch)])
    assert max(errors.values()) <= TOLERANCE
    inputs = images(*shape, batch)
    outputs = run_onnx(out, inputs)
    with torch.no_grad():
        if scope == 'mmpretrain':
            assert_close_to(outputs['logits'], model(inputs, mode='tensor'))
        elif scope == 'mmseg':
            metas = [dict(img_shape=shape)] * batch
            scores = model.encode_decode(inputs, metas)
            assert scores.shape == (batch, len(cfg.classes), *shape)
            assert_close_to(outputs['seg_scores'], scores)
        else:
            features = model.extract_feat(inputs)
            assert list(outputs) == [f'feat{i}' for i in range(len(features))] and \
                len(features) == 5
            for name, feature in zip(outputs, features):
                assert_close_to(outputs[name], feature)


@pytest.mark.parametrize('cells', [2, 3, 6, (4, None)])
@pytest.mark.parametrize('size', [(16, 16), (7, 5), (1, 3), (2, 9)])
def test_averaging_pool_is_adaptive_pool(size, cells):
    """UperNet's pyramid pooling as exported equals PyTorch's at any size."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(AveragingAdaptivePool2d(cells)(x),
                               torch.nn.AdaptiveAvgPool2d(cells)(x))


def test_metadata_names_the_preprocessing(small_models, export_tool, tmp_path):
    import onnx
    config, cfg, _, checkpoint = small_models['mmdet']
    out = str(tmp_path / 'det.onnx')
    export_tool([config, checkpoint, '--shape', '64', '64', '--out', out, '--no-check'])
    metadata = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert metadata['task'] == 'mmdet'
    assert metadata['mean'] == str(list(cfg.model.data_preprocessor.mean))
    assert metadata['checkpoint'] == osp.basename(checkpoint)
    # no trace of the PyTorch backend's custom ops in the graph
    ops = {node.op_type for node in onnx.load(out).graph.node}
    assert {'Conv', 'Exp', 'Softplus', 'Split'} <= ops and not any(
        name in op for name in ('mmspatial', 'PythonOp', 'ATen') for op in ops)


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
    with pytest.raises(ValueError, match='at least 32x32'):
        export_tool([config, '--shape', '16', '64', '--out', str(tmp_path / 'x.onnx')])


def test_build_leaves_the_callers_scope(small_models):
    """The model builds in its config's scope; the caller's default scope (an
    inferencer of another task, say) is the same afterwards."""
    from mmengine.registry import DefaultScope
    _, cfg, _, _ = small_models['mmseg']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        exported = build_exportable(cfg)
        assert DefaultScope.get_current_instance().scope_name == 'mmpretrain'
    assert type(exported.model).__name__ == 'EncoderDecoder'
