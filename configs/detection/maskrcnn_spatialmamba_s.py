# Mask R-CNN + FPN, Spatial-Mamba-S, COCO 1x: everything as the T config but
# the arch.
_base_ = ['./maskrcnn_spatialmamba_t.py']

pretrained = 'checkpoints/spatialmamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
