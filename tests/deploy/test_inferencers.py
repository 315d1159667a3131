"""Inference on your own images: mmspatial.apis.build_inferencer gives the task
libraries' inferencers for this project's configs, whose predictions are the
model's own (``test_step`` on the same image, same weights)."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmpretrain')

from mmengine.registry import DefaultScope  # noqa: E402

from mmspatial.apis import build_inferencer  # noqa: E402


@pytest.fixture(scope='module')
def image_path(tmp_path_factory):
    """A 64x64 photo of coloured shapes (a JPEG file)."""
    from mmspatial.datasets import generate_synthetic_coco
    root = tmp_path_factory.mktemp('images')
    generate_synthetic_coco(str(root), num_train=1, num_val=1, image_size=64, seed=3)
    return str(root / 'val' / '000001.jpg')


def model_test_step(cfg, model, image_path):
    """``model.test_step`` on the image, through the config's test pipeline."""
    from mmengine.dataset import Compose, pseudo_collate
    transforms = [t for t in cfg.test_dataloader.dataset.pipeline
                  if t['type'] != 'LoadAnnotations']
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        data = Compose(transforms)(dict(img_path=image_path))
    with torch.no_grad():
        return model.test_step(pseudo_collate([data]))[0]


def assert_same_prediction(scope, got, expected):
    if scope == 'mmdet':
        got, expected = got.pred_instances, expected.pred_instances
        assert len(expected) > 0, 'no detections: the comparison would be empty'
        torch.testing.assert_close(got.bboxes, expected.bboxes)
        torch.testing.assert_close(got.scores, expected.scores)
        assert torch.equal(got.labels, expected.labels)
        assert torch.equal(got.masks, expected.masks)
    elif scope == 'mmseg':
        torch.testing.assert_close(got.seg_logits.data, expected.seg_logits.data)
        assert torch.equal(got.pred_sem_seg.data, expected.pred_sem_seg.data)
        assert got.pred_sem_seg.data.unique().numel() > 1, 'one class only'
    else:
        torch.testing.assert_close(got.pred_score, expected.pred_score)
        assert torch.equal(got.pred_label, expected.pred_label)


def predict(inferencer, inputs, **kwargs):
    """The data sample of one input, whatever the library's return format."""
    result = inferencer(inputs, return_datasamples=True, **kwargs)
    predictions = result['predictions'] if isinstance(result, dict) else result
    return predictions[0] if isinstance(predictions, list) else predictions


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_predictions_are_the_models(scope, small_models, image_path):
    config, cfg, model, checkpoint = small_models[scope]
    torch.manual_seed(1234)  # weights that failed to load would show
    inferencer = build_inferencer(config, checkpoint, device='cpu')
    assert_same_prediction(scope, predict(inferencer, image_path),
                           model_test_step(cfg, model, image_path))
    if scope != 'mmpretrain':  # the classes come from the checkpoint
        assert tuple(inferencer.model.dataset_meta['classes']) == tuple(cfg.classes)


def test_classifier_after_segmentation_inferencer(small_models, image_path):
    """mmseg's inferencer leaves mmengine's default scope at mmseg; mmpretrain's
    then fails to build its pipeline. build_inferencer is not affected, and
    leaves the scope as it found it."""
    from mmpretrain.apis import ImageClassificationInferencer
    from mmseg.apis import MMSegInferencer
    config, cfg, model, checkpoint = small_models['mmpretrain']
    # the outer scope is restored on leaving: the other tests keep theirs
    with DefaultScope.overwrite_default_scope('mmengine'):
        MMSegInferencer(model=small_models['mmseg'][0], device='cpu')
        assert DefaultScope.get_current_instance().scope_name == 'mmseg'
        with pytest.raises(KeyError, match='ResizeEdge is not in the mmseg::transform'):
            ImageClassificationInferencer(model=config, device='cpu')
        inferencer = build_inferencer(config, checkpoint, device='cpu')
        assert DefaultScope.get_current_instance().scope_name == 'mmseg'
    assert_same_prediction('mmpretrain', predict(inferencer, image_path),
                           model_test_step(cfg, model, image_path))


