"""The synthetic shapes data set: deterministic, valid COCO / mmseg, loadable."""
import filecmp
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from mmspatial.datasets import (SEG_CLASSES, SEG_PALETTE, SHAPE_CLASSES,
                                generate_synthetic_coco, generate_synthetic_seg)

SIZE = 96
NUM_TRAIN, NUM_VAL = 6, 3


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    kwargs = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=SIZE,
                  seed=3)
    generate_synthetic_coco(str(root / 'coco'), **kwargs)
    generate_synthetic_seg(str(root / 'seg'), **kwargs)
    return root


def _load(root, split):
    with open(root / 'coco' / 'annotations' / f'instances_{split}.json') as f:
        return json.load(f)


def _rasterize(polygons, size):
    mask = np.zeros((size, size), np.uint8)
    for polygon in polygons:
        points = np.round(np.array(polygon).reshape(-1, 2) - 0.5)
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    return mask.astype(bool)


def _same_tree(a, b):
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files,
                                           shallow=False)
    return not mismatch and not errors and all(
        _same_tree(osp.join(a, d), osp.join(b, d))
        for d in comparison.common_dirs)


def test_generation_is_deterministic(data, tmp_path):
    kwargs = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=SIZE)
    generate_synthetic_coco(str(tmp_path / 'same' / 'coco'), seed=3, **kwargs)
    generate_synthetic_seg(str(tmp_path / 'same' / 'seg'), seed=3, **kwargs)
    assert _same_tree(str(data), str(tmp_path / 'same'))
    generate_synthetic_coco(str(tmp_path / 'other'), seed=4, **kwargs)
    assert not _same_tree(str(data / 'coco'), str(tmp_path / 'other'))


@pytest.mark.parametrize('split,num', [('train', NUM_TRAIN), ('val', NUM_VAL)])
def test_coco_annotations_are_valid(data, split, num):
    coco = _load(data, split)
    assert [c['name'] for c in coco['categories']] == list(SHAPE_CLASSES)
    assert [c['id'] for c in coco['categories']] == [1, 2, 3, 4]
    assert len(coco['images']) == num
    assert len({a['id'] for a in coco['annotations']}) == len(
        coco['annotations'])
    image_ids = {image['id'] for image in coco['images']}
    for image in coco['images']:
        assert osp.isfile(data / 'coco' / split / image['file_name'])
        assert (image['height'], image['width']) == (SIZE, SIZE)
    per_image = {}
    for ann in coco['annotations']:
        assert ann['image_id'] in image_ids
        assert 1 <= ann['category_id'] <= len(SHAPE_CLASSES)
        assert ann['iscrowd'] == 0
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= SIZE and y + h <= SIZE
        assert 0 < ann['area'] <= w * h
        for polygon in ann['segmentation']:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            points = np.array(polygon).reshape(-1, 2)
            # vertices are pixel centres inside the box
            assert (points >= [x + 0.5, y + 0.5]).all()
            assert (points <= [x + w - 0.5, y + h - 0.5]).all()
        # the polygons' extent is the box (pixel centres: half a pixel inside)
        points = np.concatenate(
            [np.array(p).reshape(-1, 2) for p in ann['segmentation']])
        np.testing.assert_allclose(points.min(0), [x + 0.5, y + 0.5])
        np.testing.assert_allclose(points.max(0), [x + w - 0.5, y + h - 0.5])
        # the polygons cover the visible area (up to their boundary pixels)
        mask = _rasterize(ann['segmentation'], SIZE)
        assert abs(mask.sum() - ann['area']) <= 0.1 * ann['area'] + 4
        per_image.setdefault(ann['image_id'], []).append(mask)
    # visible parts do not overlap: occlusion follows the drawing order
    for masks in per_image.values():
        overlap = np.sum(masks, axis=0) > 1
        assert overlap.sum() <= 0.02 * sum(m.sum() for m in masks)
    assert coco['annotations'], 'no object drawn'


@pytest.mark.parametrize('split', ['train', 'val'])
def test_seg_maps_match_coco_instances(data, split):
    """Same seed, same scenes: the label maps are the instances' classes."""
    coco = _load(data, split)
    img_dir = data / 'seg' / 'img_dir' / split
    ann_dir = data / 'seg' / 'ann_dir' / split
    assert sorted(os.listdir(img_dir)) == sorted(
        image['file_name'] for image in coco['images'])
    for image in coco['images']:
        name = osp.splitext(image['file_name'])[0]
        assert filecmp.cmp(img_dir / image['file_name'],
                           data / 'coco' / split / image['file_name'],
                           shallow=False)
        label = cv2.imread(str(ann_dir / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        assert label.shape == (SIZE, SIZE) and label.dtype == np.uint8
        assert set(np.unique(label)) <= set(range(len(SEG_CLASSES)))
        expected = np.zeros((SIZE, SIZE), np.uint8)
        for ann in coco['annotations']:
            if ann['image_id'] == image['id']:
                expected[_rasterize(ann['segmentation'], SIZE)] = ann[
                    'category_id']
        assert (label == expected).mean() > 0.97


def test_loads_through_mmdet_coco_dataset(data):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = CocoDataset(
            data_root=str(data / 'coco'),
            ann_file='annotations/instances_val.json',
            data_prefix=dict(img='val/'),
            metainfo=dict(classes=SHAPE_CLASSES),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs'),
            ])
        assert len(dataset) == NUM_VAL
        coco = _load(data, 'val')
        for index in range(len(dataset)):
            item = dataset[index]
            assert tuple(item['inputs'].shape) == (3, SIZE, SIZE)
            gt = item['data_samples'].gt_instances
            image_id = item['data_samples'].img_id
            anns = [a for a in coco['annotations']
                    if a['image_id'] == image_id]
            assert len(gt) == len(anns)
            assert gt.labels.tolist() == [a['category_id'] - 1 for a in anns]
            masks = gt.masks.to_ndarray().astype(bool)
            for box, mask, ann in zip(gt.bboxes.numpy(), masks, anns):
                ys, xs = np.nonzero(mask)
                # mmdet boxes are [x1, y1, x2, y2]; the polygons (through
                # boundary pixel centres) rasterise to the box up to a pixel,
                # two at the sharp tips of stars and triangles
                np.testing.assert_allclose(
                    [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box,
                    atol=2.01)
                assert abs(mask.sum() - ann['area']) <= 0.15 * ann['area']


def test_loads_through_mmseg_dataset(data):
    pytest.importorskip('mmseg')
    from mmengine.registry import DefaultScope
    from mmseg.datasets import BaseSegDataset

    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = BaseSegDataset(
            data_root=str(data / 'seg'),
            data_prefix=dict(img_path='img_dir/val',
                             seg_map_path='ann_dir/val'),
            img_suffix='.jpg',
            seg_map_suffix='.png',
            reduce_zero_label=False,
            metainfo=dict(classes=SEG_CLASSES, palette=SEG_PALETTE),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', reduce_zero_label=False),
                dict(type='PackSegInputs'),
            ])
        assert len(dataset) == NUM_VAL
        assert dataset.metainfo['classes'] == SEG_CLASSES
        for index in range(len(dataset)):
            item = dataset[index]
            seg = item['data_samples'].gt_sem_seg.data
            assert tuple(seg.shape) == (1, SIZE, SIZE)
            path = item['data_samples'].seg_map_path
            np.testing.assert_array_equal(
                seg[0].numpy(), cv2.imread(path, cv2.IMREAD_UNCHANGED))
            assert seg.max() > 0  # every scene has at least one shape
