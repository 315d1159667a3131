# Mask R-CNN + FPN, Spatial-Mamba-S, COCO 3x multi-scale: the T 3x config with
# the small arch.
_base_ = ['./maskrcnn_spatialmamba_t_3x.py']

pretrained = 'checkpoints/spatialmamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