def test_detection_on_arrays_saves_predictions(small_models, image_path, tmp_path):
    """An image array with no_save_pred=False: the predictions are returned and
    written (as preds/0.json), equal to those of the file."""
    import mmcv
    config, _, _, checkpoint = small_models['mmdet']
    inferencer = build_inferencer(config, checkpoint, device='cpu')
    result = inferencer(mmcv.imread(image_path), out_dir=str(tmp_path), no_save_pred=False)
    saved = json.loads((tmp_path / 'preds' / '0.json').read_text())
    assert saved == result['predictions'][0]
    from_file = inferencer(image_path)['predictions'][0]
    assert saved['labels'] == from_file['labels'] and len(saved['labels']) > 0
    assert np.allclose(saved['bboxes'], from_file['bboxes'])


def test_bad_input(small_models, tmp_path):
    with pytest.raises(FileNotFoundError, match='config file not found'):
        build_inferencer(str(tmp_path / 'missing.py'))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        build_inferencer(small_models['mmdet'][0], str(tmp_path / 'missing.pth'))


# ------------------------------------------------------------- weights

def official_classifier(state_dict):
    """The released ImageNet form of an mmpretrain classifier's state dict:
    ``{'model': ...}`` with the reference's keys (final norm ``norm.*``, head
    ``head.*``)."""
    official = {}
    for key, value in state_dict.items():
        key = key.replace('backbone.outnorm3.', 'norm.').replace('head.fc.', 'head.')
        official[key[len('backbone.'):] if key.startswith('backbone.') else key] = value
    return {'model': official}


def assert_weights(inferencer, model):
    loaded = inferencer.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key].cpu(), value), key


def test_released_classifier_loads_its_weights(small_models, image_path, tmp_path):
    """The official {'model': ...} file: converted and loaded, not ignored (the
    predictions would otherwise be those of a random model)."""
    config, cfg, model, _ = small_models['mmpretrain']
    path = tmp_path / 'released.pth'
    torch.save(official_classifier(model.state_dict()), path)
    torch.manual_seed(1234)
    inferencer = build_inferencer(config, path, device='cpu')  # a pathlib.Path
    assert_weights(inferencer, model)
    assert_same_prediction('mmpretrain', predict(inferencer, image_path),
                           model_test_step(cfg, model, image_path))


def segmentor_checkpoint(model, path, edit):
    """The segmentor's weights, changed by ``edit(state_dict)``, saved at ``path``."""
    state_dict = {key: value.clone() for key, value in model.state_dict().items()}
    edit(state_dict)
    torch.save({'state_dict': state_dict, 'meta': {}}, path)
    return str(path)


def ade_head(state_dict):
    for head in ('decode_head', 'auxiliary_head'):
        channels = state_dict[f'{head}.conv_seg.weight'].shape[1]
        state_dict[f'{head}.conv_seg.weight'] = torch.zeros(150, channels, 1, 1)
        state_dict[f'{head}.conv_seg.bias'] = torch.zeros(150)


def nan_head(state_dict):
    state_dict['decode_head.conv_seg.bias'][1] = float('nan')


