# Spatial-Mamba-B ImageNet-1K classifier: the T config with the base arch
# (96-192-384-768).
_base_ = ['./spatialmamba_t_in1k.py']

model = dict(
    backbone=dict(arch='base'),
    head=dict(in_channels=768))
