# Demo: Mask R-CNN + FPN over Spatial-Mamba-T, trained from scratch on a CPU in
# minutes on the synthetic shapes of mmspatial.datasets.synthetic (COCO format,
# 4 classes, 256x256 images). `python tools/demo.py` generates the data and
# runs this config. It inherits the real COCO config: the model and optimizer
# are the paper's; only the data, the image size, the schedule (iterations,
# lr, warm-up, decay) and the batch size change, plus init_cfg=None (no
# ImageNet checkpoint offline), num_classes for the 4 shapes and the RoI
# budgets per image (below). What it reaches: the README's demo table.
_base_ = ['../maskrcnn_spatialmamba_t.py']

data_root = 'data/synthetic/coco/'
classes = ('circle', 'triangle', 'square', 'star')
metainfo = dict(
    classes=classes,
    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 200, 0)])
image_size = (256, 256)
max_iters = 200
warmup_iters = 20
batch_size = 2
lr = 6e-4  # from scratch and short: higher than the fine-tuning 1e-4

# The per-image RoI budgets are sized for the data: a synthetic scene holds at
# most 4 objects where a COCO image holds up to 100, and on a CPU the RoI
# heads, not the backbone, dominate a step (RoIAlign and the mask head run per
# RoI). 128 sampled RoIs per image (at most 32 positives, instead of 512 and
# 128), 300 proposals and 20 detections per image at test time (instead of
# 1000 and 100; COCO's AP counts at most 100).
model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=len(classes)),
        mask_head=dict(num_classes=len(classes))),
    train_cfg=dict(rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(max_per_img=300), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
# Loading is cheap next to a CPU training step: no worker processes.
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=None)
test_evaluator = val_evaluator

train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.01 * lr, by_epoch=False,
         begin=warmup_iters, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
# checkpoints carry the random states: a resumed run repeats the original
custom_hooks = [dict(type='RandomStateHook')]