def test_checkpoints_that_do_not_fit_are_refused(small_models, tmp_path):
    """Another task, a head for another number of classes, NaN weights: one
    InputError whose first line names the checkpoint, the config, the problem."""
    from mmspatial.errors import InputError
    seg_config, _, segmentor, _ = small_models['mmseg']
    det_config, _, _, det_checkpoint = small_models['mmdet']
    released = tmp_path / 'released.pth'
    torch.save(official_classifier(small_models['mmpretrain'][2].state_dict()), released)
    cases = [
        (seg_config, det_checkpoint, "segmentor (EncoderDecoder): it is a detection "
                                     "checkpoint (it holds rpn_head.*, roi_head.* weights)"),
        (det_config, small_models['mmseg'][3], "detector (MaskRCNN): it is a segmentation "
                                               "checkpoint (it holds decode_head.*"),
        (det_config, str(released), "detector (MaskRCNN): it is a released ImageNet "
                                    "classifier"),
        (seg_config, segmentor_checkpoint(segmentor, tmp_path / 'ade.pth', ade_head),
         'a head for another number of classes?'),
        (seg_config, segmentor_checkpoint(segmentor, tmp_path / 'nan.pth', nan_head),
         '1 tensor with NaN or Inf values: decode_head.conv_seg.bias (1 of 5)'),
    ]
    for config, checkpoint, problem in cases:
        with pytest.raises(InputError) as error:
            build_inferencer(config, checkpoint, device='cpu')
        [first] = str(error.value).splitlines()  # one line
        assert first.startswith(f"checkpoint '{checkpoint}' (for {config}) does not fit "
                                "the config's "), first
        assert problem in first, first


def test_partial_loading_on_purpose(small_models, tmp_path, monkeypatch):
    """With MMSPATIAL_ALLOW_PARTIAL_LOAD=1 the tensors that fit load, the
    others keep their initialisation."""
    from mmspatial.models.whole_model_check import ALLOW_PARTIAL_LOAD_ENV
    config, _, segmentor, _ = small_models['mmseg']
    checkpoint = segmentor_checkpoint(segmentor, tmp_path / 'ade.pth', ade_head)
    monkeypatch.setenv(ALLOW_PARTIAL_LOAD_ENV, '1')
    loaded = build_inferencer(config, checkpoint, device='cpu').model.state_dict()
    for key, value in segmentor.state_dict().items():
        assert torch.equal(loaded[key], value) == ('conv_seg' not in key), key


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_classes_from_the_config_without_dataset_meta(scope, small_models, image_path,
                                                      tmp_path):
    """A checkpoint without ``meta.dataset_meta``: the classes and palette are
    the config's test dataset's (the demo configs' shapes), not Cityscapes' 19
    or COCO's 80, on the model and in the drawn predictions."""
    from .conftest import save_checkpoint
    config, cfg, model, _ = small_models[scope]
    checkpoint = save_checkpoint(model, tmp_path / f'{scope}_no_meta.pth')
    inferencer = build_inferencer(config, checkpoint, device='cpu')
    metainfo = cfg.test_dataloader.dataset.metainfo
    expected = dict(classes=list(metainfo.classes),
                    palette=[list(colour) for colour in metainfo.palette])
    assert len(expected['classes']) == (5 if scope == 'mmseg' else 4)

    def as_lists(meta):
        return dict(classes=list(meta['classes']),
                    palette=[list(colour) for colour in meta['palette']])
    assert as_lists(inferencer.model.dataset_meta) == expected
    inferencer(image_path, return_vis=True)
    assert as_lists(inferencer.visualizer.dataset_meta) == expected


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_image_demo_draws_each_tasks_prediction(scope, small_models, image_path, tmp_path,
                                                capsys):
    """tools/image_demo.py IMAGE CONFIG CHECKPOINT --out-dir DIR, for all three
    tasks: the drawing lands under DIR/vis and one line sums the prediction up
    (the classification inferencer takes ``out_dir`` like the other two)."""
    import runpy

    from ..tools.helpers import TOOLS
    config, _, _, checkpoint = small_models[scope]
    demo = runpy.run_path(f'{TOOLS}/image_demo.py')
    out_dir = tmp_path / 'outputs'
    demo['main']([image_path, config, checkpoint, '--out-dir', str(out_dir),
                  '--device', 'cpu', '--score-thr', '0.0'])
    drawn = list((out_dir / 'vis').iterdir())
    assert len(drawn) == 1 and drawn[0].stat().st_size > 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    expected = {'mmdet': 'detections scoring >= 0.0', 'mmseg': '64 x 64 label map',
                'mmpretrain': 'score '}[scope]
    assert f'{image_path}: ' in line and expected in line
