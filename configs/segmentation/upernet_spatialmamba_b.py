# UperNet, Spatial-Mamba-B, ADE20K 160k: the T config with the base arch
# (96-192-384-768).
_base_ = ['./upernet_spatialmamba_t.py']

pretrained = 'checkpoints/spatialmamba_b_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
