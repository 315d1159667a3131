# The synthetic shapes of mmspatial.datasets.synthetic in COCO format (4
# classes, 256x256 images; `python tools/demo.py` generates them under
# data/synthetic/coco/): the data root, class names, image size, pipelines,
# dataloaders (no worker processes: loading is cheap next to a CPU training
# step; the batch size is the training recipe's) and the COCO box/mask metric.
#
# mmengine allows no key twice among one config's bases, and a config that
# inherits a full COCO config has all of these already, so they are gathered
# under one name. Such a config takes them with
#
#   _base_ = ['../maskrcnn_spatialmamba_t.py',
#             '../../_base_/datasets/synthetic_coco.py']
#   train_dataloader = _base_.synthetic_coco.train_dataloader   (and so on)
#
# which merges them into the inherited COCO settings (the dataset type, the
# samplers and the rest stay).
__data_root = 'data/synthetic/coco/'
__classes = ('circle', 'triangle', 'square', 'star')
__metainfo = dict(
    classes=__classes,
    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 200, 0)])
__image_size = (256, 256)
__train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=__image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
__test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=__image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]


def __dataset(split, pipeline):
    return dict(
        data_root=__data_root,
        metainfo=__metainfo,
        ann_file=f'annotations/instances_{split}.json',
        data_prefix=dict(img=f'{split}/'),
        pipeline=pipeline)


__val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=__dataset('val', __test_pipeline))
__val_evaluator = dict(
    type='CocoMetric',
    ann_file=__data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=None)

synthetic_coco = dict(
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
