# Mask R-CNN + FPN, Spatial-Mamba-B, COCO 1x: as the T config with the base
# arch (wider: 96-192-384-768).
_base_ = ['./maskrcnn_spatialmamba_t.py']

pretrained = 'checkpoints/spatialmamba_b_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
