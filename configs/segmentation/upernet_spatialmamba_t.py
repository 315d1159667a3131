# UperNet with a Spatial-Mamba-T backbone on ADE20K, 512x512 crops, 160k
# iterations.
#
# Only the backbone (and the heads' input widths) differ from mmseg's Swin-T
# UperNet config, whose recipe the paper's reference inherits unchanged: data,
# schedule (warm-up, then poly decay), batch (8 GPUs x 2), optimizer (AdamW
# lr 6e-5 wd 0.01), SyncBN heads with an auxiliary FCN head on stage 3, and the
# multi-scale + flip test-time augmentation (`tools/test.py --tta`) come from
# the base. Its paramwise_cfg (Swin's custom_keys) is kept on purpose: the
# published numbers were obtained with it; ../_base_/spatialmamba_nodecay.py
# says what it leaves decayed. SyncBN turns into BN under the Runner when it is
# not distributed; to build the model any other way in a single process, pass
#   --cfg-options model.decode_head.norm_cfg.type=BN \
#                 model.auxiliary_head.norm_cfg.type=BN
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',  # noqa: E501
    '../_base_/crash_safe_checkpoint.py',
]
custom_imports = dict(imports=['mmspatial'], allow_failed_imports=False)
default_hooks = dict(checkpoint=_base_.crash_safe_checkpoint)

# ImageNet-1K classifier checkpoint of the same arch, loaded as released.
# Override with --cfg-options model.backbone.init_cfg.checkpoint=PATH (or
# model.backbone.init_cfg=None to train from scratch on purpose); evaluate a
# released UperNet checkpoint with tools/test.py CONFIG CHECKPOINT.
pretrained = 'checkpoints/spatialmamba_t_in1k.pth'
# The backbone's own defaults are the paper's: all four stages out, stochastic
# depth from its arch (0.2 for T, 0.3 for S, 0.5 for B), no activation
# checkpointing.
model = dict(
    backbone=dict(
        _delete_=True,
        type='SpatialMamba',
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

# Not in mmseg's base: the batch the lr was tuned for (8 GPUs x 2 images), for
# runs that enable the Runner's lr scaling.
auto_scale_lr = dict(enable=False, base_batch_size=16)
