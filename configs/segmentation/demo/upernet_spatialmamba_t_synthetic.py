# Demo: UperNet over Spatial-Mamba-T, trained from scratch on a CPU in minutes
# on the synthetic shapes of mmspatial.datasets.synthetic (mmseg layout, 4
# shapes + background). `python tools/demo.py --task segmentation` generates
# the data and runs this config. It inherits the real ADE20K config: the model
# and optimizer are the paper's; only the data, the image size, the schedule
# (iterations, lr, warm-up) and the batch size change, plus BN instead of
# SyncBN (one CPU process), init_cfg=None (no ImageNet checkpoint offline) and
# num_classes. What it reaches: the README's demo table.
_base_ = ['../upernet_spatialmamba_t.py',
          '../../_base_/datasets/synthetic_seg.py']

data_root = _base_.synthetic_seg.data_root
classes = _base_.synthetic_seg.classes
metainfo = _base_.synthetic_seg.metainfo
# 128x128: UperNet's 512-channel heads dominate a CPU step
image_size = _base_.synthetic_seg.image_size
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

train_pipeline = _base_.synthetic_seg.train_pipeline
test_pipeline = _base_.synthetic_seg.test_pipeline
train_dataloader = dict(_base_.synthetic_seg.train_dataloader, batch_size=batch_size)
val_dataloader = _base_.synthetic_seg.val_dataloader
test_dataloader = _base_.synthetic_seg.test_dataloader
val_evaluator = _base_.synthetic_seg.val_evaluator
test_evaluator = _base_.synthetic_seg.test_evaluator

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
