# The synthetic shapes of mmspatial.datasets.synthetic in mmseg's layout (4
# shapes + background, 128x128 images; `python tools/demo.py --task
# segmentation` generates them under data/synthetic/seg/): the data root,
# class names, image size, pipelines, dataloaders (no worker processes: loading
# is cheap next to a CPU training step; the batch size is the training
# recipe's) and the mIoU metric.
#
# mmengine allows no key twice among one config's bases, and a config that
# inherits a full ADE20K config has all of these already, so they are gathered
# under one name. Such a config takes them with
#
#   _base_ = ['../upernet_spatialmamba_t.py',
#             '../../_base_/datasets/synthetic_seg.py']
#   train_dataloader = _base_.synthetic_seg.train_dataloader   (and so on)
#
# The datasets replace the inherited ADE20K ones (`_delete_`); the samplers
# and the rest of the inherited dataloaders stay.
__data_root = 'data/synthetic/seg/'
__classes = ('background', 'circle', 'triangle', 'square', 'star')
__metainfo = dict(
    classes=__classes,
    palette=[(0, 0, 0), (220, 20, 60), (0, 130, 200), (60, 180, 75),
             (255, 200, 0)])
__image_size = (128, 128)
__train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='Resize', scale=__image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
__test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=__image_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]


def __dataset(split, pipeline):
    return dict(
        _delete_=True,
        type='BaseSegDataset',
        metainfo=__metainfo,
        data_root=__data_root,
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        pipeline=pipeline)


__val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=__dataset('val', __test_pipeline))
__val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])

synthetic_seg = dict(
    data_root=__data_root,
    classes=__classes,
    metainfo=__metainfo,
    image_size=__image_size,
    train_pipeline=__train_pipeline,
    test_pipeline=__test_pipeline,
    train_dataloader=dict(
        num_workers=0,
        persistent_workers=False,
        dataset=__dataset('train', __train_pipeline)),
    val_dataloader=__val_dataloader,
    test_dataloader=__val_dataloader,
    val_evaluator=__val_evaluator,
    test_evaluator=__val_evaluator)
