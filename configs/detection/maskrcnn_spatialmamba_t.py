# Mask R-CNN + FPN with a Spatial-Mamba-T backbone on COCO 2017, 1x schedule.
#
# Only the backbone differs from mmdet's Swin-T config, whose recipe the paper's
# reference inherits unchanged: data, schedule (12 epochs), batch (8 GPUs x 2)
# and optimizer (AdamW lr 1e-4 wd 0.05) come from the base. Its paramwise_cfg
# (Swin's custom_keys) is kept on purpose: the published numbers were obtained
# with it; ../_base_/spatialmamba_nodecay.py says what it leaves decayed.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
          '../_base_/crash_safe_checkpoint.py']
custom_imports = dict(imports=['mmspatial'], allow_failed_imports=False)
default_hooks = dict(checkpoint=_base_.crash_safe_checkpoint)

# ImageNet-1K classifier checkpoint of the same arch, loaded as released (its
# classifier head and final norm are dropped, every other key must fit). Put
# the file there, or override with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# (or model.backbone.init_cfg=None to train from scratch on purpose). To
# evaluate or fine-tune a released Mask R-CNN checkpoint use `load_from`.
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
    neck=dict(in_channels=[64, 128, 256, 512]))
