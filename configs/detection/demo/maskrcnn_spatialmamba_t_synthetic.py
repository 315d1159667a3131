# Demo: Mask R-CNN + FPN over Spatial-Mamba-T, trained from scratch on a CPU in
# minutes on the synthetic shapes of mmspatial.datasets.synthetic (COCO format,
# 4 classes, 256x256 images). `python tools/demo.py` generates the data and
# runs this config. It inherits the real COCO config: the model and optimizer
# are the paper's; only the data, the image size, the schedule (iterations,
# lr, warm-up, decay) and the batch size change, plus init_cfg=None (no
# ImageNet checkpoint offline), num_classes for the 4 shapes and the RoI
# budgets per image (below). What it reaches: the README's demo table.
_base_ = ['../maskrcnn_spatialmamba_t.py',
          '../../_base_/datasets/synthetic_coco.py']

data_root = _base_.synthetic_coco.data_root
classes = _base_.synthetic_coco.classes
metainfo = _base_.synthetic_coco.metainfo
image_size = _base_.synthetic_coco.image_size
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

train_pipeline = _base_.synthetic_coco.train_pipeline
test_pipeline = _base_.synthetic_coco.test_pipeline
train_dataloader = dict(_base_.synthetic_coco.train_dataloader, batch_size=batch_size)
val_dataloader = _base_.synthetic_coco.val_dataloader
test_dataloader = _base_.synthetic_coco.test_dataloader
val_evaluator = _base_.synthetic_coco.val_evaluator
test_evaluator = _base_.synthetic_coco.test_evaluator

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
