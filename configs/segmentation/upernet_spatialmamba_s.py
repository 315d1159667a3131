# UperNet, Spatial-Mamba-S, ADE20K 160k: the T config with the small arch.
# Target: mIoU 50.6 (ss) / 51.4 (ms), 73M params, 992G FLOPs at 2048x512.
_base_ = ['./upernet_spatialmamba_t.py']

pretrained = 'checkpoints/spatialmamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
