# Demo: UperNet over Spatial-Mamba-T, trained from scratch on a CPU in minutes
# on the synthetic shapes of mmspatial.datasets.synthetic (mmseg layout, 4
# shapes + background). `python tools/demo.py --task segmentation` generates
# the data and runs this config. It inherits the real ADE20K config: the model
# and optimizer are the paper's; only the data, the image size, the schedule
# (iterations, lr, warm-up) and the batch size change, plus BN instead of
# SyncBN (one CPU process), init_cfg=None (no ImageNet checkpoint offline) and
# num_classes. What it reaches: the README's demo table.
_base_ = ['../upernet_spatialmamba_t.py']

data_root = 'data/synthetic/seg/'
classes = ('background', 'circle', 'triangle', 'square', 'star')
metainfo = dict(
    classes=classes,
    palette=[(0, 0, 0), (220, 20, 60), (0, 130, 200), (60, 180, 75),
             (255, 200, 0)])
image_size = (128, 128)  # UperNet's 512-channel heads dominate a CPU step
max_iters = 300
warmup_iters = 30
batch_size = 2
lr = 1e-3  # from scratch and short: higher than the fine-tuning 6e-5

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=image_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=len(classes), norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=len(classes), norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
# Loading is cheap next to a CPU training step: no worker processes.
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='BaseSegDataset',
        metainfo=metainfo,
        data_root=data_root,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='BaseSegDataset',
        metainfo=metainfo,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False,
         begin=warmup_iters, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
# checkpoints carry the random states: a resumed run repeats the original
custom_hooks = [dict(type='RandomStateHook')]
# the background class is black: a lighter overlay keeps the image visible
visualizer = dict(alpha=0.5)
