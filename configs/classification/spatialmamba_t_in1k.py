# Spatial-Mamba-T ImageNet-1K classifier for mmpretrain, at 224x224.
#
# Built so that a released ImageNet checkpoint evaluates as it is:
#   python tools/test.py configs/classification/spatialmamba_t_in1k.py CKPT
# (tools/test.py converts the official {'model': ...} keys with
# mmspatial.models.checkpoint; tools/convert_checkpoint.py writes the
# converted file once). The classifier is the reference's: the backbone's
# last-stage output LayerNorm (the reference's final `norm`), global average
# pooling, one Linear (the reference's `head`). Test: short side 256 bicubic,
# centre crop 224. The paper's results: metafile.yml and the README.
#
# Training follows mmpretrain's Swin recipe, which the reference's matches in
# what mmpretrain can express (300 epochs, 1024 images per batch, AdamW lr 1e-3
# wd 0.05, 20 warm-up epochs, cosine, RandAugment, Mixup 0.8 / CutMix 1.0,
# label smoothing 0.1, gradient clipping 5); the reference also trains with
# MESA (self-distillation), which mmpretrain does not have.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/crash_safe_checkpoint.py',
]
custom_imports = dict(imports=['mmspatial'], allow_failed_imports=False)
default_hooks = dict(checkpoint=_base_.crash_safe_checkpoint)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='SpatialMamba', arch='tiny', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        init_cfg=None,  # the classifier's init_cfg below: trunc-normal 0.02
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

# 8 GPUs x 128 images = 1024 images per batch, the batch of the lr above.
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
auto_scale_lr = dict(enable=False, base_batch_size=1024)
