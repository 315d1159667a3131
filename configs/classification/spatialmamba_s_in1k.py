# Spatial-Mamba-S ImageNet-1K classifier: the T config with the small arch.
_base_ = ['./spatialmamba_t_in1k.py']

model = dict(backbone=dict(arch='small'))
