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
