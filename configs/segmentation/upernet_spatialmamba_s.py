# UperNet, Spatial-Mamba-S, ADE20K 160k: the T config with the small arch.
_base_ = ['./upernet_spatialmamba_t.py']

pretrained = 'checkpoints/spatialmamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
